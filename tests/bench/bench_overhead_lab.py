"""What the tools cost, measured in a lab guest side by side. A benchmark
command (prints figures, asserts nothing), not a test.

    /usr/bin/python3 tests/bench/bench_overhead_lab.py [--seconds 5] [--only SECTION ...]

Sections:
  hits        (or throughput: one section) per configuration, TCP forwarding
              through the router namespace as a ratio to untraced, then the
              per-hit cost of every program from the kernel's own statistics
              (kernel.bpf_stats_enabled: run_time_ns / run_cnt), next to an
              empty program on the same hooks (the floor) and next to a
              bpftrace script with the same hooks reading the same fields
              (the peer a user would write instead)
  loss        events per second sustained without loss at the default buffer
              size (perf buffers, and the ring buffer where the kernel has
              one), and where losses start
  userspace   user-space decode+format as the tools run it (the fast path,
              a write per event) on a real event stream in the guest (text,
              --verbose, --json), next to bcc's plain table.event + print and
              next to an empty callback (bcc's own floor), for each buffer

TCG emulation inflates every absolute time (and traps more than plain
instructions): compare the ratios, not the nanoseconds, with hardware.
"""
import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lab"))

from lab import Lab  # noqa: E402

T = "python3 tests/lab/guest/traffic.py"
W = "python3 skb_frag_list_watcher.py"
D = "python3 skb_vxlan_source_detector.py --no-static"
KP, FE = " --backend kprobe", " --backend fentry"
NOMATCH = "--gso-only --src-ip 198.19.255.254"     # valid, never seen in the lab

# hook -> has a return probe, for the floor program (as the watcher has them)
GUEST = os.path.join(HERE, "guest_bench.py")


def tcp_rate(lab, seconds):
    r = lab.run("%s tcp-bulk --seconds %d" % (T, seconds))
    m = re.search(r"tcp-server received (\d+) bytes", r.out)
    return int(m.group(1)) * 8 / seconds / 1e6 if m else float("nan")


def prog_stats(lab):
    """{prog id: (name, run_time_ns, run_cnt)} of every loaded program."""
    r = lab.run("bpftool -j prog show", check=True)
    out = {}
    for p in json.loads(r.out or "[]"):
        out[p["id"]] = (p.get("name", ""), p.get("run_time_ns", 0), p.get("run_cnt", 0))
    return out


def map_memory(lab):
    """{map id: (name, type, max_entries, bytes_memlock)} of every map."""
    r = lab.run("bpftool -j map show", check=True)
    return dict((m["id"], (m.get("name", ""), m.get("type", ""), m.get("max_entries", 0),
                           int(m.get("bytes_memlock", 0))))
                for m in json.loads(r.out or "[]"))


def delta_stats(before, after, new_only=True):
    rows = {}
    for pid, (name, ns, cnt) in after.items():
        if new_only and pid in before:
            continue
        b = before.get(pid, (name, 0, 0))
        rows[pid] = (name, ns - b[1], cnt - b[2])
    return rows


def per_hit(rows, prefixes=None):
    """(hits, ns per hit) over the programs whose names start with one of
    prefixes (all when None). Tail-called stage programs are accounted to
    the stub that called them (the kernel times the outermost program)."""
    ns = cnt = 0
    for name, t, c in rows.values():
        if prefixes and not name.startswith(prefixes):
            continue
        ns += t
        cnt += c
    return cnt, (ns / cnt if cnt else float("nan"))


