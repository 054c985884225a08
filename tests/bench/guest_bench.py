"""The guest half of tests/bench/bench_overhead_lab.py (runs inside a lab
guest, with bcc): the floor and peer programs on the watcher's hooks, and an
event source (perf buffers or a BPF ring buffer, as the tools build them) for
the loss and user-space figures.

    python3 tests/bench/guest_bench.py floor|floor-fentry|bpftrace   # until /tmp/bench-stop exists
    python3 tests/bench/guest_bench.py loss [--seconds 5] [--loss-seconds 30] [--no-sweep]
    python3 tests/bench/guest_bench.py userspace [--seconds 5] [--reps 3]
    python3 tests/bench/guest_bench.py caps     # RESULT caps {"ring": [ok, why], "fentry": ...}
"""
import argparse
import collections
import ctypes
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from skbtrace.kernel import decoder, event, gso, hooks  # noqa: E402
from skbtrace.output import formatter  # noqa: E402
from skbtrace.live import loader  # noqa: E402
from skbtrace.output.clock import Clock  # noqa: E402
from skbtrace.output.sink import Sink  # noqa: E402
from skbtrace.live.stats import Stats, WATCHER_EVENTS  # noqa: E402

STOP = "/tmp/bench-stop"


def watcher_symbols():
    from bcc import BPF
    hs = hooks.watcher_hooks()
    loader.resolve_hooks(BPF, hs)
    return [h for h in hs if h.symbol]


def wait_stop():
    print("ready", flush=True)
    while not os.path.exists(STOP):
        time.sleep(0.2)


def floor():
    """An empty program on every hook the watcher attaches, entry and return
    where the watcher has both: what any kprobe tool pays at the least."""
    from bcc import BPF
    b = BPF(text="int floor_empty(struct pt_regs *ctx) { return 0; }\n"
                 "int floor_empty_ret(struct pt_regs *ctx) { return 0; }\n")
    for h in watcher_symbols():
        b.attach_kprobe(event=h.symbol.encode(), fn_name=b"floor_empty")
        if h.has_return():
            b.attach_kretprobe(event=h.symbol.encode(), fn_name=b"floor_empty_ret")
    wait_stop()


def floor_fentry():
    """The same with empty fentry/fexit programs, on the hooks the watcher's
    fentry backend takes (the others keep the empty kprobes)."""
    from bcc import BPF
    from skbtrace.kernel import btf
    hs = watcher_symbols()
    loader.choose_backends(hs, "fentry", btf.BTF.load(), (True, None))
    text = []
    for h in hs:
        if h.backend == hooks.FENTRY:
            text.append("KFUNC_PROBE(%s) { return 0; }" % h.symbol)
            if h.has_return():
                text.append("KRETFUNC_PROBE(%s) { return 0; }" % h.symbol)
    text.append("int floor_empty(struct pt_regs *ctx) { return 0; }")
    text.append("int floor_empty_ret(struct pt_regs *ctx) { return 0; }")
    b = BPF(text="\n".join(text) + "\n")     # bcc attaches the kfunc__ programs
    for h in hs:
        if h.backend != hooks.FENTRY:
            b.attach_kprobe(event=h.symbol.encode(), fn_name=b"floor_empty")
            if h.has_return():
                b.attach_kretprobe(event=h.symbol.encode(), fn_name=b"floor_empty_ret")
    wait_stop()


