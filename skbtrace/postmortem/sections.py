"""The sections of a packet's story, one renderer each: who set UDP_TUNNEL,
what happened to frag_list, the state at skb_segment, the packet as crash's
bytes show it. text()/lines() for the text report, to_dict() for --json."""
from skbtrace.kernel import event, gso, packet, rules
from skbtrace.kernel.udp_tunnel import PATTERNS
from skbtrace.output.formatter import ptr
from skbtrace.postmortem import sources as src
from skbtrace.postmortem import story

FRAG_LIST_NONE = {
    "none (no frag_list seen)": "no frag_list on this packet as far as the watcher saw (never "
                                "created, nothing cleared)",
    "not traced (no watcher record)": "no watcher record of this packet",
    "kept (frag_list present)": "a frag_list, never cleared",
}


class UdpTunnelSection(object):
    """UDP_TUNNEL: who set it (the setter, its pattern), or why nobody is named."""

    def __init__(self, run):
        self.run = run

    def text(self, life):
        s = life.setter
        if s is None:
            if life.tunnel_first is not None:
                o = life.tunnel_first
                return "set (first seen at %s %s [%d]), but no detector record names the " \
                       "setter%s" % (o.time_text, o.function, o.src, self.lost_note())
            return "not set on this packet, as far as the inputs show"
        o = s["obs"]
        ev = s["event"]
        pat = s["pattern"]
        cls = PATTERNS[pat][1] if pat in PATTERNS else ""
        if s["how"] == "set":
            return "set by %s at %s (%s; pattern %s: %s) [%d]" % (
                s["function"], s["when"], ev, pat, cls, o.src)
        if s["how"] == "origin":
            return "set by %s%s (named by %s's origin=; pattern %s: %s) [%d]" % (
                s["function"], " at %s" % s["when"] if s["when"] else "", o.function, pat,
                cls, o.src)
        return "already set when the detector first saw it (%s at %s; pattern C) [%d]" % (
            o.function, o.time_text, o.src)

    def lost_note(self):
        lost = sum(n for inp in self.run.inputs for t, n in inp.lost.items()
                   if t in (src.DETECTOR, "?"))
        return "; the detector lost %d events" % lost if lost else ""

    def to_dict(self, life):
        s = life.setter
        if s is None:
            return {"set": life.tunnel_first is not None, "function": None, "pattern": None,
                    "how": None}
        return {"set": True, "function": s["function"], "event": s["event"],
                "pattern": s["pattern"], "how": s["how"], "time": s["when"],
                "input": s["obs"].src, "line": s["obs"].line_no}


class FragListSection(object):
    """frag_list: who created it, who cleared or changed it, the last change
    before skb_segment."""

    def text(self, life):
        parts = []
        for c in life.created:
            parts.append("created by %s at %s (%s) [%d]" % (c.function, c.time_text,
                                                            ptr(c.fl_after), c.src))
        chain = life.clear_chain()
        if chain and life.clears:
            first = [c for c in life.clears if c.function == chain[0]][-1]
            verb = "cleared" if first.event == "CLEAR" else "changed"
            parts.append("%s by %s at %s (%s -> %s) [%d]" % (
                verb, " in ".join(chain), first.time_text, ptr(first.fl_before),
                ptr(first.fl_after), first.src))
        last = life.segment_last()
        if not parts:
            if chain:
                parts.append("no CLEAR recorded, but gso_type has FRAGLIST and the list is "
                             "gone: cleared by %s, the last change before %s" % (
                                 chain[0], life.segment["site"]))
            elif life.watcher_seen:
                parts.append(FRAG_LIST_NONE.get(life.clearer_label(), life.clearer_label()))
            elif life.segment is not None and life.segment.get("frag_list") is not None:
                parts.append("no watcher log lines for this packet; frag_list=%s at %s" % (
                    ptr(life.segment["frag_list"]), life.segment["site"]))
            else:
                parts.append(FRAG_LIST_NONE.get(life.clearer_label(), life.clearer_label()))
        if last and life.clears or last and not chain:
            parts.append("last change before %s: %s%s%s (the watcher's last=)" % (
                life.segment["site"], last[0], ", %d us before" % last[1]
                if last[1] is not None else "", ", with another skb->head" if last[2] else ""))
        return "; ".join(parts)

    def to_dict(self, life):
        return {"created": [{"function": c.function, "time": c.time_text,
                             "frag_list": ptr(c.fl_after)} for c in life.created],
                "cleared_by": life.clear_chain(),
                "changes": [{"event": c.event, "function": c.function, "time": c.time_text,
                             "before": ptr(c.fl_before), "after": ptr(c.fl_after),
                             "input": c.src, "line": c.line_no} for c in life.clears],
                "clearer": life.clearer_label()}


