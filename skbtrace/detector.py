"""skb_vxlan_source_detector: where SKB_GSO_UDP_TUNNEL(_CSUM) first appears
on an skb, plus a static check of the host's tunnel devices and BPF programs."""
from collections import OrderedDict

from skbtrace import cli
from skbtrace.kernel import event, hooks
from skbtrace.output import record
from skbtrace.live import runner
from skbtrace.live.filters import Filters
from skbtrace.output.formatter import Formatter, change_text
from skbtrace.output.sink import Sink, info
from skbtrace.live.stats import Stats

PROG = "skb_vxlan_source_detector.py"

DESCRIPTION = """Find the hook that first set SKB_GSO_UDP_TUNNEL (or _CSUM) on a packet:
virtio_net receive (VIRTIO_RX), GRO completion (GRO_COMPLETE), kernel tunnel
transmit (TUNNEL_XMIT), BPF helpers such as bpf_skb_adjust_room (BPF_HELPER),
or already set when segmentation saw it (GSO_SET). A STATIC section first lists
tunnel devices, tc/XDP BPF programs and tunnel offloads (netlink, no bcc)."""

EXAMPLES = """examples:
    sudo ./skb_vxlan_source_detector.py                     # static check, then trace
    sudo ./skb_vxlan_source_detector.py --gso-changes-only  # only where gso_type changes
    sudo ./skb_vxlan_source_detector.py --static-only       # no bcc needed
    sudo ./skb_vxlan_source_detector.py --src-ip 198.18.1.1 --verbose
    sudo ./skb_vxlan_source_detector.py --no-static --json -o /var/tmp/vxlan.log
    sudo ./skb_vxlan_source_detector.py --gso-changes-only | grep UDP_TUNNEL"""

DETECTOR_EVENTS = [event.EVENT_NAMES[v] for v in (
    event.EV_VIRTIO_RX, event.EV_GRO_COMPLETE, event.EV_TUNNEL_XMIT, event.EV_BPF_HELPER,
    event.EV_GSO_SET, event.EV_INCONSISTENT)]

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


class DetectorFormatter(Formatter):
    def header(self):
        if self.json_mode:
            return []
        h = "%-15s %-3s %-12s %-24s | %-18s | %s" % ("TIME", "CPU", "EVENT", "FUNCTION", "SKB",
                                                    "GSO_TYPE | DETAIL")
        if self.verbose:
            h = "%-15s %-3s %-16s %-7s %-12s %-24s | %-18s | %s" % (
                "TIME", "CPU", "COMM", "PID", "EVENT", "FUNCTION", "SKB", "GSO_TYPE | DETAIL")
        return [h, "-" * max(len(h), 100)]

    def handler(self, hooks_by_id, stats, symbols=None, verdict=None):
        """Formatter.handler() for the detector; verdict counted as
        Detector.on_record() counts it."""
        if type(self) is not DetectorFormatter:
            return None
        from skbtrace.output import fastpath
        return fastpath.detector_handler(self, hooks_by_id, stats, symbols, verdict)

    def gso_change(self, r):
        e = r.ev
        if e.gso_type_before == e.gso_type_after:
            return self.gso_type_text(e.gso_type_after)
        return "%s -> %s" % (self.gso_type_text(e.gso_type_before),
                             self.gso_type_text(e.gso_type_after))

    def event_detail(self, r):
        e = r.ev
        name = r.function
        out = []
        if e.flags & event.F_VNET_VALID:
            out.append("virtio_gso=%s(0x%x) virtio_gso_size=%d hdr_len=%d csum_start=%d "
                       "csum_offset=%d flags=%s" % (
                           vnet_gso_text(e.vnet_gso_type), e.vnet_gso_type, e.vnet_gso_size,
                           e.vnet_hdr_len, e.vnet_csum_start, e.vnet_csum_offset,
                           bit_names(e.vnet_flags, VNET_FLAGS)))
        if name == "bpf_skb_adjust_room":
            out.append("mode=%s flags=%s ret=%d" % (ADJ_ROOM_MODES.get(e.aux2, str(e.aux2)),
                                                    bit_names(e.aux & ((1 << 56) - 1),
                                                              ADJ_ROOM_FLAGS), e.ret))
        elif name in ("bpf_skb_net_grow", "bpf_skb_net_shrink"):
            out.append("flags=%s ret=%d" % (bit_names(e.aux & ((1 << 56) - 1), ADJ_ROOM_FLAGS),
                                            e.ret))
        elif name == "bpf_skb_change_proto":
            proto = ((e.aux & 0xff) << 8) | ((e.aux >> 8) & 0xff)   # __be16 in a register
            out.append("proto=0x%04x ret=%d" % (proto, e.ret))
        elif name == "iptunnel_handle_offloads":
            out.append("mask=%s ret=%d" % (self.gso_type_text(e.aux & 0xffffffff), e.ret))
        out.append("gso_size=%s encap=%d" % (change_text(e.gso_size_before, e.gso_size_after),
                                             r.encap))
        return out

    def origin_text(self, r):
        if not r.last_function:
            return None
        if is_new_origin(r):
            return "origin=here%s" % (" (already set on entry)" if r.ev.flags &
                                      event.F_ORIGIN_ON_ENTRY else "")
        txt = "origin=%s(+%dus)" % (r.last_function, int(r.last_age_us or 0))
        if r.ev.flags & event.F_ORIGIN_ON_ENTRY:
            txt += "(already set there)"
        if r.ev.flags & event.F_LAST_STALE:
            txt += "(other head)"
        return txt

    def markers(self, r):
        out = []
        change = tunnel_change(self.gso, r)
        if change == ADDED:
            out.append("[UDP_TUNNEL ADDED]")
        elif change == ADDED_NESTED:
            out.append("(nested: set by %s)" % r.last_function)
        elif change == BY_ENCLOSING:
            out.append("(nested: already set by an enclosing call)")
        elif change == REMOVED:
            out.append("[UDP_TUNNEL REMOVED]")
        if r.severity_name:
            out.append("[%s]" % r.severity_name)
        return out

    def lines(self, r):
        if self.json_mode:
            return [self._json(r)]
        e = r.ev
        tail = self.event_detail(r) + self.markers(r)
        if e.reasons:
            tail.append("reasons=%s" % ",".join(r.reasons_list))
        origin = self.origin_text(r)
        if origin:
            tail.append(origin)
        if e.flags & event.F_IN_TNL_SEG:
            tail.append("in=skb_udp_tunnel_segment")
        if self.verbose:
            first = "%-15s %-3d %-16s %-7d %-12s %-24s | 0x%016x | %s |" % (
                self.clock.hms(e.ts_ns), e.cpu, r.comm_text, e.pid, r.event_name, r.function,
                e.skb, self.gso_change(r))
        else:
            first = "%-15s %-3d %-12s %-24s | 0x%016x | %s |" % (
                self.clock.hms(e.ts_ns), e.cpu, r.event_name, r.function, e.skb,
                self.gso_change(r))
        out = [" ".join([first] + tail)]
        if self.verbose:
            parts = ["  -> Flow: %s" % (r.flow or "not IP (protocol 0x%04x)" % e.protocol)]
            if r.inner_flow:
                parts.append("inner: %s" % r.inner_flow)
            parts.append("len=%d data_len=%d nr_frags=%d frag_list=%s cloned=%d encap=%d dev=%d "
                         "iif=%d" % (e.len, e.data_len_after, e.nr_frags_after,
                                     "0x%x" % e.frag_list_after if e.frag_list_after else "NULL",
                                     r.cloned, r.encap, e.ifindex, e.iif))
            out.append(" | ".join(parts))
        return out + self.stack_lines(r)

    def _json(self, r):
        d = self.to_dict(r)
        e = r.ev
        d["tunnel_change"] = tunnel_change(self.gso, r)
        d["tunnel_added"] = d["tunnel_change"] == ADDED
        d["origin"] = None
        if r.last_function:
            d["origin"] = {"function": r.last_function, "age_us": r.last_age_us,
                           "here": is_new_origin(r),
                           "on_entry": bool(e.flags & event.F_ORIGIN_ON_ENTRY),
                           "other_head": bool(e.flags & event.F_LAST_STALE)}
        d.pop("last", None)
        if e.flags & event.F_VNET_VALID:
            d["virtio"] = {"gso_type": e.vnet_gso_type, "gso_type_name": vnet_gso_text(
                e.vnet_gso_type), "gso_size": e.vnet_gso_size, "hdr_len": e.vnet_hdr_len,
                "csum_start": e.vnet_csum_start, "csum_offset": e.vnet_csum_offset,
                "flags": e.vnet_flags}
        d["aux2"] = e.aux2
        return record.dumps(d)


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


