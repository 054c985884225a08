"""The runner's fast path (skbtrace/output/fastpath.py) against the reference path
(Decoder -> Stats.add() -> Verdict.add() -> Formatter.lines()), on generated
events of every kind (tests/unit/fastpath_cases.py), for both tools, every
output mode, with and without --stack-trace: the same bytes per event, the
same decode errors, the same statistics and verdict; and against the digests
recorded from the code before the fast path (data/fastpath_golden.json)."""
import ctypes
import io
import json
import os
import random
import time

import pytest

import fastpath_cases as cases
from helpers import FixedClock, make_event, to_bytes
from skbtrace.output import clock as clock_mod, fastpath, record, sink
from skbtrace.kernel import decoder, event, gso, hooks
from skbtrace import detector
from skbtrace.output import detector_formatter
from skbtrace.live import runner
from skbtrace.output.formatter import Formatter
from skbtrace.output.sink import ReaderGone, Sink
from skbtrace.live.stats import Stats, WATCHER_EVENTS


@pytest.fixture
def identity(monkeypatch):
    monkeypatch.setattr(record, "_identity", [cases.IDENTITY])


@pytest.fixture(scope="module")
def data():
    return dict((t, cases.records(t)) for t in cases.TOOLS)


@pytest.fixture(scope="module")
def golden():
    with open(cases.GOLDEN) as f:
        g = json.load(f)
    assert (g["seed"], g["count"]) == (cases.SEED, cases.COUNT)
    return g["sha256"]


def compare(tool, mode, stacks, data_list):
    ref, ref_summary = cases.reference(tool, mode, stacks, data_list)
    got, got_summary = cases.fast(tool, mode, stacks, data_list)
    for i, (r, g) in enumerate(zip(ref, got)):
        assert g == r, "record %d (%s)" % (i, data_list[i][:256].hex())
    assert len(got) == len(ref)
    assert got_summary == ref_summary
    return got


@pytest.mark.parametrize("tool,mode,stacks", cases.configurations())
def test_fast_path_writes_what_the_reference_writes(tool, mode, stacks, data, golden,
                                                    identity):
    got = compare(tool, mode, stacks, data[tool])
    assert cases.digest(got) == golden[cases.key(tool, mode, stacks)]


def test_the_recorded_digests_are_the_reference_paths(golden):
    """The reference path still writes what the code before the fast path
    wrote (if a format changes on purpose: python3 tests/unit/fastpath_cases.py)."""
    assert cases.golden() == golden


def test_the_generated_events_reach_every_branch(data):
    """What the equivalence above is worth: events of every kind, known
    and unknown hooks, own and other origins, flows of every family, stacks,
    short records, and JSON templates reused by packets of one flow."""
    seen = dict((k, set()) for k in ("event", "hook", "last", "family", "stack", "short"))
    for tool in cases.TOOLS:
        n = len(cases.hook_table(tool))
        keys = set()
        for d in data[tool]:
            if len(d) < 256:
                seen["short"].add(len(d))
                continue
            e = event.SkbEvent.from_buffer_copy(d[:256])
            seen["event"].add(e.event)
            seen["hook"].add(e.hook_id < n)
            seen["last"].add("none" if not e.last_hook else "self" if e.last_hook - 1 ==
                             e.hook_id else "known" if e.last_hook <= n else "unknown")
            seen["family"].add(e.family)
            seen["stack"].add((e.stack_len > 0, len(d) > 256))
            keys.add(d[92:112] + d[120:128] + d[130:132] + d[144:160] + d[160:162] +
                     d[164:172] + d[176:256])
        assert len(keys) < 0.7 * len(data[tool])       # templates do get reused
    assert set(event.EVENT_NAMES) < seen["event"] and 0 in seen["event"]
    assert seen["hook"] == {True, False}
    assert seen["last"] == {"none", "self", "known", "unknown"}
    assert seen["family"] >= {0, 4, 6, 5}
    assert seen["stack"] == {(True, True), (True, False), (False, True), (False, False)}
    assert seen["short"] >= {0, 255}


def test_full_caches_start_over(data, monkeypatch, identity):
    monkeypatch.setattr(fastpath, "CACHE_MAX", 3)
    monkeypatch.setattr(fastpath, "TEMPLATES_MAX", 2)
    for tool in cases.TOOLS:
        for mode in cases.MODES:
            compare(tool, mode, True, data[tool][:200])


