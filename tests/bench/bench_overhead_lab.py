"""What the tools cost, measured in a lab guest side by side. A benchmark
command (prints figures, asserts nothing), not a test.

    /usr/bin/python3 tests/bench/bench_overhead_lab.py [--reps 3] [--seconds 5]
        [--only SECTION ...] [--configs SUBSTR ...] [--loss-seconds 30] [--no-loss-sweep]

Every figure comes from this one run, side by side in the same guest; the
targets are ratios, never absolute times. TCG is noisy (~40% between two
runs of one configuration), so each ratio is the median of --reps
repetitions taken in turns (reference, tool, reference, tool, ...), printed
with its spread (min..max). The run ends with one block, a line per target
and configuration: target <name> <configuration> measured <value> goal
<value> met|NOT MET (tests/bench/targets.py).

Sections:
  hits        (or throughput: one section) --reps rounds; in each, every
              configuration in turn is started, measured and stopped: TCP
              forwarding through the router namespace (statistics off), then
              the per-hit cost of every program it loaded from the kernel's
              own statistics (kernel.bpf_stats_enabled: run_time_ns /
              run_cnt). The references: an empty program on the same hooks
              per backend (the floors) and a bpftrace script with the same
              hooks reading the same fields (the peer a user would write
              instead). Both tools, both backends, both buffers where the
              kernel has both, and the filter that matches nothing.
              --configs SUBSTR ... runs only the tool configurations whose
              label contains one of them (the references always run).
  loss        20,000 events/s for --loss-seconds with the default buffer size,
              each buffer the kernel has, the watcher's text path consuming:
              sent, received, lost, and in which second of the run losses
              happened; then (unless --no-loss-sweep) a sweep of rates,
              --seconds each, to show where losses start
  userspace   events/s the consumer reads from a source as fast as it can:
              the watcher's text and --json paths as the tools run them, bcc's
              plain table.event + print, an empty callback (bcc's floor), in
              turns, --reps times, per buffer

TCG emulation inflates every absolute time (and traps more than plain
instructions): compare the ratios, not the nanoseconds, with hardware.
"""
import argparse
import collections
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lab"))
sys.path.insert(0, HERE)

from lab import Lab, LabError  # noqa: E402
import targets  # noqa: E402

T = "python3 tests/lab/guest/traffic.py"
W = "python3 skb_frag_list_watcher.py"
D = "python3 skb_vxlan_source_detector.py --no-static"
NOMATCH = "--gso-only --src-ip 198.19.255.254"     # valid, never seen in the lab
TOOLS = (("watcher", W), ("detector", D))
BACKENDS = ("kprobe", "fentry")
SECTIONS = ("hits", "throughput", "loss", "userspace")
LOSS_RATE = 20000

# buffer: "default" (the tool's --buffer auto: ring where the kernel has one)
# or "perf"; filtered: with NOMATCH
Config = collections.namedtuple("Config", "label tool backend buffer filtered cmd")

FLOOR = {"kprobe": "empty kprobe/kretprobe on the watcher's hooks",
         "fentry": "empty fentry/fexit on the watcher's hooks"}
PEER = "bpftrace peer (same hooks, same fields)"
GUEST_MODE = {FLOOR["kprobe"]: "floor", FLOOR["fentry"]: "floor-fentry", PEER: "bpftrace"}

# the maps each tool creates, and their memory, printed once per tool
MEMORY_OF = ("watcher, fentry", "detector, fentry")


def tool_configs():
    """Both tools and backends: the default flags (the default buffer), the
    same on perf buffers, and the filter that matches nothing."""
    out = []
    for tool, cmd in TOOLS:
        for backend in BACKENDS:
            label = "%s, %s" % (tool, backend)
            base = "%s --backend %s" % (cmd, backend)
            out.append(Config(label, tool, backend, "default", False, base))
            out.append(Config(label + ", --buffer perf", tool, backend, "perf", False,
                              base + " --buffer perf"))
            out.append(Config("%s, %s" % (label, NOMATCH), tool, backend, "default", True,
                              "%s %s" % (base, NOMATCH)))
    return out


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