BT_ENTRY = """kprobe:%(sym)s {
  $s = (struct sk_buff *)%(arg)s;
  $sh = (struct skb_shared_info *)($s->head + $s->end);
  @e[tid, %(id)d] = ($sh->frag_list, $sh->gso_size, $sh->gso_type, $sh->nr_frags, $s->data_len, $s);
  if ($sh->gso_size > 0 && $sh->frag_list == 0 && $sh->nr_frags == 0 && $s->data_len == 0) {
    printf("INCONSISTENT %(name)s %%p gso_size=%%d gso_type=0x%%x len=%%d\\n", $s, $sh->gso_size, $sh->gso_type, $s->len);
  }
}
"""
BT_RET = """kretprobe:%(sym)s /@e[tid, %(id)d].0 != 0 || @e[tid, %(id)d].1 != 0/ {
  $v = @e[tid, %(id)d];
  $s = (struct sk_buff *)$v.5;
  $sh = (struct skb_shared_info *)($s->head + $s->end);
  if ($sh->frag_list != $v.0) {
    printf("CHANGE %(name)s %%p %%p -> %%p gso_size=%%d\\n", $s, $v.0, $sh->frag_list, $sh->gso_size);
  }
  delete(@e[tid, %(id)d]);
}
"""


def bpftrace_script():
    """The peer: the watcher's hooks in bpftrace, reading the same fields
    (frag_list, gso_size, gso_type, nr_frags, data_len at entry; frag_list
    again at return) and printing the seeds' rule and frag_list changes."""
    parts = []
    for h in watcher_symbols():
        if h.kind == hooks.BRACKET:
            continue
        arg = "arg%d" % (h.skb - 1) if isinstance(h.skb, int) else "arg0"
        d = {"sym": h.symbol, "arg": arg, "id": h.hook_id, "name": h.name}
        parts.append(BT_ENTRY % d)
        if h.has_return():
            parts.append(BT_RET % d)
    return "\n".join(parts)


def bpftrace():
    path = "/tmp/bench-peer.bt"
    with open(path, "w") as f:
        f.write(bpftrace_script())
    out = "/tmp/bench-peer.out"
    # its output (and the "Attaching N probes..." line) to a file: a pipe
    # nobody reads would block it
    p = subprocess.Popen(["bpftrace", "-o", out, path], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, universal_newlines=True)
    for _ in range(3000):
        if p.poll() is not None:
            sys.stderr.write(p.stderr.read())
            sys.exit(1)
        if os.path.exists(out) and "Attaching" in open(out).read(4096):
            break
        time.sleep(0.2)
    time.sleep(2)                   # attaching many kprobes takes a while under TCG
    wait_stop()
    p.terminate()
    p.wait()


# --- an event source (perf buffers or a ring buffer) -------------------------

SOURCE = r"""
#include "skb_event.h"
#if RINGBUF_PAGES
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
BPF_ARRAY(tmpl, struct skb_event, 1);
BPF_ARRAY(gen, u32, 1);
BPF_PERCPU_ARRAY(sent, u64, 2);
int emit(struct pt_regs *ctx)
{
    u32 zero = 0, one = 1;
    struct skb_event *t = tmpl.lookup(&zero);
    u32 *pid = gen.lookup(&zero);
    u64 *v;
    if (!t || !pid)
        return 0;
    if ((bpf_get_current_pid_tgid() >> 32) != *pid)
        return 0;
    t->ts_ns = bpf_ktime_get_ns();
    v = sent.lookup(&zero);
    if (v)
        (*v)++;
#if RINGBUF_PAGES
    if (events.ringbuf_output(t, sizeof(*t), 0) < 0) {
#else
    if (events.perf_submit(ctx, t, sizeof(*t)) < 0) {
#endif
        v = sent.lookup(&one);
        if (v)
            (*v)++;
    }
    return 0;
}
"""


def template():
    """A real-looking record: the watcher's CLEAR of a frag_list by
    bpf_skb_pull_data, with a flow, as the lab's fixtures show."""
    hs = dict((h.name, h) for h in hooks.watcher_hooks())
    e = event.SkbEvent()
    e.event = event.EV_CLEAR
    e.hook_id = hs["bpf_skb_pull_data"].hook_id
    e.last_hook = hs["__pskb_pull_tail"].hook_id + 1
    e.skb, e.head = 0xffff88801e727400, 0xffff88801e600000
    e.frag_list_before = 0xffff88801e71e400
    e.gso_size_before = e.gso_size_after = 1448
    e.gso_type_before = e.gso_type_after = 1
    e.severity, e.reasons = event.SEV_WARNING, event.RSN_NULL_FRAGLIST_GSO
    e.len, e.data_len_before, e.nr_frags_before = 29026, 27578, 0
    e.family, e.l4proto = 4, 6
    e.saddr[:4] = [198, 18, 1, 1]
    e.daddr[:4] = [198, 18, 2, 1]
    e.sport, e.dport = 40000, 9000
    e.protocol = 0x0800
    e.comm = b"ksoftirqd/0"
    return e


