"""skb_postmortem on a large log: throughput and peak memory. The logs are
the real Calico-pattern fixtures (tests/unit/data/postmortem) replayed
round after round, each round's times shifted past the previous one and its
skb addresses moved within a pool of 64 slabs' worth (an address pool is
what a real node has: addresses are reused, not new). Nothing is typed.
Prints figures; asserts nothing (not a timed test).

    /usr/bin/python3 tests/bench/bench_postmortem.py [--mb 1024] [--json] [--gzip] [--dir DIR]
"""
import argparse
import gzip
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PM = os.path.join(ROOT, "tests", "unit", "data", "postmortem")
LAUNCHER = os.path.join(ROOT, "skb_postmortem.py")
POOL = 64

_ADDR = re.compile(r"0x(ffff888[0-9a-f]{9})")
_HMS = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{6})")
_ISO = re.compile(r'"time": "(\d{4}-\d\d-\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})')
_TS = re.compile(r'"ts_ns": (\d+)')


def events_of(name):
    """The event lines of a fixture (no headers, statistics or STATIC)."""
    with gzip.open(os.path.join(PM, name), "rt") as f:
        lines = f.read().splitlines()
    if name.endswith(".json.gz"):
        return [l for l in lines if '"type": "event"' in l]
    return [l for l in lines if _HMS.match(l) and " | 0x" in l]


def span_of(lines, json_mode):
    if json_mode:
        ts = [int(_TS.search(l).group(1)) for l in lines]
        return (max(ts) - min(ts)) / 1e9 + 0.01
    secs = [int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3)) +
            int(m.group(4)) / 1e6 for m in (_HMS.match(l) for l in lines)]
    return max(secs) - min(secs) + 0.01


def hms(t):
    s = int(t)
    return "%02d:%02d:%02d.%06d" % (s // 3600 % 24, s // 60 % 60, s % 60,
                                    int(round((t - s) * 1e6)) % 1000000)


def shifted(line, k, span, json_mode):
    shift = k * span
    slab = (k % POOL) << 24

    def addr(m):
        return "0x%x" % (int(m.group(1), 16) ^ slab)
    line = _ADDR.sub(addr, line)
    if json_mode:
        def iso(m):
            t = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + int(m.group(4)) + \
                int(m.group(5)) / 1e6 + shift
            return '"time": "%sT%s' % (m.group(1), hms(t))
        line = _ISO.sub(iso, line)
        return _TS.sub(lambda m: '"ts_ns": %d' % (int(m.group(1)) + int(shift * 1e9)), line)
    m = _HMS.match(line)
    t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3)) + \
        int(m.group(4)) / 1e6 + shift
    return hms(t) + line[m.end():]


def generate(directory, mb, json_mode, gz):
    ext = "json" if json_mode else "log"
    names = ["6.1-calico-%s.%s.gz" % (t, ext) for t in ("watcher", "detector")]
    sources = [events_of(n) for n in names]
    span = max(span_of(s, json_mode) for s in sources)
    paths = [os.path.join(directory, "big-%s.%s%s" % (t, ext, ".gz" if gz else ""))
             for t in ("watcher", "detector")]
    outs = [gzip.open(p, "wt", compresslevel=1) if gz else open(p, "w") for p in paths]
    target = mb << 20
    written = 0
    k = 0
    while written < target:
        for src, out in zip(sources, outs):
            chunk = "\n".join(shifted(l, k, span, json_mode) for l in src) + "\n"
            out.write(chunk)
            written += len(chunk)
        k += 1
    for o in outs:
        o.close()
    return paths, written, k


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=1024, help="uncompressed size of both logs")
    p.add_argument("--json", action="store_true", help="replay the --json fixtures")
    p.add_argument("--gzip", action="store_true", help="write the logs gzipped")
    p.add_argument("--dir", help="where to write them (default: a temporary directory)")
    a = p.parse_args()
    directory = a.dir or tempfile.mkdtemp(prefix="bench_postmortem.")
    try:
        t0 = time.time()
        paths, size, rounds = generate(directory, a.mb, a.json, a.gzip)
        print("generated %.0f MB (%d rounds of the fixtures, %s%s) in %.0f s" % (
            size / 2 ** 20, rounds, "JSON" if a.json else "text", ", gzip" if a.gzip else "",
            time.time() - t0))
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, LAUNCHER, "--max", "3"] + paths,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()
        dt = time.time() - t0
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        rss = child.ru_maxrss
        cpu = child.ru_utime + child.ru_stime
        if proc.returncode:
            print("skb_postmortem failed (%d): %s" % (proc.returncode, err.decode().strip()))
            return 1
        head = [l for l in out.decode().splitlines() if l.startswith(("packets:", "picked:"))]
        print("\n".join(head))
        print("skb_postmortem: %.1f s for %.0f MB (two passes): %.1f MB/s; %.1f s CPU "
              "(%.1f MB/s of CPU: what an idle machine gives); peak RSS %.0f MB" % (
                  dt, size / 2 ** 20, size / 2 ** 20 / dt, cpu, size / 2 ** 20 / cpu,
                  rss / 1024.0))
    finally:
        if not a.dir:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