def delta_stats(before, after):
    rows = {}
    for pid, (name, ns, cnt) in after.items():
        b = before.get(pid, (name, 0, 0))
        rows[pid] = (name, ns - b[1], cnt - b[2])
    return rows


def per_hit(rows):
    """(hits, ns per hit) over the programs. Tail-called stage programs are
    accounted to the stub that called them (the kernel times the outermost
    program)."""
    ns = sum(t for _n, t, _c in rows.values())
    cnt = sum(c for _n, _t, c in rows.values())
    return cnt, (ns / cnt if cnt else float("nan"))


def guest_results(out):
    """{key: value} of the RESULT lines guest_bench.py prints."""
    res = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _r, key, value = line.split(" ", 2)
            res[key] = json.loads(value)
    return res


def run_guest(lab, args, timeout):
    """guest_bench.py with args: its human-readable lines printed, its
    RESULT lines returned ({} when it failed)."""
    r = lab.run("python3 tests/bench/guest_bench.py %s" % args, timeout=timeout)
    print("\n".join(l for l in r.out.rstrip().splitlines() if not l.startswith("RESULT ")))
    if r.rc:
        print("guest_bench.py %s failed (rc %s): %s" % (args, r.rc, r.err[-2000:]))
    return guest_results(r.out)


class Hits(object):
    """The hits section: rounds of every configuration in turn."""

    def __init__(self, lab, seconds, caps):
        self.lab, self.seconds, self.caps = lab, seconds, caps
        self.rows = collections.defaultdict(list)    # label -> [(hits, ns, rate) | None]
        self.errors = {}
        self.before_ids = set(prog_stats(lab))       # nobody's making here (systemd's)
        self.maps_before = set(map_memory(lab))
        self.timings = collections.defaultdict(list)  # label -> [seconds start to stop]

    def start_stop(self, label, cmd):
        lab = self.lab
        if cmd is not None:
            # stdout to /dev/null (-o refuses a device); stderr stays the
            # lab's, where "Hit Ctrl-C to end" says it is tracing
            return (lambda: lab.start_tool(cmd + " > /dev/null"), lambda: lab.stop_tool())
        mode = GUEST_MODE[label]

        def start():
            r = lab.run("rm -f /tmp/bench-stop; nohup python3 tests/bench/guest_bench.py %s "
                        "> /tmp/bench-%s.out 2>&1 & echo $! > /tmp/bench.pid; for i in "
                        "$(seq 1500); do grep -q ready /tmp/bench-%s.out && exit 0; sleep 0.2; "
                        "done; cat /tmp/bench-%s.out; exit 1" % (mode, mode, mode, mode),
                        timeout=400)
            if r.rc:
                raise LabError("%s did not start: %s" % (mode, (r.out + r.err)[-500:]))

        def stop():
            # the stop file ends it; a pattern kill would also hit this shell
            lab.run("touch /tmp/bench-stop; for i in $(seq 100); do "
                    "kill -0 $(cat /tmp/bench.pid) 2>/dev/null || exit 0; sleep 0.2; done; "
                    "kill $(cat /tmp/bench.pid)")
        return start, stop

    def one(self, label, cmd, first_round):
        """Start, forwarding window (statistics off: bpf_stats_enabled adds
        two clock reads per program run), per-hit window, stop."""
        lab = self.lab
        start, stop = self.start_stop(label, cmd)
        t0 = time.time()
        try:
            start()
        except LabError as e:
            stop()
            self.rows[label].append(None)
            self.errors[label] = str(e).splitlines()[0][:300]
            print("%-56s did not run: %s" % (label, self.errors[label]))
            return
        if first_round and label in MEMORY_OF:
            maps = [m for k, m in map_memory(lab).items() if k not in self.maps_before]
            print("%s: %d maps, %.1f MiB locked (%s)" % (
                label, len(maps), sum(m[3] for m in maps) / 1048576.0,
                ", ".join("%s %s x%d %.0f KiB" % (n, ty, e, b / 1024.0)
                          for n, ty, e, b in sorted(maps, key=lambda m: -m[3]))))
        rate = tcp_rate(lab, self.seconds)
        lab.run("sysctl -qw kernel.bpf_stats_enabled=1", check=True)
        mid = prog_stats(lab)
        tcp_rate(lab, self.seconds)
        after = prog_stats(lab)
        lab.run("sysctl -qw kernel.bpf_stats_enabled=0", check=True)
        stop()
        self.timings[label].append(time.time() - t0)
        # every program this configuration loaded: the tools' stubs
        # (enter_*/leave_*) and fentry programs, the floor's, bpftrace's
        rows = dict((k, v) for k, v in delta_stats(mid, after).items()
                    if k not in self.before_ids)
        hits, ns = per_hit(rows)
        self.rows[label].append((hits, ns, rate))
        top = sorted(rows.values(), key=lambda r: -r[2])[:4]
        print("%-56s %8d %7.0f ns %8.1f Mbit/s %6.0f s  (busiest: %s)" % (
            label, hits, ns, rate, self.timings[label][-1],
            ", ".join("%s %.0f ns x%d" % (n, t / c if c else 0, c) for n, t, c in top if c)),
            flush=True)

    def ratios(self, label, ref, field, scale=1.0):
        """Per round, label's field over ref's (0: hits, 1: ns, 2: rate),
        the rounds where both ran."""
        # a round without hits (nan per hit) or traffic measured nothing
        return [scale * a[field] / b[field]
                for a, b in zip(self.rows.get(label, []), self.rows.get(ref, []))
                if a and b and b[field] and a[field] == a[field] and b[field] == b[field]]


