"""The guest half of tests/bench/bench_overhead_lab.py (runs inside a lab
guest, with bcc): the floor and peer programs on the watcher's hooks, and an
event source (perf buffers or a BPF ring buffer, as the tools build them) for
the loss and user-space figures.

    python3 tests/bench/guest_bench.py floor|floor-fentry|bpftrace   # until /tmp/bench-stop exists
    python3 tests/bench/guest_bench.py loss|userspace [--seconds 5]
"""
import argparse
import ctypes
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


# --- a perf-buffer event source ------------------------------------------------

SOURCE = r"""
#include "skb_event.h"
#if RINGBUF_PAGES
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
BPF_ARRAY(tmpl, struct skb_event, 1);
BPF_PERCPU_ARRAY(sent, u64, 2);
int emit(struct pt_regs *ctx)
{
    u32 zero = 0, one = 1;
    struct skb_event *t = tmpl.lookup(&zero);
    u64 *v;
    if (!t)
        return 0;
    if ((bpf_get_current_pid_tgid() >> 32) != GEN_PID)
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
    syscall, for that process only."""

    def __init__(self, rate, seconds, page_cnt=64, ring=False):
        from bcc import BPF
        self.gen = subprocess.Popen([sys.executable, "-c", GENERATOR, str(rate), str(seconds)],
                                    stdin=subprocess.PIPE)
        # a ring buffer as large as the perf buffers together, as the tools
        # size it (skbtrace.live.loader.ring_pages)
        self.ring_pages = loader.ring_pages(page_cnt) if ring else 0
        text = SOURCE.replace("GEN_PID", str(self.gen.pid))
        text = "#define RINGBUF_PAGES %d\n" % self.ring_pages + text
        with open(os.path.join(ROOT, "bpf", "skb_event.h")) as f:
            text = text.replace('#include "skb_event.h"', f.read())
        self.b = BPF(text=text)
        self.b["tmpl"][ctypes.c_int(0)] = template()
        self.b.attach_kprobe(event=self.b.get_syscall_fnname("getppid"), fn_name="emit")
        self.page_cnt = page_cnt
        self.lost = 0

    def open(self, callback):
        def lost(n):
            self.lost += n

        def ring_cb(_ctx, data, size):
            callback(-1, data, size)
            return 0
        if self.ring_pages:
            self.b["events"].open_ring_buffer(ring_cb)
        else:
            self.b["events"].open_perf_buffer(callback, page_cnt=self.page_cnt, lost_cb=lost)

    def poll(self, timeout):
        if self.ring_pages:
            self.b.ring_buffer_poll(timeout=timeout)
        else:
            self.b.perf_buffer_poll(timeout=timeout)

    def sent(self):
        v = [sum(int(x) for x in self.b["sent"][ctypes.c_int(i)]) for i in (0, 1)]
        return v[0], v[1]


def emit_cost():
    """(run_cnt, run_time_ns) of the source's program, from the kernel's own
    statistics (kernel.bpf_stats_enabled): what a record costs to send."""
    import json
    out = subprocess.run(["bpftool", "-j", "prog", "show", "name", "emit"],
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    progs = json.loads(out or "[]")
    progs = progs if isinstance(progs, list) else [progs]
    return (sum(p.get("run_cnt", 0) for p in progs),
            sum(p.get("run_time_ns", 0) for p in progs))


def consume(src, callback):
    """Start the generator, read until it is done; (received, sent, lost,
    seconds)."""
    got = [0]

    def cb(cpu, data, size):
        got[0] += 1
        callback(cpu, data, size)
    after_poll = getattr(callback, "after_poll", None) or (lambda: None)
    src.open(cb)
    t0 = time.time()
    src.gen.stdin.write(b"go\n")
    src.gen.stdin.close()
    while src.gen.poll() is None:
        src.poll(100)
        after_poll()
    src.poll(0)
    after_poll()
    dt = time.time() - t0
    sent, fail = src.sent()
    return got[0], sent, max(fail, src.lost), dt


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
    ok, why = ring_supported()
    if not ok:
        print("(no ring buffer here: %s)" % why)
    return [False, True] if ok else [False]


def loss(seconds):
    """The watcher's text path as the consumer, default buffer size."""
    print("%-6s %-10s %10s %10s %10s %8s %12s" % ("buffer", "asked ev/s", "sent", "received",
                                                  "lost", "ev/s", "ns/record"))
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"])
    for ring in buffers():
        for rate in (2000, 5000, 10000, 20000, 50000, 100000, 0):
            src = Source(rate, seconds, ring=ring)
            got, sent, lost, dt = consume(src, pipeline("text"))
            cnt, ns = emit_cost()
            print("%-6s %-10s %10d %10d %10d %8.0f %12.0f" % (
                "ring" if ring else "perf", rate or "max", sent, got, lost, got / dt,
                ns / cnt if cnt else float("nan")))
            src.b.cleanup()
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"])


def userspace(seconds):
    from bcc import BPF  # noqa: F401
    out = open(os.devnull, "w")

    def empty(_cpu, _data, _size):
        pass

    def bcc_plain(src):
        table = src.b["events"]

        def cb(_cpu, data, _size):
            e = table.event(data)
            print("%d %x %d %d" % (e.event, e.skb, e.gso_size_after, e.len), file=out, flush=True)
        return cb
    print("%-6s %-34s %10s %10s %10s" % ("buffer", "consumer (generator as fast as it can)",
                                         "received", "lost", "ev/s"))
    for ring in buffers():
        for label, make in (("empty callback (bcc floor)", lambda s: empty),
                            ("bcc table.event + print", bcc_plain),
                            ("watcher text", lambda s: pipeline("text")),
                            ("watcher --verbose", lambda s: pipeline("verbose")),
                            ("watcher --json", lambda s: pipeline("json"))):
            src = Source(0, seconds, page_cnt=1024, ring=ring)
            got, sent, lost, dt = consume(src, make(src))
            print("%-6s %-34s %10d %10d %10.0f" % ("ring" if ring else "perf", label, got, lost,
                                                  got / dt))
            src.b.cleanup()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["floor", "floor-fentry", "bpftrace", "loss", "userspace"])
    p.add_argument("--seconds", type=int, default=5)
    a = p.parse_args()
    if a.mode == "floor":
        floor()
    elif a.mode == "floor-fentry":
        floor_fentry()
    elif a.mode == "bpftrace":
        bpftrace()
    elif a.mode == "loss":
        loss(a.seconds)
    else:
        userspace(a.seconds)


if __name__ == "__main__":
    main()
