"""Where SKB_GSO_UDP_TUNNEL(_CSUM) comes from: the header bits the detector
decodes (virtio_net_hdr, BPF_F_ADJ_ROOM_*), the setter patterns A-E, how one
event relates to the tunnel bit, and the verdict that counts setters. The live
detector and the post-mortem both read it; no I/O."""
from collections import OrderedDict

from skbtrace.kernel import event

# virtio_net_hdr (include/uapi/linux/virtio_net.h)
VNET_GSO = {0: "NONE", 1: "TCPV4", 3: "UDP", 4: "TCPV6", 5: "UDP_L4"}
VNET_GSO_ECN = 0x80
VNET_FLAGS = [(1, "NEEDS_CSUM"), (2, "DATA_VALID"), (4, "RSC_INFO")]

# BPF_F_ADJ_ROOM_* (include/uapi/linux/bpf.h, 6.1; DECAP_* since 6.3)
ADJ_ROOM_FLAGS = [(1 << 0, "FIXED_GSO"), (1 << 1, "ENCAP_L3_IPV4"), (1 << 2, "ENCAP_L3_IPV6"),
                  (1 << 3, "ENCAP_L4_GRE"), (1 << 4, "ENCAP_L4_UDP"),
                  (1 << 5, "NO_CSUM_RESET"), (1 << 6, "ENCAP_L2_ETH"),
                  (1 << 7, "DECAP_L3_IPV4"), (1 << 8, "DECAP_L3_IPV6")]
ADJ_ROOM_MODES = {0: "NET", 1: "MAC"}

PATTERNS = OrderedDict([
    ("A", ("VIRTIO_RX", "virtio_net receive_buf mapped the host's virtio header",
           "The bit came with the packet from the host (tap/vhost). 4.18's "
           "virtio_net_hdr_to_skb maps only TCPV4/TCPV6/UDP (+DODGY): a tunnel bit here "
           "means a newer virtio tunnel-GSO feature or a driver bug; capture the host side.")),
    ("B", ("GRO_COMPLETE", "GRO completion for a local UDP tunnel socket",
           "udp_gro_complete sets UDP_TUNNEL(_CSUM) only when a UDP socket with gro_complete "
           "(vxlan, geneve, fou, or a BPF-managed port) received the flow: find it with "
           "`ss -uapn`; an open 4789/8472 port without a vxlan device is the lead.")),
    ("C", ("GSO_SET", "already set when first seen",
           "Set before any traced hook: on the host, by a copy the tool does not follow, or "
           "before the tool started. Run the detector on the host too, or add --stack-trace.")),
    ("D", ("BPF_HELPER", "a BPF program encapsulated",
           "bpf_skb_adjust_room(..., BPF_F_ADJ_ROOM_ENCAP_L4_UDP) sets UDP_TUNNEL|DODGY with "
           "no vxlan device (Calico eBPF NodePort/DSR VXLAN): see the STATIC tc programs.")),
    ("E", ("TUNNEL_XMIT", "a kernel tunnel device transmitted",
           "iptunnel_handle_offloads ORs the tunnel bit on vxlan/geneve/fou xmit: see the "
           "STATIC tunnel devices.")),
])
PATTERN_OF_EVENT = dict((v[0], k) for k, v in PATTERNS.items())


def bit_names(value, table):
    names = [n for b, n in table if value & b]
    rest = value & ~sum(b for b, _ in table)
    if rest:
        names.append("0x%x" % rest)
    return "|".join(names) or "0"


def vnet_gso_text(v):
    name = VNET_GSO.get(v & ~VNET_GSO_ECN, "0x%x" % (v & ~VNET_GSO_ECN))
    return name + ("|ECN" if v & VNET_GSO_ECN else "")


def tunnel_bits(gso, value):
    return value & gso.tunnel_mask()


def is_new_origin(r):
    e = r.ev
    return bool(e.last_hook) and e.last_hook - 1 == e.hook_id and e.last_ts_ns == e.ts_ns


# How a call relates to the tunnel bit. GRO completions nest (inet_gro_complete
# -> udp4_gro_complete -> udp_gro_complete -> inner inet_gro_complete) and
# return innermost first; the kernel side (report() in
# bpf/skb_vxlan_source_detector.c) keeps the origin of the innermost setter,
# so each line can tell from its own event which case it is:
ADDED = "added"                 # this function set it: the origin is this very event
ADDED_NESTED = "added_nested"   # set during this call by a traced hook nested in it
                                # (before lacks it, after has it, origin is that hook)
BY_ENCLOSING = "set_by_enclosing"   # there at entry and no origin yet: the kernel side
                                    # leaves the origin to an enclosing call still running
REMOVED = "removed"


def tunnel_change(gso, r):
    e = r.ev
    before = tunnel_bits(gso, e.gso_type_before)
    after = tunnel_bits(gso, e.gso_type_after)
    if after and not before:
        if r.last_function and not is_new_origin(r):
            return ADDED_NESTED
        return ADDED
    if before and not after:
        return REMOVED
    if before and after and not r.last_function:
        return BY_ENCLOSING
    return None


class Verdict(object):
    """Who set the tunnel bit, counted once per skb (at its origin event)."""

    def __init__(self):
        self.by_setter = OrderedDict()      # (pattern, function) -> count
        self.mismatches = 0

    def add(self, r):
        if r.ev.reasons & event.RSN_TUNNEL_MASK:
            self.mismatches += 1
        if not is_new_origin(r):
            return
        if r.ev.flags & event.F_ORIGIN_ON_ENTRY:
            pattern = "C"
        else:
            pattern = PATTERN_OF_EVENT.get(r.event_name, "C")
        key = (pattern, r.function)
        self.by_setter[key] = self.by_setter.get(key, 0) + 1

    def rows(self):
        return [(p, PATTERNS[p][1], fn, n) for (p, fn), n in
                sorted(self.by_setter.items(), key=lambda kv: (-kv[1], kv[0]))]

    def render(self):
        out = ["", "--- Verdict: who set UDP_TUNNEL ---"]
        rows = self.rows()
        if not rows:
            out.append("No skb gained SKB_GSO_UDP_TUNNEL(_CSUM) while tracing.")
        else:
            headers = ["PATTERN", "SETTER CLASS", "FUNCTION", "SKBS"]
            try:
                # python3-tabulate is optional: imported where a table is drawn,
                # and without it the table is plain columns
                from tabulate import tabulate
                out.extend(tabulate(rows, headers=headers).splitlines())
            except ImportError:
                out.append("%-8s %-50s %-26s %s" % tuple(headers))
                out.extend("%-8s %-50s %-26s %d" % row for row in rows)
            out.append("")
            for p in sorted(set(r[0] for r in rows)):
                out.append("%s: %s" % (p, PATTERNS[p][2]))
        out.append("Tunnel metadata mismatches (encapsulation 0, inner==outer, outer not UDP): %d"
                   % self.mismatches)
        return out

    def to_dict(self):
        return {"setters": [{"pattern": p, "class": c, "function": fn, "skbs": n}
                            for p, c, fn, n in self.rows()],
                "tunnel_metadata_mismatches": self.mismatches}
