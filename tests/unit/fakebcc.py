"""A stand-in for the bcc module, for testing the run loop (signals, pipes,
statistics, skipped hooks) without a kernel. It proves nothing about the BPF
side: tests/lab runs the real tools on real kernels for that."""
import ctypes
import os
import re
import signal
import time

from skbtrace.kernel import event


class FakeTable(object):
    def __init__(self, bpf, name):
        self.bpf = bpf
        self.name = name

    class HookCount(ctypes.Structure):
        """bpf/skb_common.h, struct hook_count_t"""
        _fields_ = [("hits", ctypes.c_uint64), ("filtered", ctypes.c_uint64)]

    def __getitem__(self, key):
        idx = key.value if isinstance(key, ctypes.c_int) else key
        if self.name == "hook_hits":
            # set as ("hook_hits", id) -> hits by CPU, ("hook_hits.filtered", id)
            hits = self.bpf.percpu.get((self.name, idx), [0, 0])
            filtered = self.bpf.percpu.get((self.name + ".filtered", idx), [0] * len(hits))
            return [self.HookCount(h, f) for h, f in zip(hits, filtered)]
        return self.bpf.percpu.get((self.name, idx), [0, 0])

    def __setitem__(self, key, value):
        if self.name == "fr_names":
            self.bpf.fr_names[key.value] = value.s
            return
        self.bpf.prog_array[key.value] = value.value

    class Leaf(ctypes.Structure):
        _fields_ = [("s", ctypes.c_char * 32)]

    def open_perf_buffer(self, cb, page_cnt=8, lost_cb=None):
        assert page_cnt & (page_cnt - 1) == 0
        self.bpf.cb = cb
        self.bpf.lost_cb = lost_cb

    def open_ring_buffer(self, cb, ctx=None):
        self.bpf.ring_cb = cb


class BPF(object):
    available = []          # kernel function names this fake kernel has
    script = []             # list of polls: each a list of event bytes
    stop_signal = signal.SIGTERM
    on_poll = {}            # poll number -> callable run before that poll's events
    poll_s = 0              # time each poll takes, as the real one waits for events
    lost = 0
    percpu = {}
    instances = []

    def __init__(self, text=None, **kw):
        self.text = text
        self.attached = []
        self.cb = None
        self.lost_cb = None
        self.polls = 0
        self.prog_array = {}
        self.fr_names = {}
        BPF.instances.append(self)

    @classmethod
    def get_kprobe_functions(cls, regex):
        rx = re.compile(regex.decode())
        return [n.encode() for n in cls.available if rx.match(n)]

    KPROBE = 2

    def load_func(self, name, prog_type):
        self.stages_loaded = getattr(self, "stages_loaded", []) + [name.decode()]

        class Fn(object):
            fd = 100 + len(self.stages_loaded)
        return Fn()

    def attach_kprobe(self, event=None, fn_name=None):
        self.attached.append(("kprobe", event.decode(), fn_name.decode()))

    def attach_kretprobe(self, event=None, fn_name=None, maxactive=0):
        self.attached.append(("kretprobe", event.decode(), fn_name.decode()))

    def detach_kprobe(self, event=None):
        pass

    def __getitem__(self, name):
        return FakeTable(self, name)

    def ring_buffer_poll(self, timeout=-1):
        """A ring buffer has no lost callback: the script's ints are ignored
        here; losses are the kernel's counters (on_poll changes them)."""
        if self.polls in BPF.on_poll:
            BPF.on_poll[self.polls]()
        if self.polls < len(BPF.script):
            for data in BPF.script[self.polls]:
                if isinstance(data, int):
                    continue
                buf = ctypes.create_string_buffer(data, len(data))
                # as bcc's CFUNCTYPE(c_int, c_void_p, c_void_p, c_int) callback
                # gets it: the address as an int
                assert self.ring_cb(None, ctypes.addressof(buf), len(data)) == 0
        elif self.polls == len(BPF.script):
            os.kill(os.getpid(), BPF.stop_signal)
        self.polls += 1

    def perf_buffer_poll(self, timeout=-1):
        if BPF.poll_s and timeout:
            time.sleep(BPF.poll_s)
        if self.polls in BPF.on_poll:
            BPF.on_poll[self.polls]()
        if self.polls < len(BPF.script):
            for data in BPF.script[self.polls]:
                if isinstance(data, int):       # a PERF_RECORD_LOST among the records
                    self.lost_cb(data)
                    continue
                buf = ctypes.create_string_buffer(data, len(data))
                # as bcc's CFUNCTYPE(None, py_object, c_void_p, c_int) callback
                # gets it: the address as an int
                self.cb(0, ctypes.addressof(buf), len(data))
        elif self.polls == len(BPF.script):
            if BPF.lost and self.lost_cb:
                self.lost_cb(BPF.lost)
            os.kill(os.getpid(), BPF.stop_signal)
        self.polls += 1

    def ksym(self, addr, show_offset=False):
        return b"fake_fn+0x%x" % (addr & 0xff)


class Module(object):
    BPF = BPF


def install(monkeypatch=None):
    """Make skbtrace.live.loader.preflight() return this fake."""
    from skbtrace.live import loader
    mod = Module()
    def scan(patterns):
        found = dict((p, sorted(n for n in BPF.available if re.match(p, n))) for p in patterns)
        return found, dict((n, 1) for n in BPF.available), {}
    # no ring buffer unless a test says so: the host's BTF must not decide
    ring = lambda BPF, kernel_btf: (False, "fake kernel: no ring buffer")  # noqa: E731
    if monkeypatch is not None:
        monkeypatch.setattr(loader, "ringbuf_support", ring)
        monkeypatch.setattr(loader, "preflight", lambda: mod)
        monkeypatch.setattr(loader, "scan_kallsyms", scan)
    else:
        loader.preflight = lambda: mod
        loader.ringbuf_support = ring
        loader.scan_kallsyms = scan
    return mod