GENERATOR = r'''
import os, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
sys.stdin.readline()
t0 = time.time(); end = t0 + seconds; n = 0
while time.time() < end:
    for _ in range(64):
        os.getppid()
    n += 64
    if rate:
        ahead = n / rate - (time.time() - t0)
        if ahead > 0:
            time.sleep(ahead)
'''


class Source(object):
    """A separate process calling getppid() is the trigger (its own CPU,
    not this process's GIL): one event per call from a kprobe on the
    syscall, for that process only (its pid in the gen map). Compiled once
    (a compile takes tens of seconds under TCG) and run once per
    measurement, each with a generator of its own."""

    def __init__(self, page_cnt=64, ring=False):
        from bcc import BPF
        # a ring buffer as large as the perf buffers together, as the tools
        # size it (skbtrace.live.loader.ring_pages)
        self.ring_pages = loader.ring_pages(page_cnt) if ring else 0
        text = "#define RINGBUF_PAGES %d\n" % self.ring_pages + SOURCE
        with open(os.path.join(ROOT, "bpf", "skb_event.h")) as f:
            text = text.replace('#include "skb_event.h"', f.read())
        self.b = BPF(text=text)
        self.b["tmpl"][ctypes.c_int(0)] = template()
        self.b.attach_kprobe(event=self.b.get_syscall_fnname("getppid"), fn_name="emit")
        self.page_cnt = page_cnt
        self.lost = 0
        self.callback = None

        def lost(n):
            self.lost += n

        def perf_cb(cpu, data, size):
            self.callback(cpu, data, size)

        def ring_cb(_ctx, data, size):
            self.callback(-1, data, size)
            return 0
        if self.ring_pages:
            self.b["events"].open_ring_buffer(ring_cb)
        else:
            self.b["events"].open_perf_buffer(perf_cb, page_cnt=page_cnt, lost_cb=lost)

    @property
    def name(self):
        return "ring" if self.ring_pages else "perf"

    def generator(self, rate, seconds):
        gen = subprocess.Popen([sys.executable, "-c", GENERATOR, str(rate), str(seconds)],
                               stdin=subprocess.PIPE)
        self.b["gen"][ctypes.c_int(0)] = ctypes.c_uint32(gen.pid)
        return gen

    def poll(self, timeout):
        if self.ring_pages:
            self.b.ring_buffer_poll(timeout=timeout)
        else:
            self.b.perf_buffer_poll(timeout=timeout)

    def counts(self):
        """(records the program tried to send, sends that failed, records
        the perf lost callback reported), since the start."""
        v = [sum(int(x) for x in self.b["sent"][ctypes.c_int(i)]) for i in (0, 1)]
        return v[0], v[1], self.lost