def measure_hits(lab, seconds):
    """Every configuration is started once: forwarding first (statistics
    off: bpf_stats_enabled adds two clock reads per program run), then the
    kernel's per-program run time over the same traffic."""
    print("\n== per-hit cost (kernel.bpf_stats_enabled) and TCP forwarding h1 -> r -> h2, "
          "%d s each ==" % seconds)
    lab.run("sysctl -qw kernel.bpf_stats_enabled=0", check=True)
    untraced = max(tcp_rate(lab, seconds) for _ in range(2))
    print("%-52s %8s %10s %8.1f Mbit/s %6.1f%%" % ("untraced", "", "", untraced, 100.0))
    results = []

    def one(label, start, stop):
        start()
        if label in MEMORY_OF:
            maps = [m for k, m in map_memory(lab).items() if k not in maps_before]
            print("%s: %d maps, %.1f MiB locked (%s)" % (
                label, len(maps), sum(m[3] for m in maps) / 1048576.0,
                ", ".join("%s %s x%d %.0f KiB" % (n, ty, e, b / 1024.0)
                          for n, ty, e, b in sorted(maps, key=lambda m: -m[3]))))
        rate = tcp_rate(lab, seconds)
        lab.run("sysctl -qw kernel.bpf_stats_enabled=1", check=True)
        mid = prog_stats(lab)
        tcp_rate(lab, seconds)
        after = prog_stats(lab)
        lab.run("sysctl -qw kernel.bpf_stats_enabled=0", check=True)
        stop()
        rows = delta_stats(mid, after, new_only=False)
        # every program this configuration loaded: the tools' stubs
        # (enter_*/leave_*) and fentry programs, the floor's, bpftrace's
        rows = dict((k, v) for k, v in rows.items() if k not in before_ids)
        hits, ns = per_hit(rows)
        results.append((label, hits, ns, rate))
        top = sorted(rows.values(), key=lambda r: -r[2])[:4]
        print("%-52s %8d %7.0f ns %8.1f Mbit/s %6.1f%%  (busiest: %s)" % (
            label, hits, ns, rate, 100.0 * rate / untraced if untraced else 0,
            ", ".join("%s %.0f ns x%d" % (n, t / c if c else 0, c) for n, t, c in top if c)))

    def tool(cmd):
        return (lambda: lab.start_tool(cmd + " -o /dev/null"), lambda: lab.stop_tool())

    def guest(mode):
        def start():
            lab.run("rm -f /tmp/bench-stop; nohup python3 tests/bench/guest_bench.py %s "
                    "> /tmp/bench-%s.out 2>&1 & echo $! > /tmp/bench.pid; for i in $(seq 1500); "
                    "do grep -q ready /tmp/bench-%s.out && exit 0; sleep 0.2; done; "
                    "cat /tmp/bench-%s.out; exit 1" % (mode, mode, mode, mode),
                    check=True, timeout=400)

        def stop():
            # the stop file ends it; a pattern kill would also hit this shell
            lab.run("touch /tmp/bench-stop; for i in $(seq 100); do "
                    "kill -0 $(cat /tmp/bench.pid) 2>/dev/null || exit 0; sleep 0.2; done; "
                    "kill $(cat /tmp/bench.pid)")
        return start, stop

    before_ids = set(prog_stats(lab))    # programs of nobody's making here (systemd's)
    maps_before = set(map_memory(lab))
    print("%-52s %8s %10s %15s %7s" % ("configuration", "hits", "per hit", "forwarding",
                                       "ratio"))
    one("empty kprobe/kretprobe on the watcher's hooks", *guest("floor"))
    one("empty fentry/fexit on the watcher's hooks", *guest("floor-fentry"))
    one("bpftrace peer (same hooks, same fields)", *guest("bpftrace"))
    for label, cmd in CONFIGS:
        one(label, *tool(cmd))
    floors = {"kprobe": results[0][2], "fentry": results[1][2]}
    peer = results[2][2]
    print("\n%-52s %10s %10s %12s" % ("", "vs floor", "vs peer", "forwarding"))
    for label, _hits, ns, rate in results[3:]:
        floor = floors["fentry" if "fentry" in label else "kprobe"]
        print("%-52s %9.2fx %9.2fx %11.1f%%" % (label, ns / floor, ns / peer,
                                               100.0 * rate / untraced if untraced else 0))
    return results


# the maps each tool creates, and their memory, printed once per tool
MEMORY_OF = ("watcher, fentry", "detector, fentry")

# label, command: both backends, the default hooks and a filter that matches
# nothing, the default buffer (a ring buffer where there is one) and perf
CONFIGS = (
    ("watcher, kprobe", W + KP),
    ("watcher, kprobe, %s" % NOMATCH, W + KP + " " + NOMATCH),
    ("watcher, fentry", W + FE),
    ("watcher, fentry, --buffer perf", W + FE + " --buffer perf"),
    ("watcher, fentry, %s" % NOMATCH, W + FE + " " + NOMATCH),
    ("detector, kprobe", D + KP),
    ("detector, kprobe, %s" % NOMATCH, D + KP + " " + NOMATCH),
    ("detector, fentry", D + FE),
    ("detector, fentry, %s" % NOMATCH, D + FE + " " + NOMATCH),
)


def measure_guest(lab, mode, seconds):
    r = lab.run("python3 tests/bench/guest_bench.py %s --seconds %d" % (mode, seconds),
                timeout=900)
    print(r.out.rstrip())
    if r.rc:
        print(r.err[-2000:])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--only", nargs="*", default=["hits", "throughput", "loss", "userspace"])
    a = p.parse_args()
    with Lab(stream=False) as lab:
        print("lab kernel %s (%s), bcc %s" % (
            lab.meta["release"], (lab.meta.get("kernel_pkg") or {}).get("version"),
            lab.run("python3 -c 'import bcc; print(bcc.__version__)'").out.strip()))
        lab.run("%s topo --gro-list on" % T, check=True)
        if "hits" in a.only or "throughput" in a.only:
            measure_hits(lab, a.seconds)
        if "loss" in a.only:
            print("\n== events/s sustained with the default buffer (64 pages per CPU) ==")
            measure_guest(lab, "loss", a.seconds)
        if "userspace" in a.only:
            print("\n== user space: events/s consumed from the perf buffer, one core ==")
            measure_guest(lab, "userspace", a.seconds)
        lab.run("%s cleanup" % T)


if __name__ == "__main__":
    main()
