"""A packet's timeline: every observation printed as its tool printed it
(text log lines verbatim; --json records and flight records through the
tools' own formatters, rebuilt as the decoder's Records)."""
from skbtrace.kernel import decoder, event, flightrec
from skbtrace.output.detector_formatter import DetectorFormatter
from skbtrace.output.formatter import Formatter
from skbtrace.postmortem import sources as src


class _TimeClock(object):
    """A clock for the formatters that prints the time the record carried."""

    def __init__(self):
        self.text = {}

    def hms(self, ts_ns):
        return self.text.get(ts_ns, "?")

    def iso(self, ts_ns):
        return self.text.get(ts_ns)


def json_record(d, tool):
    """A --json event back as the decoder's Record, for the tools' own
    formatters: JSON inputs print as the text the tool would have written."""

    class JsonRecord(decoder.Record):
        flow = None
        inner_flow = None
        last_age_us = None

    hooks_by_name = src.HOOKS[tool]
    e = event.SkbEvent()
    hook = hooks_by_name.get(d.get("function"))
    e.hook_id = hook.hook_id if hook else 0xffff
    e.ts_ns = int(d.get("ts_ns") or 0)
    e.cpu = int(d.get("cpu") or 0)
    e.pid = int(d.get("pid") or 0)
    e.comm = str(d.get("comm") or "").encode("utf-8", "replace")[:15]
    e.event = src.EVENT_NUMBERS.get(d.get("event"), 0)
    e.severity = {"WARNING": 1, "CRITICAL": 2}.get(d.get("severity"), 0)
    e.reasons = sum(event.REASON_NAMES.get(r, 0) for r in d.get("reasons") or [])
    for k in ("skb", "new_skb", "head", "frag_list_before", "frag_list_after"):
        v = d.get(k)
        setattr(e, k, int(v, 16) if isinstance(v, str) else 0)
    for k in ("gso_size_before", "gso_size_after", "gso_type_before", "gso_type_after",
              "gso_segs", "len", "data_len_before", "data_len_after", "nr_frags_before",
              "nr_frags_after", "frags_bytes", "ifindex", "iif", "protocol", "ret", "aux",
              "aux2"):
        v = d.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            try:
                setattr(e, k, v)
            except (TypeError, OverflowError):
                pass
    flags = 0
    flags |= event.F_ENCAP if d.get("encapsulation") else 0
    flags |= event.F_CLONED if d.get("cloned") else 0
    flags |= event.F_AFTER_UNREADABLE if d.get("after_readable") is False else 0
    flags |= event.F_IN_TNL_SEG if d.get("in_tunnel_segment") else 0
    hist = d.get("last") if tool == src.WATCHER else d.get("origin")
    if isinstance(hist, dict):
        flags |= event.F_LAST_STALE if hist.get("other_head") else 0
        flags |= event.F_ORIGIN_ON_ENTRY if hist.get("on_entry") else 0
    v = d.get("virtio")
    if isinstance(v, dict):
        flags |= event.F_VNET_VALID
        for k, attr in (("gso_type", "vnet_gso_type"), ("gso_size", "vnet_gso_size"),
                        ("hdr_len", "vnet_hdr_len"), ("csum_start", "vnet_csum_start"),
                        ("csum_offset", "vnet_csum_offset"), ("flags", "vnet_flags")):
            if isinstance(v.get(k), int):
                setattr(e, attr, v[k])
    e.flags = flags
    r = JsonRecord(e, dict((h.hook_id, h) for h in hooks_by_name.values()))
    r.function = d.get("function") or "?"
    r.flow = d.get("flow")
    r.inner_flow = d.get("inner_flow")
    r.last_function = None
    if isinstance(hist, dict) and isinstance(hist.get("function"), str):
        r.last_function = hist["function"]
        age = hist.get("age_us")
        if hist.get("here"):
            e.last_hook = e.hook_id + 1
            e.last_ts_ns = e.ts_ns
            r.last_age_us = 0
        else:
            h = hooks_by_name.get(hist["function"])
            e.last_hook = (h.hook_id + 1) if h else 0xffff
            if isinstance(age, (int, float)):
                r.last_age_us = age
                e.last_ts_ns = max(1, e.ts_ns - int(age * 1000))
    return r


class Timeline(object):
    """A packet's observations in time order, each as its tool printed it."""

    def __init__(self, run):
        self.run = run

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

    def lines(self, life):
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
            dup = self.run.clock.dup_of.get((o.src, o.line_no)) if o.kind in ("log", "json") else None
            if dup is not None and lines:
                lines[0] += "   (also a flight record: input [%d] line %d)" % (dup.src,
                                                                              dup.line_no)
            for i, l in enumerate(lines):
                out.append(("  [%d] " % o.src if i == 0 else "      ") + l)
        return out, items

    def obs_dict(self, o):
        return {"input": o.src, "line": o.line_no, "kind": o.kind, "tool": o.tool,
                "time": o.time_text, "event": o.event, "function": o.function,
                "severity": o.severity, "reasons": list(o.reasons),
                "text": self.lines_of(o)[0] if self.lines_of(o) else None,
                "also_flight_record": [self.run.clock.dup_of[(o.src, o.line_no)].src,
                                       self.run.clock.dup_of[(o.src, o.line_no)].line_no]
                if (o.src, o.line_no) in self.run.clock.dup_of and o.kind != "flight" else None}
