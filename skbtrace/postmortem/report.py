"""What skb_postmortem prints: the inputs, the clock, each packet's story,
the table of packets by (UDP_TUNNEL setter, frag_list clearer); text or
--json records."""
from skbtrace.kernel import event, flightrec, gso, packet, rules
from skbtrace.kernel.udp_tunnel import PATTERNS
from skbtrace.output import record
from skbtrace.output.detector_formatter import DetectorFormatter
from skbtrace.output.formatter import Formatter, ptr
from skbtrace.postmortem import crashdump, story
from skbtrace.postmortem import sources as src
from skbtrace.postmortem.run import hms
from skbtrace.postmortem.timeline import _TimeClock, json_record

TOOL = "skb_postmortem"


class Output(object):
    def __init__(self, run, sink):
        self.run = run
        self.sink = sink
        self.json = run.args.json

    def write(self, line=""):
        self.sink.write(line)

    def dump(self, d):
        d["tool"] = TOOL
        self.write(record.dumps(d))

    # --- one timeline line per observation ------------------------------------------

    def lines_of(self, obs):
        """The observation as its tool printed it (text logs verbatim, JSON
        and flight records through the tools' formatters)."""
        if obs.kind == "log":
            return list(obs.raw)
        if obs.kind == "json":
            clock = _TimeClock()
            clock.text[int(obs.raw.get("ts_ns") or 0)] = obs.time_text
            cls = DetectorFormatter if obs.tool == src.DETECTOR else Formatter
            try:
                return cls(clock, self.run.gso, tool=obs.tool).lines(
                    json_record(obs.raw, obs.tool))
            except (TypeError, ValueError, AttributeError, OverflowError):
                return ["%s %s %s | 0x%016x | (JSON record, line %d)" % (
                    obs.time_text, obs.event, obs.function, obs.skb, obs.line_no)]
        if obs.kind == "flight":
            cls = DetectorFormatter if obs.tool == src.DETECTOR else Formatter
            rec = flightrec.to_record(obs.raw, src.HOOKS.get(obs.tool, {}))
            line = cls(flightrec.UptimeClock(), self.run.gso, tool=obs.tool).lines(rec)[0]
            notes = []
            if obs.also is not None:
                notes.append("the same event as input [%d] line %d" % obs.also)
            elif obs.t is not None:
                notes.append("%s on the logs' clock" % obs.time_text)
            if obs.dump is not None:
                notes.append("in the oops's ftrace dump")
            return [line + ("   (flight record, %s)" % "; ".join(notes) if notes
                            else "   (flight record)")]
        if obs.kind == "crash":
            return [self.crash_line(obs)]
        return []

    def crash_line(self, obs):
        f = obs.raw
        head = "crash> struct sk_buff 0x%x%s:" % (obs.skb, " (panic in %s)" % obs.function
                                                  if obs.function else "")
        marks = ["[%s]" % obs.severity] if obs.severity else []
        if f.reason_names:
            marks.append("reasons=%s" % ",".join(f.reason_names))
        if f.undecided_names:
            marks.append("undecided=%s" % ",".join(f.undecided_names))
        return " ".join([head] + marks + ["; ".join(f.text)])

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

    def timeline(self, life):
        items = list(life.obs or [])
        items += [o for o in life.extra if o.also is None]
        # the vmcore's state is the last word; records without a time on the
        # logs' clock follow the logs, in their own clock's order
        items.sort(key=lambda o: (o.kind == "crash", o.t is None,
                                  o.t if o.t is not None else 0, o.ts_ns or 0, o.src,
                                  o.line_no))
        out = []
        for o in items:
            lines = self.lines_of(o)
            dup = self.run.dup_of.get((o.src, o.line_no)) if o.kind in ("log", "json") else None
            if dup is not None and lines:
                lines[0] += "   (also a flight record: input [%d] line %d)" % (dup.src,
                                                                              dup.line_no)
            for i, l in enumerate(lines):
                out.append(("  [%d] " % o.src if i == 0 else "      ") + l)
        return out, items

    # --- a packet's story --------------------------------------------------------------

    def story(self, life, n_at_address):
        run = self.run
        head = "skb 0x%x, %s" % (life.addr, "a packet known only from flight records and "
                                 "crash output" if life.flight_only else
                                 "packet %d of %d at this address" % (life.idx + 1,
                                                                      n_at_address))
        if life.node and life.node[0]:
            head += ", node %s" % life.node[0]
        span = ""
        if life.first_time:
            span = " (%s - %s)" % (life.first_time, life.last_time)
        setter = self.setter_text(life)
        frag = self.frag_text(life)
        seg = self.segment_text(life)
        flows = [(f or "outer not parsed") + (", inner %s" % i if i else "")
                 for f, i in life.flows]
        tl, items = self.timeline(life)
        headers = self.headers(life)
        if self.json:
            d = {"type": "postmortem_skb", "skb": "0x%x" % life.addr,
                 "node": {"host": life.node[0], "boot_id": life.node[1]} if life.node else None,
                 "packet": None if life.flight_only else life.idx + 1,
                 "packets_at_address": n_at_address, "first_time": life.first_time,
                 "last_time": life.last_time, "picked_because": list(life.why),
                 "udp_tunnel": self.setter_dict(life), "frag_list": self.frag_dict(life),
                 "skb_segment": self.segment_dict(life), "flows": [
                     {"flow": f, "inner_flow": i} for f, i in life.flows],
                 "oops": life.oops.to_dict() if life.oops else None,
                 "crash": life.crash[2].raw.as_dict() if life.crash else None,
                 "advice": story.advice(life),
                 "setter": life.setter_label(), "clearer": life.clearer_label(),
                 "timeline": [self.obs_dict(o) for o in items]}
            self.dump(d)
            return
        w = self.write
        w("=== %s%s ===" % (head, span))
        for reason in life.why:
            w("picked:      %s" % reason)
        w("UDP_TUNNEL:  %s" % setter)
        w("frag_list:   %s" % frag)
        for i, l in enumerate(seg):
            w(("skb_segment: " if i == 0 else "             ") + l)
        if life.oops is not None:
            o = life.oops
            w("oops:        %s; RIP %s; %s" % (o.text, o.rip or "?", " <- ".join(
                o.frames[:6]) or "no call trace"))
            regs = [r for r, v in sorted(o.registers.items()) if v == life.addr]
            if regs:
                w("             the skb's address is in %s at the oops" % ", ".join(regs))
        if flows:
            w("packet:      %s" % "; then ".join(flows))
        if headers:
            for i, h in enumerate(headers):
                w(("crash:       " if i == 0 else "             ") + h)
        elif not flows:
            w("packet:      no flow recorded (%s)" % (
                "text logs without --verbose carry none; --verbose and --json do"
                if life.n > len(life.extra) else
                "flight records carry none; crash's rd -8 of the head does"))
        adv = story.advice(life)
        if adv:
            w("advice:      %s" % adv)
        w("timeline:")
        for l in tl:
            w(l)
        w("")

    def setter_text(self, life):
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

    def frag_text(self, life):
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

    def segment_text(self, life):
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

    def headers(self, life):
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

    # --- JSON pieces ----------------------------------------------------------------------

    def obs_dict(self, o):
        return {"input": o.src, "line": o.line_no, "kind": o.kind, "tool": o.tool,
                "time": o.time_text, "event": o.event, "function": o.function,
                "severity": o.severity, "reasons": list(o.reasons),
                "text": self.lines_of(o)[0] if self.lines_of(o) else None,
                "also_flight_record": [self.run.dup_of[(o.src, o.line_no)].src,
                                       self.run.dup_of[(o.src, o.line_no)].line_no]
                if (o.src, o.line_no) in self.run.dup_of and o.kind != "flight" else None}

    def setter_dict(self, life):
        s = life.setter
        if s is None:
            return {"set": life.tunnel_first is not None, "function": None, "pattern": None,
                    "how": None}
        return {"set": True, "function": s["function"], "event": s["event"],
                "pattern": s["pattern"], "how": s["how"], "time": s["when"],
                "input": s["obs"].src, "line": s["obs"].line_no}

    def frag_dict(self, life):
        return {"created": [{"function": c.function, "time": c.time_text,
                             "frag_list": ptr(c.fl_after)} for c in life.created],
                "cleared_by": life.clear_chain(),
                "changes": [{"event": c.event, "function": c.function, "time": c.time_text,
                             "before": ptr(c.fl_before), "after": ptr(c.fl_after),
                             "input": c.src, "line": c.line_no} for c in life.clears],
                "clearer": life.clearer_label()}

    def segment_dict(self, life):
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

    # --- the whole report ---------------------------------------------------------------------

    def header(self):
        run = self.run
        for inp in run.inputs:
            kinds = sorted(inp.kinds) or ["nothing recognised"]
            if self.json:
                self.dump({"type": "postmortem_input", "index": inp.index,
                           "path": inp.label, "kinds": kinds, "events": inp.events,
                           "flight_records": inp.flight, "oopses": inp.oopses,
                           "lost": dict(inp.lost), "first_time": inp.first_time,
                           "last_time": inp.last_time, "malformed_lines": inp.malformed,
                           "static": list(inp.static)})
                continue
            bits = [", ".join(kinds)]
            if inp.events:
                bits.append("%d events %s - %s" % (inp.events, inp.first_time, inp.last_time))
            if inp.flight:
                bits.append("%d flight record lines" % inp.flight)
            if inp.oopses:
                bits.append("%d oops%s" % (inp.oopses, "es" if inp.oopses > 1 else ""))
            for tool, n in sorted(inp.lost.items()):
                if n:
                    bits.append("%s lost %d events: its packets may miss lines" % (tool, n))
            if inp.malformed:
                bits.append("%d malformed JSON lines skipped" % inp.malformed)
            self.write("[%d] %s: %s" % (inp.index, inp.label, "; ".join(bits)))
        for inp in run.inputs:
            for s in inp.static[-1:]:
                if not self.json:
                    self.write("    %s" % s)
        for inp, session in run.sessions:
            self.crash_session(inp, session)
        if self.json:
            self.dump({"type": "postmortem_clock", "flight_records": len(run.flights),
                       "anchors": run.anchors, "offset_s": run.offset,
                       "spread_ms": run.spread * 1e3 if run.spread is not None else None,
                       "gso_names": run.gso.source, "kernel": run.release})
            return
        if run.flights:
            if run.offset is not None:
                self.write("clock: %d flight records; %d also in the logs tie ftrace's clock "
                           "to the logs' (ftrace 0 = %s, spread %.3f ms)" % (
                               len(run.flights), run.anchors, hms(run.offset),
                               run.spread * 1e3))
            else:
                self.write("clock: %d flight records on ftrace's clock, none also in a log: "
                           "each joins the last packet of its skb" % len(run.flights))
        self.write("gso_type names: %s%s" % (run.gso.source, ", kernel %s" % run.release
                                              if run.release else ""))
        self.write("packets: %d at %d skb addresses (an address carries a new packet when "
                   "its stage goes back: docs/skb_postmortem.md)" % (run.lives,
                                                                     run.addresses))
        sel = run.selector
        self.write("picked: %s; telling %d%s" % (
            run.pick_note, len(run.picked), " (--max %d)" % run.args.max
            if run.args.max and sel.total > len(run.picked) else ""))
        self.write("")

    def crash_session(self, inp, session):
        """What a crash transcript says beyond its skbs: where it crashed,
        and the states printed without an address (a pasted shared info)."""
        site = session.crash_site()
        callers = session.callers()
        orphans = [f for f in crashdump.skb_findings(session, self.run.family)
                   if f.skb.addr is None]
        if self.json:
            self.dump({"type": "postmortem_crash", "input": inp.index,
                       "release": session.release,
                       "crash_site": "%s+%s" % site[:2] if site and site[1] else
                       site[0] if site else None, "callers": callers,
                       "skbs": ["0x%x" % a for a in sorted(session.skbs)],
                       "without_address": [f.as_dict() for f in orphans],
                       "errors": list(session.errors)})
            return
        line = "crash [%d]: " % inp.index
        if site:
            line += "panic at %s%s (from %s)" % (site[0], "+" + site[1] if site[1] else "",
                                                 site[2])
            if callers:
                line += " <- " + " <- ".join(callers[:6])
        else:
            line += "no crash site (no bt, no oops RIP)"
        if session.release:
            line += "; kernel %s" % session.release
        self.write(line)
        if not session.skbs:
            self.write("    no struct sk_buff with its address: print the skb the crash frame "
                       "holds (`struct sk_buff ADDR`, ADDR from the registers or `bt -f`)")
        for f in orphans:
            self.write("    printed without an address: %s" % "; ".join(f.text))
            if f.reason_names or f.undecided_names:
                self.write("    %s%s" % (
                    "reasons=%s " % ",".join(f.reason_names) if f.reason_names else "",
                    "undecided=%s (the rest of the state is not in the transcript)"
                    % ",".join(f.undecided_names) if f.undecided_names else ""))

    def summary(self):
        run = self.run
        rows = run.table.sorted_rows()
        if self.json:
            self.dump({"type": "postmortem_summary", "packets": run.table.total(),
                       "addresses": run.addresses, "picked": len(run.picked),
                       "rows": [{"setter": r[0], "clearer": r[1], "packets": r[2],
                                 "advice": r[3], "pattern": r[4]} for r in rows]})
            return
        self.write("--- Packets by (UDP_TUNNEL setter, frag_list clearer) ---")
        if not rows:
            self.write("no packets")
            return
        ws = max(len("UDP_TUNNEL SETTER"), max(len(r[0]) for r in rows))
        self.write("%7s  %-*s  %s" % ("PACKETS", ws, "UDP_TUNNEL SETTER", "FRAG_LIST CLEARER"))
        for setter, clearer, n, adv, _p in rows:
            self.write("%7d  %-*s  %s" % (n, ws, setter, clearer))
            if adv:
                self.write("%7s  -> %s" % ("", adv))


FRAG_LIST_NONE = {
    "none (no frag_list seen)": "no frag_list on this packet as far as the watcher saw (never "
                                "created, nothing cleared)",
    "not traced (no watcher record)": "no watcher record of this packet",
    "kept (frag_list present)": "a frag_list, never cleared",
}
