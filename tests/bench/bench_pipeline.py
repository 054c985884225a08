"""User-space cost per event: decode + statistics + format + write, on
hand-built events. Prints figures; asserts nothing (not a timed test).

    /usr/bin/python3 tests/bench/bench_pipeline.py [N] [--rounds R]

Three paths per output mode, run in turns (R rounds of N events each; the
table shows the best round, so a busy machine slows every path alike; the
closing verdict lines on issue 18's native target, text and --json as the
tool runs, the median of the rounds with their spread). Rates are
events per second of the process's CPU time (time.process_time(): user and
system), which another job on the machine disturbs far less than wall time;
--wall for wall-clock time.

- reference: Decoder -> Stats.add() -> Formatter.lines() -> one write per
  line to /dev/null, unflushed: what the tools did before the fast path, and
  what the post-mortem tool still uses;
- fast: the runner's path (Formatter.handler(), skbtrace/output/fastpath.py), the
  event's lines written at once to /dev/null, unflushed: comparable with the
  reference column;
- tool: the fast path as the tools run it, from the address bcc's callback
  gets (loader.Program.open()'s copy of the record) to the real Sink on
  /dev/null, with the real Clock (local time), and the Sink flushed as the
  runner flushes it, once per poll of the event buffers: "tool 1/poll" when
  every poll reads one event (a quiet host: one write(2) per event, the dearest
  case per event), "tool B/poll" when a poll reads B events (--batch; a busy
  host, where events arrive while the previous poll's are formatted).
"""
import argparse
import ctypes
import os
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "unit"))
sys.path.insert(0, HERE)

from helpers import FixedClock, ip4, make_event, to_bytes  # noqa: E402
from skbtrace.kernel import decoder, event, gso, hooks  # noqa: E402
from skbtrace import detector  # noqa: E402
from skbtrace.kernel import udp_tunnel  # noqa: E402
from skbtrace.output import detector_formatter  # noqa: E402
from skbtrace.live import loader  # noqa: E402
from skbtrace.output.clock import Clock  # noqa: E402
from skbtrace.output.formatter import Formatter  # noqa: E402
from skbtrace.output.sink import Sink  # noqa: E402
from skbtrace.live.stats import Stats, WATCHER_EVENTS  # noqa: E402
import targets  # noqa: E402


def events(n):
    kinds = [dict(event=event.EV_CREATE, hook_id=0, frag_list_after=0xffff888000001000),
             dict(event=event.EV_CLEAR, hook_id=2, frag_list_before=0xffff888000001000,
                  last_hook=1),
             dict(event=event.EV_INCONSISTENT, hook_id=19, severity=2, reasons=0x21,
                  gso_size_after=1348, gso_type_after=0x403, last_hook=9, last_ts_ns=1)]
    base = [to_bytes(make_event(family=4, l4proto=17, saddr=ip4("198.18.1.1"),
                                daddr=ip4("198.18.2.1"), sport=1, dport=2, **k)) for k in kinds]
    return [base[i % len(base)] for i in range(n)]


def reference_loop(fmt, hook_table, event_names, verdict):
    dec = decoder.Decoder(hook_table)
    st = Stats(hook_table, event_names)
    sink = open(os.devnull, "w")

    def loop(items):
        for d in items:
            r = dec.decode(d)
            st.add(r)
            if verdict is not None:
                verdict.add(r)
            for line in fmt.lines(r):
                sink.write(line + "\n")
    return loop


def handler(fmt, hook_table, event_names, verdict):
    st = Stats(hook_table, event_names)
    by_id = decoder.Decoder(hook_table).by_id
    if verdict is not None:
        return fmt.handler(by_id, st, verdict=verdict)
    return fmt.handler(by_id, st)


def fast_loop(fmt, hook_table, event_names, verdict):
    handle = handler(fmt, hook_table, event_names, verdict)
    sink = open(os.devnull, "wb" if fmt.json_mode else "w")

    def loop(items):
        write = sink.write
        for d in items:
            write(handle(d))
    return loop


class _Table(object):
    def open_perf_buffer(self, cb, page_cnt=8, lost_cb=None):
        self.cb = cb


