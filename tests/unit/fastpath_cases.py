"""Generated events for the fast path's equivalence tests, and the reference
path's output for them (Decoder -> Stats.add() -> [Verdict.add()] ->
Formatter.lines()).

    /usr/bin/python3 tests/unit/fastpath_cases.py [--check] [--root CHECKOUT]

writes (or, with --check, compares against) tests/unit/data/fastpath_golden.json:
a SHA-256 per tool, mode and --stack-trace of the reference path's event
lines over the generated events. Recorded with the code before the fast path
existed (18cd30b; the reference path is that code), so the test proves the
fast path writes what the tools wrote before, byte for byte, and not only
what today's reference writes. --root: take skbtrace from another checkout
(`git archive 18cd30b` unpacked, to record). The statistics and the verdict
are compared between the two paths directly (their layout is not the
formatters' and changes on its own).

The hook tables are frozen here (the tools' tables as of 18cd30b): a hook
added to a tool changes no recorded digest.

The generator draws from random.Random(seed).getrandbits() only, whose
sequence is the same in every Python 3 version."""
import hashlib
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
ROOT = os.path.dirname(os.path.dirname(HERE))
if "--root" in sys.argv[:-1]:
    ROOT = os.path.abspath(sys.argv[sys.argv.index("--root") + 1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from helpers import FixedClock, make_event, to_bytes  # noqa: E402
from skbtrace.kernel import decoder, event, gso, hooks  # noqa: E402
from skbtrace import detector  # noqa: E402
from skbtrace.kernel import udp_tunnel  # noqa: E402
from skbtrace.output import detector_formatter  # noqa: E402
from skbtrace.output import record  # noqa: E402
from skbtrace.output.formatter import Formatter  # noqa: E402
from skbtrace.live.stats import Stats, WATCHER_EVENTS  # noqa: E402

GOLDEN = os.path.join(HERE, "data", "fastpath_golden.json")
SEED = 20261130
COUNT = 600
IDENTITY = {"host": "node-%a\"\\é", "boot_id": "6f1c4f7e-0000-4000-8000-000000000001"}
TOOLS = ("watcher", "detector")
MODES = ("text", "verbose", "json")


class Draw(object):
    def __init__(self, seed):
        self.r = random.Random(seed)

    def bits(self, n):
        return self.r.getrandbits(n)

    def pick(self, seq):
        return seq[self.r.getrandbits(16) % len(seq)]

    def chance(self, percent):
        return self.r.getrandbits(16) % 100 < percent


WATCHER_HOOKS = [
    "skb_gro_receive_list", "skb_gro_receive", "skb_segment_list", "__pskb_pull_tail",
    "pskb_expand_head", "___pskb_trim", "pskb_carve", "skb_condense", "bpf_skb_pull_data",
    "ip_do_fragment", "ip6_fragment", "__pskb_copy_fclone", "skb_realloc_headroom", "skb_copy",
    "skb_copy_expand", "pskb_extract", "udp4_ufo_fragment", "udp6_ufo_fragment",
    "__udp_gso_segment", "skb_segment", "skb_udp_tunnel_segment"]
DETECTOR_HOOKS = [
    "receive_buf", "napi_gro_receive", "inet_gro_complete", "udp4_gro_complete",
    "udp6_gro_complete", "udp_gro_complete", "iptunnel_handle_offloads", "udp_tunnel_xmit_skb",
    "udp_tunnel6_xmit_skb", "bpf_skb_adjust_room", "bpf_skb_net_grow", "bpf_skb_net_shrink",
    "bpf_skb_change_proto", "skb_udp_tunnel_segment", "__skb_gso_segment", "skb_segment"]


def hook_table(tool):
    names = WATCHER_HOOKS if tool == "watcher" else DETECTOR_HOOKS
    return hooks.table([hooks.Hook(n, hooks.MUTATE, "-") for n in names])


def _event(d, tool, nhooks):
    """One event with every field drawn, biased to the values that select
    branches in the formatters."""
    events = sorted(event.EVENT_NAMES) + [0, 13, 200]
    hook_id = d.pick(list(range(nhooks)) * 4 + [nhooks, 1000, 0xffff])
    ts = d.pick([1000000000, 3723123456000, d.bits(64), d.bits(40)])
    kw = dict(
        ts_ns=ts, skb=d.pick([0, d.bits(64), 0xffff888abc123000]),
        new_skb=d.pick([0, 0, d.bits(64)]), frag_list_before=d.pick([0, 0, d.bits(64)]),
        frag_list_after=d.pick([0, 0, d.bits(64)]), head=d.pick([0, d.bits(64)]),
        ret=d.pick([0, -22, -(1 << 63), (1 << 63) - 1, d.bits(63) - d.bits(62)]),
        aux=d.pick([0, 0x13, 0x800, 0x1ff, 0xdd86, d.bits(64), (1 << 56) | 0x10]),
        pid=d.pick([0, 25, d.bits(32)]), cpu=d.pick([0, 2, 127, d.bits(32)]),
        len=d.pick([0, 1400, d.bits(32)]), data_len_before=d.pick([0, 1400, d.bits(32)]),
        data_len_after=d.pick([0, 1400, d.bits(32)]),
        gso_type_before=d.pick([0, 1, 0x403, 0x801, 0x60000, 0x400, 0xc00, d.bits(32)]),
        gso_type_after=d.pick([0, 1, 0x403, 0x801, 0x60000, 0x400, 0xc00, d.bits(32)]),
        ifindex=d.pick([0, 3, d.bits(32)]), iif=d.pick([0, 3, d.bits(32)]),
        reasons=d.pick([0, 0, 1, 0x21, 0x1ff, 0x200, 0x14, d.bits(32)]),
        frags_bytes=d.pick([0, d.bits(32)]),
        stack_len=d.pick([0, 0, 0, 1, 2, 48, 60, -14, -17, -200, -(1 << 31)]),
        hook_id=hook_id,
        gso_size_before=d.pick([0, 1348, d.bits(16)]), gso_size_after=d.pick([0, 1348, d.bits(16)]),
        gso_segs=d.pick([0, 3, d.bits(16)]),
        protocol=d.pick([0, 0x0800, 0x86dd, d.bits(16)]),
        sport=d.bits(16), dport=d.bits(16), inner_sport=d.bits(16), inner_dport=d.bits(16),
        vnet_hdr_len=d.bits(16), vnet_gso_size=d.bits(16), vnet_csum_start=d.bits(16),
        vnet_csum_offset=d.bits(16),
        event=d.pick(events * 3), severity=d.pick([0, 0, 1, 2, 3]),
        nr_frags_before=d.pick([0, 3, d.bits(8)]), nr_frags_after=d.pick([0, 3, d.bits(8)]),
        flags=d.pick([0, d.bits(8), d.bits(8), event.F_VNET_VALID, event.F_LAST_STALE]),
        family=d.pick([0, 4, 4, 6, 6, 5]), l4proto=d.pick([6, 17, 1, 47, 41, 99]),
        inner_family=d.pick([0, 0, 4, 6, 9]), inner_l4proto=d.pick([6, 17, 58, 4]),
        vnet_flags=d.pick([0, 1, 7, d.bits(8)]),
        vnet_gso_type=d.pick([0, 1, 3, 4, 5, 0x81, 0x85, d.bits(8)]),
        aux2=d.pick([0, 1, d.bits(8)]),
        saddr=[d.bits(8) for _ in range(16)], daddr=[d.bits(8) for _ in range(16)],
        inner_saddr=[d.bits(8) for _ in range(16)],
        inner_daddr=[d.bits(8) for _ in range(16)],
        comm=d.pick([b"ksoftirqd/2", b"", b"iperf3", b"a%db%s\\\"q", b"caf\xc3\xa9",
                     b"bad\xff\xfe", bytes(bytearray(d.bits(8) or 1 for _ in range(15)))]))
    last = d.pick(["none", "none", "self", "other", "unknown"])
    if last == "self":
        kw["last_hook"] = (hook_id + 1) & 0xffff
    elif last == "other":
        kw["last_hook"] = d.bits(16) % nhooks + 1
    elif last == "unknown":
        kw["last_hook"] = d.pick([nhooks + 1, 0xffff])
    if last != "none":
        kw["last_ts_ns"] = d.pick([0, ts, ts, (ts - d.bits(30)) % (1 << 64), d.bits(64)])
    e = make_event(**kw)
    # comm with bytes after its NUL (the kernel's comm is NUL-padded, but
    # the record is read as it is)
    data = to_bytes(e)
    if d.chance(10):
        data = data[:252] + b"\0z%\xff"
    return data


def _stack(d, data):
    """The record as the kernel sends it with --stack-trace: STACK_FRAMES
    addresses after the event, or (rarely) a record cut short."""
    frames = [d.pick([0xffffffff81000010, d.bits(64)]) for _ in range(event.STACK_FRAMES)]
    full = data + b"".join(f.to_bytes(8, "little") for f in frames)
    if d.chance(5):
        return full[:len(data) + 8 * d.pick([0, 1, 5])]
    return full if d.chance(70) else data


def _vary(d, data):
    """The same event but for the fields that change from packet to packet
    (what the JSON path's template cache keys on stays the same)."""
    e = event.SkbEvent.from_buffer_copy(data[:256])
    for name in ("ts_ns", "skb", "new_skb", "frag_list_before", "frag_list_after", "head",
                 "ret", "aux", "last_ts_ns", "pid", "cpu", "len", "data_len_before",
                 "data_len_after", "frags_bytes", "gso_segs", "nr_frags_before",
                 "nr_frags_after"):
        if d.chance(50):
            size = 8 * getattr(type(e), name).size
            value = d.pick([0, d.bits(size)])
            if name == "ret":
                value -= 1 << 63 if value >> 63 else 0
            setattr(e, name, value)
    if d.chance(30):
        e.last_ts_ns = e.ts_ns
    if d.chance(30):
        e.stack_len = d.pick([0, 1, 3, -14, -2])
    return to_bytes(e) + data[256:]


def records(tool, seed=SEED, count=COUNT):
    """count records (bytes) for tool: drawn events, half of them followed by
    variants that differ only in per-packet fields, some with stacks, a few
    short."""
    d = Draw(seed + (0 if tool == "watcher" else 1))
    nhooks = len(hook_table(tool))
    out = []
    while len(out) < count:
        data = _event(d, tool, nhooks)
        if d.chance(3):
            out.append(data[:d.pick([0, 10, 255])])
            continue
        data = _stack(d, data)
        out.append(data)
        while d.chance(50):
            out.append(_vary(d, data))
    return out[:count]


def symbols(addrs):
    return ["sym_%x+0x%x" % (a >> 12 & 0xff, a & 0xfff) for a in addrs]


def formatter(tool, mode, stacks):
    cls = Formatter if tool == "watcher" else detector_formatter.DetectorFormatter
    return cls(FixedClock(), gso.DEFAULT, verbose=mode == "verbose", json_mode=mode == "json",
               tool="skb_frag_list_watcher" if tool == "watcher" else "skb_vxlan_source_detector",
               stacks=stacks)


def stats_for(tool, stacks):
    table = hook_table(tool)
    st = Stats(table, WATCHER_EVENTS if tool == "watcher" else detector.DETECTOR_EVENTS)
    st.tool = tool
    st.stacks = stacks
    return st


def summary(stats, verdict):
    """What the run writes at exit about the events: the statistics in
    both forms, and the detector's verdict."""
    for h in stats.hooks:
        h.symbol = h.name
    kernel = {"SUBMIT_FAIL": [1, 0]}
    out = stats.render(kernel, 0, {}) + [record.dumps(stats.to_dict(kernel, 0, {}))]
    if verdict is not None:
        out += verdict.render() + [json.dumps(verdict.to_dict(), sort_keys=True)]
    return "\n".join(out) + "\n"


def reference(tool, mode, stacks, data_list):
    """[(output or "ValueError: ..."), ...] per record, then the summary,
    through the reference path as the runner took it before the fast path."""
    fmt = formatter(tool, mode, stacks)
    st = stats_for(tool, stacks)
    verdict = udp_tunnel.Verdict() if tool == "detector" else None
    dec = decoder.Decoder(hook_table(tool))
    out = []
    for data in data_list:
        try:
            r = dec.decode(data)
            if stacks:
                r.stack = symbols(r.stack_addrs)
            st.add(r)
            if verdict is not None:
                verdict.add(r)
            out.append("".join(line + "\n" for line in fmt.lines(r)))
        except ValueError as e:
            st.decode_errors += 1
            out.append("ValueError: %s" % e)
    return out, summary(st, verdict)


def fast(tool, mode, stacks, data_list):
    """The same through Formatter.handler() (the runner's fast path)."""
    fmt = formatter(tool, mode, stacks)
    st = stats_for(tool, stacks)
    verdict = udp_tunnel.Verdict() if tool == "detector" else None
    by_id = decoder.Decoder(hook_table(tool)).by_id
    if verdict is not None:
        handle = fmt.handler(by_id, st, symbols if stacks else None, verdict=verdict)
    else:
        handle = fmt.handler(by_id, st, symbols if stacks else None)
    out = []
    for data in data_list:
        try:
            text = handle(data)
            out.append(text.decode("ascii") if isinstance(text, bytes) else text)
        except ValueError as e:
            st.decode_errors += 1
            out.append("ValueError: %s" % e)
    return out, summary(st, verdict)


def digest(outputs):
    h = hashlib.sha256()
    for o in outputs:
        h.update(o.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def configurations():
    return [(t, m, s) for t in TOOLS for m in MODES for s in (False, True)]


def golden():
    """{"tool mode stacks": sha256} of the reference path's event lines,
    with a fixed host and boot id."""
    saved = list(record._identity)
    record._identity[:] = [IDENTITY]
    try:
        data = dict((t, records(t)) for t in TOOLS)
        return dict((key(t, m, s), digest(reference(t, m, s, data[t])[0]))
                    for t, m, s in configurations())
    finally:
        record._identity[:] = saved


def key(tool, mode, stacks):
    return "%s %s %s" % (tool, mode, "stacks" if stacks else "plain")


def main():
    table = golden()
    text = json.dumps({"seed": SEED, "count": COUNT, "sha256": table}, indent=1,
                      sort_keys=True) + "\n"
    if "--check" in sys.argv[1:]:
        with open(GOLDEN) as f:
            same = f.read() == text
        print("same as %s" % GOLDEN if same else "DIFFERS from %s" % GOLDEN)
        return 0 if same else 1
    with open(GOLDEN, "w") as f:
        f.write(text)
    print("wrote %s (skbtrace from %s)" % (GOLDEN, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