def test_json_records_are_json(data, identity):
    for tool in cases.TOOLS:
        got, _ = cases.fast(tool, "json", True, data[tool])
        for line in got:
            if not line.startswith("ValueError"):
                d = json.loads(line)
                assert d["host"] == cases.IDENTITY["host"] and line.endswith("}\n")


def test_layout_struct_reads_what_ctypes_reads():
    r = random.Random(7)
    names = [n for n, _ in event.FIELDS]
    full = event.layout_struct(names)
    some = event.layout_struct("skb cpu gso_type_before:reasons flags:aux2 saddr:comm")
    for _ in range(50):
        raw = bytes(bytearray(r.getrandbits(8) for _ in range(256)))
        e = event.SkbEvent.from_buffer_copy(raw)
        for n, v in zip(names, full.unpack(raw)):
            want = getattr(e, n)
            if isinstance(want, ctypes.Array):
                want = bytes(bytearray(want))
            if n == "comm":
                assert v.split(b"\0", 1)[0] == want
            else:
                assert v == want, n
        off = dict((n, getattr(event.SkbEvent, n).offset) for n in names)
        assert some.unpack(raw) == (e.skb, e.cpu, raw[off["gso_type_before"]:off["frags_bytes"]],
                                    raw[off["flags"]:off["pad"]], raw[off["saddr"]:256])
    for bad in ("cpu ts_ns", "no_such_field", "ts_ns cpu:pid"):
        with pytest.raises(ValueError):
            event.layout_struct(bad)


def test_stats_fold_in_first_seen_order():
    st = Stats(hooks.watcher_hooks(), WATCHER_EVENTS)
    st.raw = {(3 | 99 << 16 | 2 << 24): 2, (1 | 1 << 16): 1, (3 | 98 << 16 | 7 << 24): 1}
    d = st.to_dict({}, 0, {})
    assert list(d["events"])[-2:] == ["EVENT99", "EVENT98"]
    assert d["total_events"] == 4 and d["severity"] == {"CRITICAL": 2, "WARNING": 0}
    assert st.by_hook == {3: 3, 1: 1} and st.raw == {}
    assert st.render({}, 0, {})[2] == "Total events:       4"   # folded once, not twice


def test_handler_is_none_where_the_fast_path_does_not_apply():
    by_id = decoder.Decoder(hooks.watcher_hooks()).by_id
    st = Stats(hooks.watcher_hooks(), WATCHER_EVENTS)

    class MyFormatter(Formatter):
        pass

    class MyTool(runner.Tool):
        def make_hooks(self):
            return hooks.watcher_hooks()

        def on_record(self, record):
            pass

    assert MyFormatter(FixedClock(), gso.DEFAULT).handler(by_id, st) is None
    assert Formatter(FixedClock(), gso.DEFAULT).handler(by_id, st) is not None
    assert MyTool(None, None).handler(Formatter(FixedClock(), gso.DEFAULT), by_id, st) is None
    det = detector.Detector(None, None)
    assert det.handler(Formatter(FixedClock(), gso.DEFAULT), by_id, st) is None
    assert det.handler(detector_formatter.DetectorFormatter(FixedClock(), gso.DEFAULT), by_id, st) is not None


# --- the run loop, with the fake bcc: what the tools write ------------------------

def decodable(records):
    """The records the runner prints (the others are decode errors, on
    stderr)."""
    out = []
    for d in records:
        if len(d) < 256:
            continue
        n = min(event.SkbEvent.from_buffer_copy(d[:256]).stack_len, event.STACK_FRAMES)
        if n <= 0 or len(d) >= 256 + 8 * n:
            out.append(d)
    return out


