"""Every hook of both tools, declared once.

A hook names the kernel function (and the names it had in other kernels), the
kind of probe the C side instantiates for it (bpf/*.c defines one HOOK_<KIND>
macro per kind), the event it reports, where the skb and the argument worth
showing are. The loader turns the hooks present in the running kernel into
HOOK_<KIND>(...) lines; hook ids are positions in the tool's table.
"""
import re

from skbtrace.kernel import event as ev

# Backends: how a hook is attached (bpf/skb_common.h, <BACKEND>_ENTER/_RUN).
KPROBE, FENTRY = "kprobe", "fentry"
BACKENDS = (KPROBE, FENTRY)
# The n-th argument (from 1) and the return value, as C on the hook's ctx:
# struct pt_regs * for kprobes, the u64 argument array of a BPF trampoline
# (the return value follows the arguments) for fentry/fexit.
_ARG = {KPROBE: lambda n: "PT_REGS_PARM%d(ctx)" % n, FENTRY: lambda n: "ctx[%d]" % (n - 1)}
_ARG_RE = re.compile(r"\bARG(\d)\b")

# kinds, as the C macros are named
MUTATE, COPY, CONSUME, SEGMENT, BRACKET = "MUTATE", "COPY", "CONSUME", "SEGMENT", "BRACKET"
# detector kinds (bpf/skb_vxlan_source_detector.c); there the flags slot
# carries the EV_* number the hook reports.
GSO_CHANGE, VIRTIO_BRACKET, VIRTIO_SKB = "GSO_CHANGE", "VIRTIO_BRACKET", "VIRTIO_SKB"
OBSERVE, OBSERVE_TNL, OBSERVE_SEG = "OBSERVE", "OBSERVE_TNL", "OBSERVE_SEG"

# flags, as in bpf/*.c
HF_ENTRY_CHECK = 1
HF_CRASH_CHECK = 2
HF_LIST_CHECK = 4

_SUFFIX = r"(\.(isra|constprop|part|cold|llvm)\.\d+)*"


class Hook(object):
    def __init__(self, name, kind, event, skb=1, aux=None, flags=0, names=None,
                 module=None, why="", aux2=None):
        self.name = name                        # canonical name, shown in output
        self.kind = kind
        self.event = event                      # what it reports, for docs and --help
        self.skb = skb                          # argument number, or a C expression
        self.aux = aux                          # argument number, C expression or None
        self.aux2 = aux2                        # a second one (u8), e.g. adjust_room's mode
        self.flags = flags
        self.names = tuple(names or (name,))    # names across kernels, tried in order
        self.module = module                    # kernel module that must be loaded
        self.why = why
        self.hook_id = None                     # set by the table
        self.symbol = None                      # resolved kernel symbol
        self.skip_reason = None
        self.backend = KPROBE                   # chosen by the loader
        self.backend_why = None                 # why not fentry, when it could have been
        self.nargs = None                       # parameters, from BTF (fexit's return slot)
        self.returns = True                     # from BTF: False for a void function

    def c_ident(self):
        return re.sub(r"[^A-Za-z0-9_]", "_", self.name)

    @staticmethod
    def _expr(what, backend):
        if what is None:
            return "0"
        if isinstance(what, int):
            return _ARG[backend](what)
        return _ARG_RE.sub(lambda m: _ARG[backend](int(m.group(1))), what)

    def _lines(self, backend):
        if backend == FENTRY:
            # bcc derives the attach target from the program's name
            # fexit: the return value follows the arguments; a void function
            # has no such slot (the verifier refuses the read)
            name, ret = self.symbol, "ctx[%d]" % (self.nargs or 0) if self.returns else "0"
        else:
            name, ret = self.c_ident(), "PT_REGS_RC(ctx)" if self.returns else "0"
        args = "(%s, %s, %d, %s, %s, %s, %d, %s)" % (
            backend.upper(), name, self.hook_id, self._expr(self.skb, backend),
            self._expr(self.aux, backend), self._expr(self.aux2, backend), self.flags, ret)
        lines = ["HOOK_%s%s" % (self.kind, args)]
        if self.has_return():
            lines.append("HOOK_%s_RET%s" % (self.kind, args))
        return lines

    def c_line(self):
        """HOOK_<KIND>(KPROBE, ...) for the entry program, and on a line of
        its own HOOK_<KIND>_RET(...) for the return program: bcc before 0.2x
        puts a function in its own section by inserting text at the macro's
        expansion point, so a second function from the same expansion is
        lost ("Unknown program leave_..." on bullseye's bcc 0.18). A hook on
        the fentry backend gets its FENTRY lines too: the kprobe ones cost
        one tail call each to compile and are what the loader falls back to
        when the kernel refuses the trampoline."""
        lines = self._lines(KPROBE)
        if self.backend == FENTRY:
            lines += self._lines(FENTRY)
        return "\n".join(lines)

    def symbol_regex(self):
        return r"^(%s)%s$" % ("|".join(re.escape(n) for n in self.names), _SUFFIX)

    def has_return(self):
        return self.kind not in (SEGMENT, VIRTIO_SKB, OBSERVE, OBSERVE_SEG)

    def __repr__(self):
        return "Hook(%s)" % self.name