class Detector(runner.Tool):
    name = "skb_vxlan_source_detector"
    c_file = "skb_vxlan_source_detector.c"
    event_names = DETECTOR_EVENTS
    stages = ("change_enter", "change_return", "observe", "virtio_skb")

    def __init__(self, args, filters):
        runner.Tool.__init__(self, args, filters)
        self.verdict = Verdict()

    def make_hooks(self):
        return hooks.detector_hooks()

    def config_lines(self):
        return runner.Tool.config_lines(self) + [
            "#define GSO_CHANGES_ONLY %d" % (1 if self.args.gso_changes_only else 0)]

    def on_record(self, record):
        self.verdict.add(record)

    def handler(self, formatter, hooks_by_id, stats, symbols=None):
        if type(self).on_record is not Detector.on_record or \
                not isinstance(formatter, DetectorFormatter):
            return None
        return formatter.handler(hooks_by_id, stats, symbols, verdict=self.verdict)

    def extra_stats(self, stats):
        stats.extra_lines = self.verdict.render()
        stats.extra_dict = {"verdict": self.verdict.to_dict()}

    def before_trace(self, sink):
        if not self.args.no_static:
            write_static(self.args, sink)


def write_static(args, sink):
    from skbtrace.live import static_check
    report = static_check.collect()
    if args.json:
        d = report.to_dict()
        d["type"] = "static"
        d["tool"] = Detector.name
        d["verdict"] = static_check.verdict(report)
        sink.write(record.dumps(d))
    else:
        for line in static_check.render_lines(report, verbose=args.verbose):
            sink.write(line)
        sink.write("")


def make_parser(prog=PROG):
    p = cli.make_parser(prog, DESCRIPTION, EXAMPLES)
    d = p.add_argument_group("detector")
    d.add_argument("--gso-changes-only", action="store_true",
                   help="only hits where gso_type changed, or first seen with a tunnel bit")
    m = d.add_mutually_exclusive_group()
    m.add_argument("--no-static", action="store_true", help="skip the STATIC section")
    m.add_argument("--static-only", action="store_true",
                   help="print the STATIC section and exit (no bcc, no tracing)")
    return p


def parse_args(argv=None):
    return make_parser().parse_args(argv)


def _main(argv=None):
    args = parse_args(argv)
    filters = Filters.from_args(args)
    if args.static_only:
        sink = Sink(args.output)
        try:
            write_static(args, sink)
        finally:
            sink.close()
        return 0
    tool = Detector(args, filters)
    return runner.run(tool, formatter_cls=DetectorFormatter,
                      stats=Stats(tool.hooks, tool.event_names))


def main(argv=None):
    return cli.run_main(_main, argv)