def measure_hits(lab, seconds, reps, configs, caps):
    print("\n== per-hit cost (kernel.bpf_stats_enabled) and TCP forwarding h1 -> r -> h2, "
          "%d s each, %d rounds in turns ==" % (seconds, reps))
    lab.run("sysctl -qw kernel.bpf_stats_enabled=0", check=True)
    untraced = max(tcp_rate(lab, seconds) for _ in range(2))
    print("untraced forwarding %.1f Mbit/s" % untraced)
    h = Hits(lab, seconds, caps)
    refs = [FLOOR["kprobe"]] + ([FLOOR["fentry"]] if caps["fentry"][0] else []) + [PEER]
    print("%-56s %8s %10s %15s %8s" % ("configuration", "hits", "per hit", "forwarding",
                                       "start-stop"))
    for rnd in range(reps):
        print("-- round %d of %d" % (rnd + 1, reps))
        for label in refs:
            h.one(label, None, rnd == 0)
        for c in configs:
            h.one(c.label, c.cmd, rnd == 0)
    print("\nmedian over rounds (min..max)")
    print("%-56s %9s %22s %22s %22s" % ("", "ns per hit", "vs floor", "vs peer",
                                        "forwarding vs floor"))

    def show(values, fmt):
        if not values:
            return "-"
        lo, hi = targets.spread(values)
        return "%s (%s..%s)" % (fmt % targets.median(values), fmt % lo, fmt % hi)
    for label in refs + [c.label for c in configs]:
        c = next((c for c in configs if c.label == label), None)
        floor = FLOOR[c.backend if c else "kprobe"]
        ns = [r[1] for r in h.rows[label] if r]
        print("%-56s %9s %22s %22s %22s" % (
            label, "%.0f" % targets.median(ns) if ns else "-",
            show(h.ratios(label, floor, 1), "%.2fx") if c else "",
            show(h.ratios(label, PEER, 1), "%.2fx") if c and not c.filtered else "",
            show(h.ratios(label, floor, 2, 100.0), "%.1f%%") if c else
            "%.1f%% of untraced" % (100.0 * targets.median([r[2] for r in h.rows[label] if r])
                                   / untraced) if ns and untraced else ""))
    return h