@pytest.mark.parametrize("tool", cases.TOOLS)
@pytest.mark.parametrize("mode", ["text", "verbose", "json"])
def test_the_tools_write_what_the_reference_writes(fake, monkeypatch, tmp_path, identity,
                                                   data, tool, mode):
    """runner.run() with the tools' own hook tables, to a file (-o: written
    through the file under the stream), with and without --stack-trace."""
    table = hooks.watcher_hooks() if tool == "watcher" else hooks.detector_hooks()
    monkeypatch.setattr(cases, "hook_table", lambda _tool: table)
    monkeypatch.setattr(cases, "symbols", lambda addrs: [
        fake.BPF.ksym(None, a).decode() for a in addrs])
    monkeypatch.setattr(runner, "Clock", FixedClock)
    # gso names from the built-in table, as the reference formats them
    monkeypatch.setattr(runner.Tool, "load_btf", lambda self: setattr(self, "gso", gso.DEFAULT))
    fake.BPF.available = [h.name for h in table]
    records = decodable(data[tool])
    if tool == "watcher":
        from skbtrace.watcher import main
        extra = []
    else:
        from skbtrace.detector import main
        extra = ["--no-static"]
    for stacks in (False, True):
        out = tmp_path / ("%s-%s-%d.log" % (tool, mode, stacks))
        fake.BPF.script = [records[:150], records[150:]]
        args = (["--" + mode] if mode != "text" else []) + (
            ["--stack-trace"] if stacks else []) + ["-o", str(out)] + extra
        assert main(args) == 0
        ref, _ = cases.reference(tool, mode, stacks, records)
        head = cases.formatter(tool, mode, stacks).header()
        want = "".join(line + "\n" for line in head) + "".join(ref)
        text = out.read_bytes().decode("utf-8")     # no newline translation: comm has \r
        assert text[:len(want)] == want
        assert ("Total events:       %d" % len(records)) in text[len(want):] or \
            json.loads(text[len(want):])["total_events"] == len(records)


# --- the sink: one write per event ----------------------------------------------

def test_event_lines_wait_for_the_flush_and_keep_their_order(tmp_path):
    p = tmp_path / "out.log"
    s = Sink(str(p))
    assert s._raw is not None
    s.write("header")
    assert p.read_bytes() == b"header\n"
    s.write_text("one\ntwo \xe9\n")
    s.write_ascii(b'{"a": 1}\n')
    assert p.read_bytes() == b"header\n"       # queued until the poll ends
    s.flush()
    assert p.read_bytes() == b'header\none\ntwo \xc3\xa9\n{"a": 1}\n'
    s.write_text("three\n")
    s.write("tail")                             # a line flushes what is queued first
    assert p.read_bytes().endswith(b'{"a": 1}\nthree\ntail\n')
    s.write_text("last\n")
    s.close()
    assert p.read_bytes().endswith(b"tail\nlast\n")


