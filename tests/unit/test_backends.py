"""Backend choice (fentry/fexit or kprobe/kretprobe) per hook, and the
fallback when the kernel refuses a trampoline. The lab runs both backends
on real kernels (tests/lab/test_watcher_lab.py); this checks the decisions."""
import pytest

from skbtrace.kernel import hooks
from skbtrace.live import loader, runner
from skbtrace.errors import EnvError


class FakeBTF(object):
    def __init__(self, funcs):
        self.funcs = funcs

    def func_proto(self, name):
        n = self.funcs.get(name)
        return None if n is None else (n, name != "skb_condense")


def resolved(names):
    hs = dict((h.name, h) for h in hooks.detector_hooks())
    for n, sym in names.items():
        hs[n].symbol = sym
    return hs


def test_auto_takes_fentry_where_btf_has_the_function():
    hs = resolved({"skb_segment": "skb_segment", "receive_buf": "receive_buf",
                   "inet_gro_complete": "inet_gro_complete",
                   "bpf_skb_net_grow": "bpf_skb_net_grow.isra.0"})
    btf = FakeBTF({"skb_segment": 2, "inet_gro_complete": 2, "receive_buf": 7})
    loader.choose_backends(list(hs.values()), "auto", btf, (True, None))
    assert hs["skb_segment"].backend == hooks.FENTRY and hs["skb_segment"].nargs == 2
    assert hs["inet_gro_complete"].backend == hooks.FENTRY
    # a module function keeps its kprobe, and says why
    assert hs["receive_buf"].backend == hooks.KPROBE
    assert "module virtio_net" in hs["receive_buf"].backend_why
    # a suffixed copy is not the function BTF describes
    assert hs["bpf_skb_net_grow"].backend == hooks.KPROBE
    assert "not in the kernel's BTF" in hs["bpf_skb_net_grow"].backend_why
    # unresolved hooks are left alone
    assert hs["udp_tunnel_xmit_skb"].backend == hooks.KPROBE


def test_kprobe_mode_and_kernels_without_trampolines():
    hs = resolved({"skb_segment": "skb_segment"})
    btf = FakeBTF({"skb_segment": 2})
    loader.choose_backends(list(hs.values()), "kprobe", btf, (True, None))
    assert hs["skb_segment"].backend == hooks.KPROBE
    loader.choose_backends(list(hs.values()), "auto", btf, (False, "no BPF trampolines here"))
    assert hs["skb_segment"].backend == hooks.KPROBE
    assert hs["skb_segment"].backend_why == "no BPF trampolines here"
    with pytest.raises(EnvError) as e:
        loader.choose_backends(list(hs.values()), "fentry", btf, (False, "no kernel BTF"))
    assert str(e.value) == "--backend fentry: no kernel BTF"


def test_kfunc_support_needs_what_the_loader_uses():
    class Old(object):
        pass
    assert loader.kfunc_support(Old)[0] is False

    class New(object):
        ok = True

        @staticmethod
        def support_kfunc():
            return New.ok

        def attach_kfunc(self):
            pass

        def _trace_autoload(self):
            pass
    assert loader.kfunc_support(New) == (True, None)
    New.ok = False
    ok, why = loader.kfunc_support(New)
    assert not ok and "trampolines" in why


