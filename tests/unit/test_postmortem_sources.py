"""skb_postmortem's readers on real inputs (tests/unit/data/postmortem, the
lab's consoles): every event line of both tools' logs, text and JSON, the
flight records, the oopses and the ftrace dumps they printed."""
import collections
import gzip
import json
import os
import re

import pytest

from skbtrace.kernel import flightrec, gso
from skbtrace.postmortem import sources as src
from skbtrace.output.detector_formatter import DetectorFormatter
from skbtrace.output.formatter import Formatter
from skbtrace.postmortem.timeline import _TimeClock, json_record

HERE = os.path.dirname(os.path.abspath(__file__))
PM = os.path.join(HERE, "data", "postmortem")
CONSOLES = os.path.join(HERE, "data", "consoles")


def path(name):
    return os.path.join(PM, name)


def scan(p, index=1):
    inp = src.Input(p, index)
    inp.prepare()
    src.sniff(inp)
    sc = src.Scanner(inp)
    return inp, sc, [o.details() for o in sc.observations()]


def stats_of_text_log(name):
    """The counts the tool printed in its own statistics section."""
    with gzip.open(path(name), "rt") as f:
        text = f.read()
    counts = dict((m.group(1), int(m.group(2))) for m in re.finditer(
        r"^  (\w+)(?: events)?: *(\d+)$", text, re.M))
    lost = int(re.search(r"^Lost events: +(\d+)", text, re.M).group(1))
    return counts, lost


@pytest.mark.parametrize("name,tool", [("6.1-calico-watcher.log.gz", src.WATCHER),
                                       ("6.1-calico-detector.log.gz", src.DETECTOR)])
def test_every_event_of_a_text_log_is_read(name, tool):
    counts, lost = stats_of_text_log(name)
    inp, _sc, obs = scan(path(name))
    by_event = collections.Counter(o.event for o in obs)
    for ev, n in counts.items():
        if ev in src.EVENT_NUMBERS:
            assert by_event.get(ev, 0) == n, ev
    assert set(o.tool for o in obs) == {tool}
    assert inp.lost == {tool: lost}
    assert inp.events == len(obs) and inp.malformed == 0


def test_text_fields_match_what_the_watcher_printed():
    _inp, _sc, obs = scan(path("6.1-calico-watcher.log.gz"))
    clear = [o for o in obs if o.event == "CLEAR"]
    assert [o.function for o in clear] == ["__pskb_pull_tail", "bpf_skb_pull_data"]
    c = clear[0]
    assert c.skb == 0xffff88801e727400 and c.fl_before == 0xffff88801e71e400 and c.fl_after == 0
    assert c.severity == "WARNING" and c.reasons == ("NULL_FRAGLIST_GSO",)
    assert (c.gso_size, c.gso_after, c.length, c.data_len, c.nr_frags) == (1448, 1, 29026, 0, 0)
    assert c.last == ("skb_gro_receive", 588, True)
    assert clear[1].last == ("__pskb_pull_tail", 111, False)
    seg = [o for o in obs if o.function == "skb_segment"]
    assert seg and all(o.in_tnl and o.gso_after == 0x403 and o.gso_names ==
                       "TCPV4|DODGY|UDP_TUNNEL" for o in seg)


def test_detector_text_tunnel_markers_and_origins():
    _inp, _sc, obs = scan(path("6.1-calico-detector.log.gz"))
    added = [o for o in obs if o.tunnel == "added"]
    helper = [o for o in obs if o.event == "BPF_HELPER"]
    assert added == helper and all(o.origin == ("bpf_skb_adjust_room", 0, False, False)
                                   for o in added)
    assert all(o.gso_before == 1 and o.gso_after == 0x403 and o.encap for o in added)
    later = [o for o in obs if o.origin and o.origin[1]]
    assert later and all(o.origin[0] == "bpf_skb_adjust_room" for o in later)
    assert "mode=MAC flags=FIXED_GSO|ENCAP_L3_IPV4|ENCAP_L4_UDP ret=0" in added[0].detail