# What usually loads a hook's module, for the "restart after" advice
# (net/ipv4/Makefile: udp_tunnel.o, net/ipv6/Makefile: ip6_udp_tunnel.o,
# both CONFIG_NET_UDP_TUNNEL, a module on Debian and RHEL kernels).
MODULE_LOADED_BY = {
    "udp_tunnel": "the first vxlan, geneve or fou device is created",
    "ip6_udp_tunnel": "the first vxlan, geneve or fou device is created",
    "virtio_net": "a virtio network device appears",
}


def table(hooks):
    for i, h in enumerate(hooks):
        h.hook_id = i
    return hooks


# skb_gro_receive() took struct sk_buff **head before 4.19 (list_head GRO);
# the loader picks this expression when BTF says so.
GRO_HEAD_PP = "deref_skb_pp((void *)ARG1)"


def watcher_hooks():
    return table([
        Hook("skb_gro_receive_list", MUTATE, "CREATE",
             why="fraglist GRO chains the packet to the held skb's frag_list"),
        Hook("skb_gro_receive", MUTATE, "CREATE",
             why="classic GRO falls back to frag_list when frags cannot take the data"),
        Hook("skb_segment_list", MUTATE, "CLEAR/ACCESS", flags=HF_ENTRY_CHECK | HF_LIST_CHECK,
             why="splits a fraglist GSO skb back into its frag_list members"),
        Hook("__pskb_pull_tail", MUTATE, "CLEAR/MODIFY", aux=2,
             why="what __skb_linearize and pskb_may_pull call; eats frag_list members"),
        Hook("pskb_expand_head", MUTATE, "CLEAR/MODIFY", aux=2,
             why="reallocates the head; clones of frag_list are taken here"),
        Hook("___pskb_trim", MUTATE, "CLEAR/MODIFY", aux=2,
             why="trimming can drop frag_list members (skb_drop_fraglist)"),
        Hook("pskb_carve", MUTATE, "CLEAR/MODIFY", aux=2,
             why="rewrites frag_list in place (usually inlined into pskb_extract)"),
        Hook("skb_condense", MUTATE, "CLEAR/MODIFY",
             why="pulls small frags into the head"),
        Hook("bpf_skb_pull_data", MUTATE, "CLEAR/MODIFY", aux=2,
             why="BPF helper; pulls frag_list data into the head (fix fa5ef655615a)"),
        Hook("ip_do_fragment", CONSUME, "ACCESS", skb=3,
             why="IPv4 fragmentation walks and empties frag_list (fast path)"),
        Hook("ip6_fragment", CONSUME, "ACCESS", skb=3,
             why="IPv6 fragmentation walks and empties frag_list (fast path)"),
        Hook("__pskb_copy_fclone", COPY, "PROPAGATE",
             why="pskb_copy: the copy shares frag_list and inherits gso state"),
        Hook("skb_realloc_headroom", COPY, "PROPAGATE",
             why="copy with more headroom"),
        Hook("skb_copy", COPY, "PROPAGATE/COPY_FAIL",
             why="refuses SKB_GSO_FRAGLIST skbs with a NULL return"),
        Hook("skb_copy_expand", COPY, "PROPAGATE/COPY_FAIL",
             why="refuses SKB_GSO_FRAGLIST skbs with a NULL return"),
        Hook("pskb_extract", COPY, "PROPAGATE",
             why="clone + carve: the clone's frag_list is rewritten"),
        Hook("udp4_ufo_fragment", SEGMENT, "ACCESS", names=("udp4_ufo_fragment", "udp4_gso_segment"),
             flags=HF_ENTRY_CHECK, why="UDP GSO entry point (IPv4)"),
        Hook("udp6_ufo_fragment", SEGMENT, "ACCESS", names=("udp6_ufo_fragment", "udp6_gso_segment"),
             flags=HF_ENTRY_CHECK, why="UDP GSO entry point (IPv6)"),
        Hook("__udp_gso_segment", SEGMENT, "ACCESS", flags=HF_ENTRY_CHECK,
             why="UDP GSO segmentation (frag_list or frags)"),
        Hook("skb_segment", SEGMENT, "ACCESS/INCONSISTENT",
             flags=HF_ENTRY_CHECK | HF_CRASH_CHECK,
             why="the crash site: dereferences frag_list when head and frags run out"),
        Hook("skb_udp_tunnel_segment", BRACKET, "-",
             why="tunnel segmentation rewrites tunnel metadata itself; rules pause inside"),
    ])