def hits_verdicts(h, configs, caps, why_not_run=None):
    """The verdict lines of the hits section; why_not_run: the section did
    not run (every line says so)."""
    out = []
    selected = dict((c.label, c) for c in configs)
    ring_ok, ring_why = caps["ring"] if caps else (True, None)
    fentry_ok, fentry_why = caps["fentry"] if caps else (True, None)

    def add(target, name, label, ref, field, scale=1.0):
        if why_not_run:
            out.append(targets.not_measured(target, name, why_not_run))
            return
        backend = name.split("/")[1]
        if backend == "fentry" and not fentry_ok:
            out.append(targets.not_measured(target, name, "no fentry here: %s" % fentry_why))
            return
        if label is None:
            out.append(targets.not_measured(target, name, "no ring buffer here: %s" % ring_why))
            return
        if label not in selected:
            out.append(targets.not_measured(target, name, "not selected by --configs"))
            return
        values = h.ratios(label, ref, field, scale)
        if values:
            out.append(targets.measured(target, name, values))
            return
        why = h.errors.get(label) or h.errors.get(ref) or "no round where both ran and had hits"
        out.append(targets.not_measured(target, name, "did not run: %s" % why))

    for tool, _cmd in TOOLS:
        for backend in BACKENDS:
            base = "%s, %s" % (tool, backend)
            floor = FLOOR[backend]
            for buf in ("ring", "perf"):
                if buf == "ring":
                    label = base if ring_ok else None
                else:
                    # without a ring buffer the default buffer is perf
                    label = base + ", --buffer perf" if ring_ok else base
                add("emitting-hit", "%s/%s/%s" % (tool, backend, buf), label, PEER, 1)
            nomatch = "%s, %s" % (base, NOMATCH)
            add("filtered-hit", "%s/%s" % (tool, backend), nomatch, floor, 1)
            add("forwarding-filtered", "%s/%s" % (tool, backend), nomatch, floor, 2, 100.0)
            if tool == "watcher":
                add("forwarding-emitting", "%s/%s" % (tool, backend), base, floor, 2, 100.0)
    return out


def userspace_verdicts(res, why_not_run=None):
    out = []
    for buf in ("ring", "perf"):
        for kind in ("text", "json"):
            name = "%s/%s" % (buf, kind)
            rates = (res or {}).get(buf)
            if why_not_run or not rates:
                why = why_not_run or ("no ring buffer here: %s" % res.get("ring_why")
                                      if res and buf == "ring" and res.get("ring_why")
                                      else "did not run")
                out.append(targets.not_measured("userspace-vs-bcc-print", name, why))
                out.append(targets.not_measured("userspace-vs-empty-callback", name, why))
                continue
            out.append(targets.measured("userspace-vs-bcc-print", name,
                                        [t / b for t, b in zip(rates[kind], rates["bcc"])]))
            out.append(targets.measured("userspace-vs-empty-callback", name,
                                        [100.0 * t / e for t, e in zip(rates[kind],
                                                                       rates["empty"])]))
    return out


def loss_verdicts(res, seconds, why_not_run=None):
    out = []
    for buf in ("ring", "perf"):
        r = (res or {}).get(buf)
        name = "%s/%ds" % (buf, seconds)
        if why_not_run or not r:
            why = why_not_run or ("no ring buffer here: %s" % res.get("ring_why")
                                  if res and buf == "ring" and res.get("ring_why")
                                  else "did not run")
            out.append(targets.not_measured("no-loss-20k", name, why))
        else:
            out.append(targets.measured("no-loss-20k", name, [r["lost"]]))
    return out


def native_verdicts():
    return [targets.not_measured("native-as-the-tool-runs", "%s/%s" % (tool, kind),
                                 "natively, not in the guest: tests/bench/bench_pipeline.py")
            for tool, _c in TOOLS for kind in ("text", "json")]


