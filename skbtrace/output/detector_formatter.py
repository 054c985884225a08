"""The detector's lines: gso_type before and after, the virtio header and the
BPF helper's arguments, [UDP_TUNNEL ADDED] and origin= (udp_tunnel.py says
what they mean). The live detector and the post-mortem print with it."""
from skbtrace.kernel import event
from skbtrace.kernel.udp_tunnel import (ADDED, ADDED_NESTED, ADJ_ROOM_FLAGS, ADJ_ROOM_MODES,
                                        BY_ENCLOSING, REMOVED, VNET_FLAGS, bit_names,
                                        is_new_origin, tunnel_change, vnet_gso_text)
from skbtrace.output import fastpath, record
from skbtrace.output.formatter import Formatter, change_text


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