class SegmentSection(object):
    """skb_segment: the state the packet reached it in, the crash rule's
    reasons and what its severity means."""

    def __init__(self, run):
        self.run = run

    def gso_text(self, value):
        if value is None:
            return "?"
        txt = "0x%x(%s)" % (value, self.run.gso.names(value))
        dep = getattr(gso, "family_dependent", None)
        if dep is not None and dep(value):
            txt += "[named differently by kernel family]"
        return txt

    def state_text(self, gso_type, gso_size, length, data_len, nr_frags, frags_bytes, fl):
        vals = [("gso_type", self.gso_text(gso_type) if gso_type is not None else None),
                ("gso_size", gso_size), ("len", length), ("data_len", data_len),
                ("nr_frags", nr_frags), ("frags_bytes", frags_bytes),
                ("frag_list", ptr(fl) if fl is not None else None)]
        return " ".join("%s=%s" % (k, v) for k, v in vals if v is not None)

    def lines(self, life):
        s = life.segment
        if s is None:
            return ["not seen at skb_segment"]
        first = s["first"]
        sev = s.get("severity")
        line = "%s%s at %s%s: %s" % ("[%s] " % sev if sev else "", s["site"],
                                     first.time_text, " (inside skb_udp_tunnel_segment)"
                                     if s.get("in_tnl") else "",
                                     self.state_text(s.get("gso_type"), s.get("gso_size"),
                                                     s.get("length"), s.get("data_len"),
                                                     s.get("nr_frags"), s.get("frags_bytes"),
                                                     s.get("frag_list")))
        srcs = sorted(set("[%d]" % o.src for o in s["seen_by"]))
        out = [line + " " + " ".join(srcs)]
        out += story.reason_text(story.reasons_sorted(s.get("reasons", ())))
        if sev == "WARNING":
            out.append(rules.SEVERITY_TEXT[event.SEV_WARNING])
        elif sev == "CRITICAL":
            out.append(rules.SEVERITY_TEXT[event.SEV_CRITICAL])
        return out

    def to_dict(self, life):
        s = life.segment
        if s is None:
            return None
        out = dict((k, s.get(k)) for k in ("site", "gso_type", "gso_size", "length",
                                           "data_len", "nr_frags", "frags_bytes",
                                           "frag_list", "in_tnl", "severity"))
        out["gso_type_names"] = self.run.gso.names(s["gso_type"]) \
            if s.get("gso_type") is not None else None
        out["time"] = s["first"].time_text
        out["reasons"] = story.reasons_sorted(s.get("reasons", ()))
        return out


class CrashPacketSection(object):
    """crash: the packet as crash's rd -8 bytes of the skb show it."""

    def lines(self, life):
        """The packet as crash's rd -8 bytes of this skb show it, and what
        the crash reader noted (the family, the crash site, what to read)."""
        if life.crash is None:
            return []
        f = life.crash[2].raw
        out = ["packet: %s" % packet.summary(f.layers)] if f.layers else []
        if f.packet is not None:
            out.append("pcap: %d bytes from the head (%s)" % (
                len(f.packet.data), "; ".join(f.packet.notes) or "as on the wire"))
        return out + list(f.notes)
