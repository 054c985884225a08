"""User-space cost per event: decode + format (text, verbose, JSON) + stats,
on hand-built events. Prints figures; asserts nothing (not a timed test).

    /usr/bin/python3 tests/bench/bench_pipeline.py [N]
"""
import os
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "unit"))

from helpers import FixedClock, ip4, make_event, to_bytes  # noqa: E402
from skbtrace import decoder, detector, event, gso, hooks  # noqa: E402
from skbtrace.formatter import Formatter  # noqa: E402
from skbtrace.stats import Stats, WATCHER_EVENTS  # noqa: E402


def events(n):
    kinds = [dict(event=event.EV_CREATE, hook_id=0, frag_list_after=0xffff888000001000),
             dict(event=event.EV_CLEAR, hook_id=2, frag_list_before=0xffff888000001000,
                  last_hook=1),
             dict(event=event.EV_INCONSISTENT, hook_id=19, severity=2, reasons=0x21,
                  gso_size_after=1348, gso_type_after=0x403, last_hook=9, last_ts_ns=1)]
    base = [to_bytes(make_event(family=4, l4proto=17, saddr=ip4("198.18.1.1"),
                                daddr=ip4("198.18.2.1"), sport=1, dport=2, **k)) for k in kinds]
    return [base[i % len(base)] for i in range(n)]


def run(label, fmt, data, hook_table):
    dec = decoder.Decoder(hook_table)
    st = Stats(hook_table, WATCHER_EVENTS)
    sink = open(os.devnull, "w")

    def loop(items):
        for d in items:
            r = dec.decode(d)
            st.add(r)
            for line in fmt.lines(r):
                sink.write(line + "\n")

    t0 = time.perf_counter()
    loop(data)
    dt = time.perf_counter() - t0
    # memory on a slice: tracemalloc slows the loop ~10x, so not timed
    tracemalloc.start()
    loop(data[:2000])
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print("%-28s %8.0f events/s  %6.2f us/event  peak %5.0f KiB" % (
        label, len(data) / dt, dt / len(data) * 1e6, peak / 1024.0))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    data = events(n)
    wh = hooks.watcher_hooks()
    print("python %s, %d events" % (sys.version.split()[0], n))
    run("watcher text", Formatter(FixedClock(), gso.DEFAULT), data, wh)
    run("watcher --verbose", Formatter(FixedClock(), gso.DEFAULT, verbose=True), data, wh)
    run("watcher --json", Formatter(FixedClock(), gso.DEFAULT, json_mode=True), data, wh)
    run("detector text", detector.DetectorFormatter(FixedClock(), gso.DEFAULT), data,
        hooks.detector_hooks())


if __name__ == "__main__":
    main()