@pytest.mark.parametrize("name", ["6.1-calico-watcher.json.gz", "6.1-calico-detector.json.gz"])
def test_json_records_become_the_same_observations(name):
    inp, _sc, obs = scan(path(name))
    with gzip.open(path(name), "rt") as f:
        recs = [json.loads(l) for l in f]
    events = [r for r in recs if r["type"] == "event"]
    stats = [r for r in recs if r["type"] == "statistics"][0]
    assert len(obs) == len(events) == stats["total_events"]
    assert inp.lost == {stats["tool"]: stats["lost_total"]}
    assert inp.nodes == {(events[0]["host"], events[0]["boot_id"])}
    for o, r in zip(obs, events):
        assert o.skb == int(r["skb"], 16) and o.function == r["function"]
        assert o.event == r["event"] and o.ts_ns == r["ts_ns"]
        assert o.time_text == r["time"][11:26] and o.node == (r["host"], r["boot_id"])
        assert o.flow == r["flow"] and o.inner_flow == r["inner_flow"]
        assert o.reasons == tuple(r["reasons"])


@pytest.mark.parametrize("name", ["6.1-calico-watcher.json.gz", "6.1-calico-detector.json.gz"])
@pytest.mark.parametrize("verbose", [False, True])
def test_text_rendered_from_real_records_parses_back(name, verbose):
    """The tools' own formatters, fed the recorded events, print text lines
    (default and --verbose) that the text reader turns back into the same
    facts: the text reader covers every format the tools write."""
    _inp, _sc, obs = scan(path(name))
    for o in obs[:400]:
        clock = _TimeClock()
        clock.text[o.ts_ns] = o.time_text
        cls = DetectorFormatter if o.tool == src.DETECTOR else Formatter
        lines = cls(clock, gso.DEFAULT, verbose=verbose, tool=o.tool).lines(
            json_record(o.raw, o.tool))
        back = src.parse_text_line(lines[0])
        assert back is not None, lines[0]
        if verbose:
            src.parse_flow_line(back, lines[1])
            assert (back.flow, back.inner_flow) == (o.flow, o.inner_flow)
        assert (back.tool, back.event, back.function, back.skb, back.cpu) == \
            (o.tool, o.event, o.function, o.skb, o.cpu)
        assert back.time_text == o.time_text and back.severity == o.severity
        assert back.reasons == o.reasons and back.tunnel == (
            o.tunnel if o.tunnel != "added_nested" else back.tunnel)
        assert back.gso_after == o.gso_after
        if o.last:
            assert back.last[0] == o.last[0] and back.last[2] == o.last[2]
        if o.origin and o.tool == src.DETECTOR:
            assert back.origin[0] == o.origin[0]


def test_flight_records_of_the_trace_file():
    inp, sc, obs = scan(path("6.1-calico-trace.txt"))
    assert obs == [] and "flight records" in inp.kinds
    recs = sc.kernel.records()
    with open(path("6.1-calico-trace.txt")) as f:
        direct = list(flightrec.parse(f.read().splitlines()))
    assert [(r.seq, r.ts_ns) for r in recs] == [(r.seq, r.ts_ns) for r in direct]
    done = [r for r in recs if r.complete]
    assert done and all(r.oops is None for r in recs)
    fo = src.flight_observation(done[0], 3)
    assert fo.skb == done[0].int_field("skb") and fo.function == done[0].field("hook")
    assert fo.t is None and fo.ts_ns == done[0].ts_ns


@pytest.mark.parametrize("name,rip,skb_reg", [
    ("6.1-injected-encap.log", "skb_segment+0x24c", "R12"),
    ("5.10-natural-pull-data.log", "__udp_gso_segment+0x4bd", "R14"),
])
def test_oops_and_the_dump_it_printed(name, rip, skb_reg):
    inp, sc, obs = scan(os.path.join(CONSOLES, name))
    assert obs == [] and {"oops", "flight records"} <= inp.kinds
    first = sc.kernel.oopses[0]
    assert first.rip == rip and first.text.startswith("BUG: kernel NULL pointer dereference")
    assert first.release and first.frames and first.dump_lines
    crit = [r for r in sc.kernel.records() if r.severity == "CRITICAL"]
    assert crit and all(r.oops is first for r in crit)
    assert first.registers[skb_reg] == crit[0].int_field("skb")


def test_two_cpus_oopsing_at_once_are_two_oopses():
    _inp, sc, _obs = scan(os.path.join(CONSOLES, "5.10-natural-pull-data.log"))
    assert [o.number for o in sc.kernel.oopses] == [1, 2]
    assert sc.kernel.oopses[1].cpu == 1


def test_console_noise_is_cleaned():
    """SeaBIOS escape codes and CRs of a real serial console."""
    with open(os.path.join(CONSOLES, "6.1-injected-encap.log"), "rb") as f:
        first = f.readline().decode()
    assert "\x1b" in first and "\r" in first
    assert src.clean(first) == "SeaBIOS (version 1.16.2-debian-1.16.2-1)"