def select(configs, substrings, caps):
    """The tool configurations to run: those --configs names (all when
    none), less those this kernel cannot run (said once here)."""
    out = []
    for c in configs:
        if substrings and not any(s in c.label for s in substrings):
            continue
        if c.backend == "fentry" and not caps["fentry"][0]:
            print("(%s: not run, no fentry here: %s)" % (c.label, caps["fentry"][1]))
            continue
        if c.buffer == "perf" and not caps["ring"][0]:
            print("(%s: not run, the same as the default here: no ring buffer)" % c.label)
            continue
        out.append(c)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="each measuring window (default 5)")
    p.add_argument("--reps", type=int, default=3,
                   help="rounds of every configuration in turns (default 3)")
    p.add_argument("--only", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--configs", nargs="*", default=[], metavar="SUBSTR",
                   help="only the tool configurations whose label contains one of these "
                        "(the references always run)")
    p.add_argument("--loss-seconds", type=int, default=30,
                   help="how long the 20,000 events/s case runs (default 30)")
    p.add_argument("--no-loss-sweep", action="store_true",
                   help="the 20,000 events/s case only, not the sweep of rates")
    a = p.parse_args()
    if a.reps < 1 or a.seconds < 1 or a.loss_seconds < 1:
        p.error("--reps, --seconds and --loss-seconds must be at least 1")
    verdicts = []
    took = collections.OrderedDict()
    t_all = time.time()
    with Lab(stream=False) as lab:
        took["boot"] = time.time() - t_all
        print("lab kernel %s (%s), bcc %s" % (
            lab.meta["release"], (lab.meta.get("kernel_pkg") or {}).get("version"),
            lab.run("python3 -c 'import bcc; print(bcc.__version__)'").out.strip()))
        caps = run_guest(lab, "caps", 300).get("caps") or {
            "ring": [False, "caps did not run"], "fentry": [False, "caps did not run"]}
        print("ring buffer: %s; fentry: %s" % tuple(
            "yes" if caps[k][0] else "no (%s)" % caps[k][1] for k in ("ring", "fentry")))
        lab.run("%s topo --gro-list on" % T, check=True)
        configs = select(tool_configs(), a.configs, caps)
        if "hits" in a.only or "throughput" in a.only:
            t0 = time.time()
            h = measure_hits(lab, a.seconds, a.reps, configs, caps)
            took["hits"] = time.time() - t0
            verdicts += hits_verdicts(h, configs, caps)
            print("\nstart to stop per configuration, mean of rounds:")
            for label, ts in h.timings.items():
                print("  %-56s %5.0f s" % (label, sum(ts) / len(ts)))
        else:
            verdicts += hits_verdicts(None, configs, None, "section hits not run: --only")
        if "loss" in a.only:
            print("\n== events/s sustained with the default buffer size (64 pages per CPU; "
                  "the ring buffer as large as those together) ==")
            t0 = time.time()
            res = run_guest(lab, "loss --seconds %d --loss-seconds %d%s" % (
                a.seconds, a.loss_seconds, " --no-sweep" if a.no_loss_sweep else ""),
                3600).get("loss")
            took["loss"] = time.time() - t0
            verdicts += loss_verdicts(res, a.loss_seconds)
        else:
            verdicts += loss_verdicts(None, a.loss_seconds, "section loss not run: --only")
        if "userspace" in a.only:
            print("\n== user space: events/s consumed from the event buffer, one core ==")
            t0 = time.time()
            res = run_guest(lab, "userspace --seconds %d --reps %d" % (a.seconds, a.reps),
                            3600).get("userspace")
            took["userspace"] = time.time() - t0
            verdicts += userspace_verdicts(res)
        else:
            verdicts += userspace_verdicts(None, "section userspace not run: --only")
        lab.run("%s cleanup" % T)
    took["total"] = time.time() - t_all
    print("\ntook: %s" % ", ".join("%s %.0f s" % kv for kv in took.items()))
    verdicts += native_verdicts()
    print("\n" + "\n".join(targets.block(verdicts)))


if __name__ == "__main__":
    main()
