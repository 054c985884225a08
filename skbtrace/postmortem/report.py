"""What skb_postmortem prints: the inputs, the clock, each packet's story
(its sections rendered by sections.py, its timeline by timeline.py), the
table of packets by (UDP_TUNNEL setter, frag_list clearer); text or --json
records."""
from skbtrace.output import record
from skbtrace.postmortem import crashdump, story
from skbtrace.postmortem.run import hms
from skbtrace.postmortem.sections import (CrashPacketSection, FragListSection, SegmentSection,
                                          UdpTunnelSection)
from skbtrace.postmortem.timeline import Timeline

TOOL = "skb_postmortem"


class Report(object):
    def __init__(self, run, sink):
        self.run = run
        self.sink = sink
        self.json = run.args.json
        self.timeline = Timeline(run)
        self.udp_tunnel = UdpTunnelSection(run)
        self.frag_list = FragListSection()
        self.segment = SegmentSection(run)
        self.crash_packet = CrashPacketSection()

    def write(self, line=""):
        self.sink.write(line)

    def dump(self, d):
        d["tool"] = TOOL
        self.write(record.dumps(d))

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
        setter = self.udp_tunnel.text(life)
        frag = self.frag_list.text(life)
        seg = self.segment.lines(life)
        flows = [(f or "outer not parsed") + (", inner %s" % i if i else "")
                 for f, i in life.flows]
        tl, items = self.timeline.lines(life)
        headers = self.crash_packet.lines(life)
        if self.json:
            d = {"type": "postmortem_skb", "skb": "0x%x" % life.addr,
                 "node": {"host": life.node[0], "boot_id": life.node[1]} if life.node else None,
                 "packet": None if life.flight_only else life.idx + 1,
                 "packets_at_address": n_at_address, "first_time": life.first_time,
                 "last_time": life.last_time, "picked_because": list(life.why),
                 "udp_tunnel": self.udp_tunnel.to_dict(life), "frag_list": self.frag_list.to_dict(life),
                 "skb_segment": self.segment.to_dict(life), "flows": [
                     {"flow": f, "inner_flow": i} for f, i in life.flows],
                 "oops": life.oops.to_dict() if life.oops else None,
                 "crash": life.crash[2].raw.as_dict() if life.crash else None,
                 "advice": story.advice(life),
                 "setter": life.setter_label(), "clearer": life.clearer_label(),
                 "timeline": [self.timeline.obs_dict(o) for o in items]}
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
                       "anchors": run.clock.anchors, "offset_s": run.clock.offset,
                       "spread_ms": run.clock.spread * 1e3 if run.clock.spread is not None else None,
                       "gso_names": run.gso.source, "kernel": run.release})
            return
        if run.flights:
            if run.clock.offset is not None:
                self.write("clock: %d flight records; %d also in the logs tie ftrace's clock "
                           "to the logs' (ftrace 0 = %s, spread %.3f ms)" % (
                               len(run.flights), run.clock.anchors, hms(run.clock.offset),
                               run.clock.spread * 1e3))
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