class RefusingBPF(object):
    """attach_kfunc refuses one function, as a kernel does for a function
    it cannot trampoline (notrace, or not in ftrace's list)."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.calls = []

    def attach_kfunc(self, fn_name):
        self.calls.append(("kfunc", fn_name))
        if fn_name.endswith(self.refuse):
            raise Exception("Failed to attach BPF to entry kernel func")

    def attach_kretfunc(self, fn_name):
        self.calls.append(("kretfunc", fn_name))

    def detach_kfunc(self, fn_name):
        self.calls.append(("detach", fn_name))

    def attach_kprobe(self, event, fn_name):
        self.calls.append(("kprobe", fn_name))

    def attach_kretprobe(self, event, fn_name, **kw):
        self.calls.append(("kretprobe", fn_name))


def test_refused_trampoline_falls_back_to_the_kprobe_program():
    hs = resolved({"skb_segment": "skb_segment", "inet_gro_complete": "inet_gro_complete"})
    present = [hs["skb_segment"], hs["inet_gro_complete"]]
    loader.choose_backends(present, "auto", FakeBTF({"skb_segment": 2,
                                                     "inet_gro_complete": 2}), (True, None))
    prog = loader.Program(None, "", present)
    prog.bpf = RefusingBPF(b"inet_gro_complete")
    prog._kretprobe_kwargs = lambda: {}
    prog.attach()
    assert ("kfunc", b"kfunc__skb_segment") in prog.bpf.calls
    assert hs["skb_segment"].backend == hooks.FENTRY
    g = hs["inet_gro_complete"]
    assert g.backend == hooks.KPROBE and "refused fentry" in g.backend_why
    assert ("kprobe", b"enter_inet_gro_complete") in prog.bpf.calls
    assert ("kretprobe", b"leave_inet_gro_complete") in prog.bpf.calls
    lines = runner.backend_lines(prog.attached, "auto")
    assert lines == ["backend fentry (--backend auto): skb_segment",
                     "backend kprobe (--backend auto): inet_gro_complete",
                     "  not fentry: inet_gro_complete: the kernel refused fentry: "
                     "Failed to attach BPF to entry kernel func"]


def test_stacks_start_at_the_hooked_function():
    assert loader.trim_bpf_frames(["bpf_prog_6deef7357e7b4530_kfunc__skb_segment+0x5c",
                                   "bpf_trampoline_6442525954+0x47", "skb_segment+0x5",
                                   "tcp_gso_segment+0xd1"]) == ["skb_segment+0x5",
                                                                "tcp_gso_segment+0xd1"]
    assert loader.trim_bpf_frames(["skb_segment+0x1", "x+0x2"]) == ["skb_segment+0x1", "x+0x2"]


def test_void_function_has_no_return_slot():
    hs = dict((h.name, h) for h in hooks.watcher_hooks())
    c = hs["skb_condense"]
    c.symbol = "skb_condense"
    loader.choose_backends([c], "auto", FakeBTF({"skb_condense": 1}), (True, None))
    assert c.backend == hooks.FENTRY and c.returns is False
    assert c.c_line().splitlines()[3] == \
        "HOOK_MUTATE_RET(FENTRY, skb_condense, %d, ctx[0], 0, 0, 0, 0)" % c.hook_id
    # and the kprobe program does not report the garbage in the return register
    loader.choose_backends([c], "kprobe", FakeBTF({"skb_condense": 1}), (True, None))
    assert c.c_line().splitlines() == [
        "HOOK_MUTATE(KPROBE, skb_condense, %d, PT_REGS_PARM1(ctx), 0, 0, 0, 0)" % c.hook_id,
        "HOOK_MUTATE_RET(KPROBE, skb_condense, %d, PT_REGS_PARM1(ctx), 0, 0, 0, 0)" % c.hook_id]


# --- the event buffer (--buffer) ----------------------------------------------

class EnumBTF(object):
    def __init__(self, members):
        self.members = members

    def enum_containing(self, member):
        return dict((m, i) for i, m in enumerate(self.members)) if member in self.members \
            else None


class RingBPF(object):
    def ring_buffer_poll(self, timeout=-1):
        pass


def test_ringbuf_support_asks_btf_then_kallsyms(tmp_path):
    ks = tmp_path / "kallsyms"
    assert loader.ringbuf_support(object, None, str(ks)) == (
        False, "this bcc has no ring buffer support (BPF.ring_buffer_poll)")
    assert loader.ringbuf_support(RingBPF, EnumBTF(["BPF_MAP_TYPE_RINGBUF"])) == (True, None)
    ok, why = loader.ringbuf_support(RingBPF, EnumBTF(["BPF_MAP_TYPE_HASH"]))
    assert not ok and "BPF_MAP_TYPE_RINGBUF" in why
    # no BTF (RHEL 8 kernels without it): the helper in kallsyms decides
    ks.write_text("ffffffff81234560 T bpf_ringbuf_output_x\nffffffff81234567 T skb_segment\n")
    ok, why = loader.ringbuf_support(RingBPF, None, str(ks))
    assert not ok and "no bpf_ringbuf_output in kallsyms" in why
    ks.write_text("ffffffff81234560 T bpf_ringbuf_output\n")
    assert loader.ringbuf_support(RingBPF, None, str(ks)) == (True, None)
    ok, why = loader.ringbuf_support(RingBPF, None, str(tmp_path / "missing"))
    assert not ok and why.startswith("cannot read ")


@pytest.mark.parametrize("per_cpu,ncpus,pages", [(64, 2, 128), (64, 3, 256), (1, 1, 1),
                                                  (8, 96, 1024), (64, 6, 512)])
def test_ring_buffer_is_the_perf_buffers_memory_to_a_power_of_two(per_cpu, ncpus, pages):
    assert loader.ring_pages(per_cpu, ncpus) == pages