def test_a_container_runtime_prefix_is_skipped():
    with gzip.open(path("6.1-calico-watcher.json.gz"), "rt") as f:
        line = f.readline().strip()
    d = src.json_object("2026-11-30T09:22:14.330189Z stdout F " + line)
    assert d == json.loads(line)
    assert src.json_object("no JSON here") is None
    with pytest.raises(ValueError):
        src.json_object(line[:200])


def test_input_errors(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    with pytest.raises(src.InputError, match="empty file"):
        src.Input(str(empty), 1).prepare()
    with pytest.raises(src.InputError, match="cannot read"):
        src.Input(str(tmp_path / "missing"), 1).prepare()
    binary = tmp_path / "core"
    with open(path("6.1-calico-watcher.log.gz"), "rb") as f:
        binary.write_bytes(gzip.decompress(f.read())[:1000] + b"\x00" * 64)
    inp = src.Input(str(binary), 1)
    inp.prepare()
    with pytest.raises(src.InputError, match="binary data"):
        src.sniff(inp)


def test_truncated_gzip_is_one_error(tmp_path):
    with open(path("6.1-calico-detector.log.gz"), "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(data[:len(data) // 2])
    inp = src.Input(str(cut), 1)
    inp.prepare()
    with pytest.raises(src.InputError, match="corrupt or truncated gzip data after line"):
        src.sniff(inp)
        list(src.Scanner(inp).observations())


def test_a_line_over_the_limit_is_skipped_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(src, "MAX_LINE", 4096)
    with gzip.open(path("6.1-calico-watcher.log.gz"), "rb") as f:
        lines = f.read().splitlines(True)[:10]
    p = tmp_path / "long.log"
    # an event line with 50 KB of junk after it: the whole line is dropped,
    # the numbering of the lines after it kept
    p.write_bytes(lines[2].rstrip(b"\n") + b"x" * 50000 + b"\n" + b"".join(lines[3:]))
    inp = src.Input(str(p), 1)
    inp.prepare()
    got = list(src.Scanner(inp).observations())
    assert inp.long_lines == 1 and len(got) == len(lines) - 3
    assert [o.line_no for o in got] == list(range(2, len(lines) - 1))


@pytest.mark.parametrize("name", ["6.1-calico-watcher.log.gz", "6.1-calico-detector.log.gz"])
def test_fast_path_reads_what_the_general_path_reads(name, monkeypatch):
    """One regular expression per line for the shapes the formatters write
    most; the general reader is the reference."""
    with gzip.open(path(name), "rt") as f:
        lines = f.read().splitlines()
    fast = [src.parse_text_line(l) for l in lines]
    monkeypatch.setattr(src, "_fast", lambda obs, tail: False)
    slow = [src.parse_text_line(l) for l in lines]
    fields = [k for k in dir(src.Observation) if not k.startswith("_") and
              not callable(getattr(src.Observation, k))]
    n = 0
    for a, b in zip(fast, slow):
        assert (a is None) == (b is None)
        if a is not None:
            n += 1
            for k in fields:
                if k != "detail":
                    assert getattr(a, k) == getattr(b, k), (k, a.raw)
    assert n > 2900


@pytest.mark.parametrize("prefix", ["Nov 30 09:20:34 lab kernel: ", "[Sun Nov 30 09:20:34 2026] "])
def test_oops_behind_journal_and_dmesg_time_prefixes(prefix):
    """The real console's lines with journalctl -k's and dmesg -T's prefix
    in place of printk's uptime."""
    with open(os.path.join(CONSOLES, "6.1-injected-encap.log"), errors="replace") as f:
        lines = [src.clean(l) for l in f.read().splitlines()]
    kt = src.KernelText(1)
    for n, line in enumerate(lines, 1):
        if re.match(r"\[ *\d+\.\d+\] ", line):
            line = prefix + line.split("] ", 1)[1]
        kt.feed(n, line)
    o = kt.oopses[0]
    assert o.rip == "skb_segment+0x24c" and o.release == "6.1.0-57-amd64"
    assert o.frames[:4] == ["tcp_gso_segment", "inet_gso_segment", "skb_mac_gso_segment",
                            "skb_udp_tunnel_segment"]
    assert all(r.oops is o for r in kt.records())