def tool_loop(fmt, hook_table, event_names, verdict, per_poll=1):
    fmt.clock = Clock()
    handle = handler(fmt, hook_table, event_names, verdict)
    # the tool's stdout pointed at /dev/null (-o refuses a device)
    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
    try:
        sink = Sink()
    finally:
        sys.stdout = stdout
    write = sink.write_ascii if fmt.json_mode else sink.write_text
    program = loader.Program(None, "", [])
    table = _Table()
    program.bpf = {"events": table}
    program.open(lambda data: write(handle(data)), 8)
    on_event = table.cb
    buffers = {}

    def loop(items):
        for i, d in enumerate(items, 1):
            buf = buffers.get(d)
            if buf is None:
                buf = buffers[d] = ctypes.create_string_buffer(d, len(d))
            on_event(0, ctypes.addressof(buf), len(d))
            if i % per_poll == 0:
                sink.flush()        # the runner, after each poll
        sink.flush()
    return loop


def configs():
    wh, dh = hooks.watcher_hooks(), hooks.detector_hooks()
    det = detector_formatter.DetectorFormatter
    return [
        ("watcher text", lambda: Formatter(FixedClock(), gso.DEFAULT), wh, WATCHER_EVENTS),
        ("watcher --verbose", lambda: Formatter(FixedClock(), gso.DEFAULT, verbose=True), wh,
         WATCHER_EVENTS),
        ("watcher --json", lambda: Formatter(FixedClock(), gso.DEFAULT, json_mode=True), wh,
         WATCHER_EVENTS),
        ("detector text", lambda: det(FixedClock(), gso.DEFAULT), dh, detector.DETECTOR_EVENTS),
        ("detector --verbose", lambda: det(FixedClock(), gso.DEFAULT, verbose=True), dh,
         detector.DETECTOR_EVENTS),
        ("detector --json", lambda: det(FixedClock(), gso.DEFAULT, json_mode=True), dh,
         detector.DETECTOR_EVENTS),
    ]


def rates(loops, data, rounds, clock=time.process_time):
    """Per loop, its rate in each round; the loops run in turns."""
    out = [[] for _ in loops]
    for _ in range(rounds):
        for i, loop in enumerate(loops):
            t0 = clock()
            loop(data)
            out[i].append(len(data) / max(clock() - t0, 1e-9))
    return out


def peak_kib(loop, data):
    # tracemalloc slows the loop ~10x, so on a slice and not timed
    tracemalloc.start()
    loop(data[:2000])
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1024.0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("n", nargs="?", type=int, default=50000, help="events per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--wall", action="store_true", help="wall-clock time, not CPU time")
    p.add_argument("--batch", type=int, default=64, metavar="B",
                   help="events a poll reads, for the tool B/poll column (default 64)")
    args = p.parse_args()
    data = events(args.n)
    print("python %s, %d events per round, best of %d rounds (events per %s second)"
          % (sys.version.split()[0], args.n, args.rounds, "wall-clock" if args.wall else "CPU"))
    print("%-20s %10s %10s %6s %12s %12s  %s" % (
        "", "reference", "fast", "ratio", "tool 1/poll", "tool %d/poll" % args.batch,
        "fast: us/event, peak"))
    verdicts = []
    for label, make_fmt, hook_table, names in configs():
        is_det = label.startswith("detector")
        loops = [make(make_fmt(), hook_table, names, udp_tunnel.Verdict() if is_det else None)
                 for make in (reference_loop, fast_loop, tool_loop)]
        loops.append(tool_loop(make_fmt(), hook_table, names,
                               udp_tunnel.Verdict() if is_det else None, per_poll=args.batch))
        per_round = rates(loops, data, args.rounds,
                          time.perf_counter if args.wall else time.process_time)
        ref, fast, tool, batched = [max(r) for r in per_round]
        tool_name, kind = label.replace("--", "").split()
        if kind != "verbose":
            for poll, values in (("1", per_round[2]), (str(args.batch), per_round[3])):
                verdicts.append(targets.measured("native-as-the-tool-runs", "%s/%s/%s-a-poll"
                                                 % (tool_name, kind, poll), values))
        peak = peak_kib(fast_loop(make_fmt(), hook_table, names,
                                  udp_tunnel.Verdict() if is_det else None), data)
        print("%-20s %10.0f %10.0f %5.1fx %12.0f %12.0f  %.2f us, %.0f KiB" % (
            label, ref, fast, fast / ref, tool, batched, 1e6 / fast, peak))
    print("\n" + "\n".join(targets.block(
        verdicts, "targets of issue 18, natively: events per %s second as the tool runs"
        % ("wall-clock" if args.wall else "CPU"))))


if __name__ == "__main__":
    main()