def by_id(hooks):
    return dict((h.hook_id, h) for h in hooks)



def detector_hooks():
    return table([
        Hook("receive_buf", VIRTIO_BRACKET, "VIRTIO_RX", skb=None, module="virtio_net",
             flags=ev.EV_VIRTIO_RX,
             why="virtio_net builds the skb and maps the virtio header's gso_type"),
        Hook("napi_gro_receive", VIRTIO_SKB, "VIRTIO_RX", skb=2, flags=ev.EV_VIRTIO_RX,
             why="inside receive_buf: the new skb with its virtio header in skb->cb"),
        Hook("inet_gro_complete", GSO_CHANGE, "GRO_COMPLETE", aux=2, flags=ev.EV_GRO_COMPLETE,
             why="IPv4 GRO completion; calls the L4/tunnel completions"),
        Hook("udp4_gro_complete", GSO_CHANGE, "GRO_COMPLETE", aux=2, flags=ev.EV_GRO_COMPLETE,
             why="UDP GRO completion (IPv4)"),
        Hook("udp6_gro_complete", GSO_CHANGE, "GRO_COMPLETE", aux=2, flags=ev.EV_GRO_COMPLETE,
             why="UDP GRO completion (IPv6)"),
        Hook("udp_gro_complete", GSO_CHANGE, "GRO_COMPLETE", aux=2, flags=ev.EV_GRO_COMPLETE,
             why="sets UDP_TUNNEL(_CSUM) when a UDP tunnel socket completed the GRO"),
        Hook("iptunnel_handle_offloads", GSO_CHANGE, "TUNNEL_XMIT", aux=2,
             flags=ev.EV_TUNNEL_XMIT,
             why="kernel tunnel xmit ORs the tunnel gso bit (aux: the mask)"),
        Hook("udp_tunnel_xmit_skb", OBSERVE, "TUNNEL_XMIT", skb=3, flags=ev.EV_TUNNEL_XMIT,
             module="udp_tunnel", why="UDP tunnel (vxlan, geneve, fou) transmit over IPv4"),
        Hook("udp_tunnel6_xmit_skb", OBSERVE, "TUNNEL_XMIT", skb=3, flags=ev.EV_TUNNEL_XMIT,
             module="ip6_udp_tunnel", why="UDP tunnel transmit over IPv6"),
        Hook("bpf_skb_adjust_room", GSO_CHANGE, "BPF_HELPER", aux=4, aux2=3,
             flags=ev.EV_BPF_HELPER,
             why="BPF encap: ENCAP_L4_UDP sets UDP_TUNNEL|DODGY with no vxlan device"),
        Hook("bpf_skb_net_grow", GSO_CHANGE, "BPF_HELPER", aux=4, flags=ev.EV_BPF_HELPER,
             why="adjust_room's grow path (often inlined)"),
        Hook("bpf_skb_net_shrink", GSO_CHANGE, "BPF_HELPER", aux=4, flags=ev.EV_BPF_HELPER,
             why="adjust_room's shrink path (often inlined)"),
        Hook("bpf_skb_change_proto", GSO_CHANGE, "BPF_HELPER", aux=2, flags=ev.EV_BPF_HELPER,
             why="NAT64-style protocol change rewrites gso_type"),
        Hook("skb_udp_tunnel_segment", OBSERVE_TNL, "GSO_SET", flags=ev.EV_GSO_SET,
             why="UDP tunnel GSO: the bit is used here"),
        Hook("__skb_gso_segment", OBSERVE, "GSO_SET", flags=ev.EV_GSO_SET,
             why="software GSO entry"),
        Hook("skb_segment", OBSERVE_SEG, "GSO_SET", flags=ev.EV_GSO_SET,
             why="the crash site (pattern C: the bit was already set); the shared crash "
                 "rule runs here"),
    ])