def emit_cost():
    """(run_cnt, run_time_ns) of the source's program, from the kernel's own
    statistics (kernel.bpf_stats_enabled): what a record costs to send."""
    out = subprocess.run(["bpftool", "-j", "prog", "show", "name", "emit"],
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    progs = json.loads(out or "[]")
    progs = progs if isinstance(progs, list) else [progs]
    return (sum(p.get("run_cnt", 0) for p in progs),
            sum(p.get("run_time_ns", 0) for p in progs))


Run = collections.namedtuple("Run", "received sent lost seconds lost_by_second")


def consume(src, callback, rate, seconds):
    """Start a generator (rate events/s, 0: as fast as it can, for seconds),
    read until it is done and its records are read. lost_by_second: {second
    of the run: records lost in it}, where the losses happened, as the
    consumer learnt of them (a perf buffer's lost callback, a ring buffer's
    failed reservations counted by the program, read once a second)."""
    got = [0]
    by_second = collections.OrderedDict()
    seen = [0]
    check = [0.0]
    t0 = [0.0]

    def note_losses(now):
        """Once a second at most: the losses since the last look, put in
        the second of the run they were seen in."""
        if now < check[0]:
            return
        check[0] = now + 1
        _sent, fail, lost = src.counts()
        n = max(fail - fail0, lost - lost0)
        if n > seen[0]:
            sec = int(now - t0[0])
            by_second[sec] = by_second.get(sec, 0) + n - seen[0]
            seen[0] = n

    def cb(cpu, data, size):
        got[0] += 1
        callback(cpu, data, size)
        # a ring buffer's poll reads on while records keep coming: look
        # from inside it too
        if not got[0] & 255:
            note_losses(time.time())
    after_poll = getattr(callback, "after_poll", None) or (lambda: None)
    src.callback = cb
    sent0, fail0, lost0 = src.counts()
    gen = src.generator(rate, seconds)
    t0[0] = time.time()
    check[0] = t0[0] + 1
    gen.stdin.write(b"go\n")
    gen.stdin.close()
    while gen.poll() is None:
        src.poll(100)
        after_poll()
        note_losses(time.time())
    src.poll(0)
    after_poll()
    dt = time.time() - t0[0]
    check[0] = 0
    note_losses(time.time())
    sent, _fail, _lost = src.counts()
    return Run(got[0], sent - sent0, seen[0], dt, by_second)


def pipeline(kind):
    """The tools' own path as they run it: the record's copy
    (loader.Program.open()), the fast path (Formatter.handler(),
    skbtrace/output/fastpath.py) and the Sink, flushed once per poll."""
    hs = hooks.watcher_hooks()
    st = Stats(hs, WATCHER_EVENTS)
    fmt = formatter.Formatter(Clock(), gso.DEFAULT, verbose=kind == "verbose",
                              json_mode=kind == "json")
    handle = fmt.handler(decoder.Decoder(hs).by_id, st)
    # the tool's stdout pointed at /dev/null (-o refuses a device)
    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
    try:
        sink = Sink()
    finally:
        sys.stdout = stdout
    write = sink.write_ascii if fmt.json_mode else sink.write_text
    size = ctypes.sizeof(event.SkbEvent) + 8 * event.STACK_FRAMES
    arrays = {}

    def cb(_cpu, data, data_size):
        n = size if data_size > size else data_size
        array = arrays.get(n)
        if array is None:
            array = arrays[n] = ctypes.c_char * n
        write(handle(array.from_address(data).raw))
    cb.after_poll = sink.flush      # as the runner flushes, once per poll
    return cb


def ring_supported():
    from bcc import BPF
    from skbtrace.kernel import btf
    try:
        kb = btf.BTF.load()
    except btf.BTFError:
        kb = None
    return loader.ringbuf_support(BPF, kb)


def buffers():
    """[ring?] for each buffer this kernel has, the default (ring where there
    is one) first; and why there is no ring buffer (None when there is)."""
    ok, why = ring_supported()
    if not ok:
        print("(no ring buffer here: %s)" % why)
    return ([True, False] if ok else [False]), why


def result(key, value):
    """A line bench_overhead_lab.py reads back (the figures it turns into
    the verdict), after the human-readable ones."""
    print("RESULT %s %s" % (key, json.dumps(value)), flush=True)


def show_losses(by_second):
    return ", ".join("%ds %d" % kv for kv in by_second.items()) or "none"


def loss(seconds, loss_seconds, rate, sweep):
    """The watcher's text path as the consumer, default buffer size: the
    issue's case (rate events/s for loss_seconds), then, with sweep, each
    rate of a sweep for seconds to show where losses start."""
    rings, why = buffers()
    print("%-6s %-10s %7s %10s %10s %10s %8s %12s  %s" % (
        "buffer", "asked ev/s", "seconds", "sent", "received", "lost", "ev/s", "ns/record",
        "lost in second s of the run"))
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"])
    out = {"default": "perf" if why else "ring", "ring_why": why, "rate": rate,
           "seconds": loss_seconds}
    for ring in rings:
        src = Source(ring=ring)
        cases = [(rate, loss_seconds)]
        if sweep:
            cases += [(r, seconds) for r in (2000, 5000, 10000, 20000, 50000, 100000, 0)]
        for i, (r, secs) in enumerate(cases):
            cnt0, ns0 = emit_cost()
            run = consume(src, pipeline("text"), r, secs)
            cnt, ns = emit_cost()
            print("%-6s %-10s %7d %10d %10d %10d %8.0f %12.0f  %s" % (
                src.name, r or "max", secs, run.sent, run.received, run.lost,
                run.received / run.seconds,
                (ns - ns0) / (cnt - cnt0) if cnt > cnt0 else float("nan"),
                show_losses(run.lost_by_second)), flush=True)
            if i == 0:
                out[src.name] = {"sent": run.sent, "received": run.received, "lost": run.lost,
                                 "lost_by_second": list(run.lost_by_second.items())}
        src.b.cleanup()
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"])
    result("loss", out)


def userspace(seconds, reps):
    """Each consumer in turns (empty, bcc print, tool text, tool --json,
    then again), reps times per buffer, on one source per buffer."""
    out = open(os.devnull, "w")

    def empty(_cpu, _data, _size):
        pass

    def bcc_plain(src):
        table = src.b["events"]

        def cb(_cpu, data, _size):
            e = table.event(data)
            print("%d %x %d %d" % (e.event, e.skb, e.gso_size_after, e.len), file=out, flush=True)
        return cb
    consumers = (("empty", "empty callback (bcc floor)", lambda s: empty),
                 ("bcc", "bcc table.event + print", bcc_plain),
                 ("text", "watcher text", lambda s: pipeline("text")),
                 ("json", "watcher --json", lambda s: pipeline("json")))
    rings, why = buffers()
    print("%-6s %3s %-34s %10s %10s %10s" % ("buffer", "rep", "consumer (generator as fast "
                                             "as it can)", "received", "lost", "ev/s"))
    res = {"ring_why": why}
    for ring in rings:
        src = Source(page_cnt=1024, ring=ring)
        rates = res[src.name] = dict((key, []) for key, _l, _m in consumers)
        for rep in range(reps):
            for key, label, make in consumers:
                run = consume(src, make(src), 0, seconds)
                rates[key].append(run.received / run.seconds)
                print("%-6s %3d %-34s %10d %10d %10.0f" % (
                    src.name, rep + 1, label, run.received, run.lost, rates[key][-1]),
                    flush=True)
        src.b.cleanup()
    result("userspace", res)


def caps():
    """What this kernel and bcc can run: a ring buffer, fentry."""
    from bcc import BPF
    ring = ring_supported()
    fentry = loader.kfunc_support(BPF)
    result("caps", {"ring": list(ring), "fentry": list(fentry)})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["floor", "floor-fentry", "bpftrace", "loss", "userspace",
                                    "caps"])
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--loss-seconds", type=int, default=30)
    p.add_argument("--loss-rate", type=int, default=20000)
    p.add_argument("--no-sweep", action="store_true")
    a = p.parse_args()
    if a.mode == "floor":
        floor()
    elif a.mode == "floor-fentry":
        floor_fentry()
    elif a.mode == "bpftrace":
        bpftrace()
    elif a.mode == "loss":
        loss(a.seconds, a.loss_seconds, a.loss_rate, not a.no_sweep)
    elif a.mode == "caps":
        caps()
    else:
        userspace(a.seconds, a.reps)


if __name__ == "__main__":
    main()