def test_one_write_per_flush_and_a_bound_on_what_waits(tmp_path):
    s = Sink(str(tmp_path / "x"))
    raw = s._raw = _Calls()
    for i in range(100):
        s.write_text("line %d\n" % i)
    assert raw.calls == []
    s.flush()
    assert len(raw.calls) == 1 and raw.calls[0].count(b"\n") == 100
    s.flush()                                   # nothing queued: no system call
    assert len(raw.calls) == 1
    big = "x" * 1023 + "\n"
    for _ in range(sink.FLUSH_BYTES // len(big)):
        s.write_text(big)
    assert len(raw.calls) == 2 and len(raw.calls[1]) == sink.FLUSH_BYTES


def test_write_text_falls_back_to_the_stream(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    s = Sink()
    assert s._raw is None
    s.write_text("a\nb\n")
    s.write_ascii(b"c\n")
    assert buf.getvalue() == "a\nb\nc\n"


class _Calls(object):
    """A FileIO stand-in that keeps each write(2) apart."""

    def __init__(self):
        self.calls = []

    def write(self, data):
        self.calls.append(bytes(data))
        return len(data)


class _Raw(object):
    """A FileIO stand-in that writes at most `step` bytes per call, or
    fails with an errno."""

    def __init__(self, step=3, errno_=None):
        self.step, self.errno_, self.data = step, errno_, b""

    def write(self, data):
        if self.errno_:
            raise OSError(self.errno_, os.strerror(self.errno_))
        self.data += bytes(data[:self.step])
        return min(self.step, len(data))


def test_partial_writes_are_completed(tmp_path):
    s = Sink(str(tmp_path / "x"))
    s._raw = _Raw(step=3)
    s.write_text("a longer line\n")
    s.flush()
    assert s._raw.data == b"a longer line\n"


def test_reader_gone_and_other_errors(tmp_path):
    import errno
    s = Sink(str(tmp_path / "x"))
    s._raw = _Raw(errno_=errno.EPIPE)
    s.write_ascii(b"x\n")
    with pytest.raises(ReaderGone):
        s.flush()
    assert s.gone
    with pytest.raises(ReaderGone):
        s.write_text("y\n")
    s = Sink(str(tmp_path / "y"))
    s._raw = _Raw(errno_=errno.ENOSPC)
    s.write_text("z\n")
    with pytest.raises(OSError):
        s.flush()
    assert not s.gone


def test_reopen_writes_to_the_new_file(tmp_path):
    p = tmp_path / "r.log"
    s = Sink(str(p))
    s.write_text("old\n")
    os.rename(str(p), str(tmp_path / "r.log.1"))
    assert s.reopen() is None
    s.write_ascii(b"new\n")
    s.close()
    assert p.read_text() == "new\n" and (tmp_path / "r.log.1").read_text() == "old\n"


# --- the clock's per-second cache -----------------------------------------------

def test_clock_cache_gives_what_strftime_gives():
    c = clock_mod.Clock()

    def hms(ts):
        t = ts / 1e9 + c.offset
        secs = int(t)
        return time.strftime("%H:%M:%S", time.localtime(secs)) + ".%06d" % int((t - secs) * 1e6)

    def iso(ts):
        t = ts / 1e9 + c.offset
        secs = int(t)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(secs)) + \
            ".%06d" % int((t - secs) * 1e6) + time.strftime("%z", time.localtime(secs))

    r = random.Random(3)
    ts = [10 ** 9 * s + r.getrandbits(30) % 10 ** 9 for s in (5, 5, 6, 5, 86400 * 200, 7)]
    ts += [r.getrandbits(62) for _ in range(100)]
    for t in ts:
        assert (c.hms(t), c.iso(t)) == (hms(t), iso(t))


def test_clock_json_time_is_iso_as_json():
    c = clock_mod.Clock()
    r = random.Random(4)
    for t in [10 ** 9, 10 ** 9 + 1, 2 * 10 ** 9 - 1] + [r.getrandbits(62) for _ in range(200)]:
        assert c.json_time(t) == json.dumps(c.iso(t)).encode("ascii")


@pytest.mark.parametrize("mode", cases.MODES)
def test_with_the_tools_clock(data, monkeypatch, identity, mode):
    """The tools' Clock (local time, its own cache; Clock.json_time() for
    --json) instead of the tests' fixed one."""
    def make_clock():
        c = clock_mod.Clock()
        c.offset = 1764500000.123456
        return c
    monkeypatch.setattr(cases, "FixedClock", make_clock)
    for tool in cases.TOOLS:
        compare(tool, mode, False, data[tool])


def test_perf_callback_copies_the_record():
    """loader.Program.open(): bcc hands the record's address as an int (its
    callback type has c_void_p); anything else goes through string_at()."""
    import fakebcc
    from skbtrace.live import loader
    prog = loader.Program(fakebcc.Module(), "", [])
    prog.bpf = fakebcc.BPF()
    got = []
    prog.open(got.append, 8)
    rec = to_bytes(make_event(event=event.EV_CLEAR)) + b"\x01" * (8 * event.STACK_FRAMES + 24)
    buf = ctypes.create_string_buffer(rec, len(rec))
    for addr in (ctypes.addressof(buf), ctypes.cast(buf, ctypes.c_void_p)):
        for size in (256, 300, len(rec)):
            prog.bpf.cb(0, addr, size)
    full = 256 + 8 * event.STACK_FRAMES
    assert got == [rec[:256], rec[:300], rec[:full]] * 2


def test_a_stream_that_is_not_ascii_keeps_its_encoding(tmp_path):
    p = tmp_path / "utf16.log"
    s = Sink(str(p))
    s.stream.close()
    s.stream = io.open(str(p), "a", encoding="utf-16-le")
    s._bind()
    assert s._raw is None
    s.write_ascii(b"{}\n")
    s.write_text("\xe9\n")
    s.close()
    assert p.read_bytes() == "{}\n\xe9\n".encode("utf-16-le")
