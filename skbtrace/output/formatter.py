"""Record -> text lines or one JSON object per line.

Column layout and markers follow the users' guide (seed 001): default
`TIME CPU EVENT FUNCTION | SKB | CHANGE`, `--verbose` adds COMM, PID,
FRAG_LIST, GSO_INFO and a `  -> Flow:` line. Markers: `[!!]` on every CLEAR,
`[WARNING]` / `[CRITICAL]` by the severity the kernel side computed. Every line
with a reason names the last hook that changed that skb (`last=`).
"""
from skbtrace.kernel import event
from skbtrace.output import fastpath, record
from skbtrace.output.clock import TIME_W


def ptr(value):
    return "NULL" if not value else "0x%016x" % value


def change_text(value_before, value_after, fmt=str):
    if value_before == value_after:
        return fmt(value_after)
    return "%s->%s" % (fmt(value_before), fmt(value_after))


class Formatter(object):
    def __init__(self, clock, gso, verbose=False, json_mode=False, tool="skb_frag_list_watcher",
                 stacks=False):
        self.clock = clock
        self.gso = gso
        self.verbose = verbose
        self.json_mode = json_mode
        self.tool = tool
        self.stacks = stacks        # --stack-trace: every event shows its stack or says why not
        self.buffer = "perf"        # the event buffer, "perf" or "ring", for [LOST n] lines

    def handler(self, hooks_by_id, stats, symbols=None):
        """The runner's fast path (skbtrace/output/fastpath.py): perf-buffer bytes
        -> the event's lines as lines() writes them, each ending in a
        newline, counted in stats. None for a subclass the fast path does not
        know: the runner then goes through Decoder, Stats.add() and lines()."""
        if type(self) is not Formatter:
            return None
        return fastpath.watcher_handler(self, hooks_by_id, stats, symbols)

    # --- text -----------------------------------------------------------------

    def header(self):
        if self.json_mode:
            return []
        if self.verbose:
            h = "%-*s %-3s %-16s %-7s %-12s %-24s | %-18s | %-40s | %s" % (
                TIME_W, "TIME", "CPU", "COMM", "PID", "EVENT", "FUNCTION", "SKB",
                "FRAG_LIST", "GSO_INFO")
        else:
            h = "%-*s %-3s %-12s %-24s | %-18s | %s" % (
                TIME_W, "TIME", "CPU", "EVENT", "FUNCTION", "SKB", "CHANGE")
        return [h, "-" * len(h)]

    def gso_type_text(self, value):
        return "0x%x(%s)" % (value, self.gso.names(value))

    def frag_list_text(self, r):
        e = r.ev
        if e.event in (event.EV_CREATE, event.EV_CLEAR, event.EV_MODIFY):
            return "%s -> %s" % (ptr(e.frag_list_before), ptr(e.frag_list_after))
        if e.event == event.EV_PROPAGATE:
            return "%s new_skb=%s" % (ptr(e.frag_list_after), ptr(e.new_skb))
        if e.event == event.EV_COPY_FAIL:
            return "%s new_skb=NULL" % ptr(e.frag_list_before)
        return "%s (no change)" % ptr(e.frag_list_before)

    def markers(self, r):
        out = []
        if r.ev.event == event.EV_CLEAR:
            out.append("[!!]")
        if r.severity_name:
            out.append("[%s]" % r.severity_name)
        return out

    def detail(self, r):
        """What a line with a finding needs to be read on its own."""
        e = r.ev
        out = []
        if e.reasons:
            out.append("reasons=%s" % ",".join(r.reasons_list))
            out.append("gso_size=%d gso_type=%s" % (e.gso_size_after if r.after_readable else
                                                    e.gso_size_before,
                                                    self.gso_type_text(e.gso_type_after if
                                                                       r.after_readable else
                                                                       e.gso_type_before)))
            out.append("len=%d data_len=%d nr_frags=%d frags_bytes=%d" % (
                e.len, e.data_len_after, e.nr_frags_after, e.frags_bytes))
        if e.event == event.EV_COPY_FAIL:
            out.append("gso_type=%s (the copy refuses SKB_GSO_FRAGLIST)"
                       % self.gso_type_text(e.gso_type_before))
        if e.event in (event.EV_ACCESS, event.EV_INCONSISTENT) and not r.after_readable:
            out.append("ret=%d" % e.ret)
        if e.flags & event.F_IN_TNL_SEG:
            out.append("in=skb_udp_tunnel_segment")
        if e.reasons or e.event in (event.EV_CLEAR, event.EV_MODIFY, event.EV_ACCESS):
            out.append("last=%s" % self.last_text(r))
        return out

    def last_text(self, r):
        if not r.last_function:
            return "none"
        txt = r.last_function
        age = r.last_age_us
        if age is not None:
            txt += "(+%dus)" % int(age)
        if r.ev.flags & event.F_LAST_STALE:
            txt += "(other head)"
        return txt

    def lines(self, r):
        if self.json_mode:
            return [record.dumps(self.to_dict(r))]
        e = r.ev
        tail = self.markers(r) + self.detail(r)
        if self.verbose:
            gso = "type=%s size=%s segs=%d" % (
                change_text(e.gso_type_before, e.gso_type_after, self.gso_type_text),
                change_text(e.gso_size_before, e.gso_size_after), e.gso_segs)
            first = "%-*s %-3d %-16s %-7d %-12s %-24s | 0x%016x | %-40s | %s" % (
                TIME_W, self.clock.hms(e.ts_ns), e.cpu, r.comm_text, e.pid, r.event_name,
                r.function, e.skb, self.frag_list_text(r), gso)
            out = [" ".join([first] + tail)]
            flow = r.flow or "not IP (protocol 0x%04x)" % e.protocol
            parts = ["  -> Flow: %s" % flow]
            if r.inner_flow:
                parts.append("inner: %s" % r.inner_flow)
            parts.append("len=%d data_len=%s nr_frags=%s cloned=%d encap=%d dev=%d iif=%d" % (
                e.len, change_text(e.data_len_before, e.data_len_after),
                change_text(e.nr_frags_before, e.nr_frags_after), r.cloned, r.encap,
                e.ifindex, e.iif))
            out.append(" | ".join(parts))
        else:
            first = "%-*s %-3d %-12s %-24s | 0x%016x | %s" % (
                TIME_W, self.clock.hms(e.ts_ns), e.cpu, r.event_name, r.function, e.skb,
                self.frag_list_text(r))
            out = [" ".join([first] + tail)]
        return out + self.stack_lines(r)

    def stack_lines(self, r):
        """The event's own stack, indented under it. An event without one
        says so: a reader must never take the next event's stack for it."""
        if not self.stacks:
            return []
        if r.stack:
            return ["        %s" % s for s in r.stack]
        return ["        [no stack: %s]" % (r.stack_error or "none recorded")]

    def lost_lines(self, lost, per_cpu, per_hook, ts_ns):
        """A loss where it happened in the stream: bcc reports the dropped
        records of a perf buffer (PERF_RECORD_LOST) in order among the
        others; a ring buffer's are the kernel's failed reservations, counted
        after the records read before the check (Program.lost_check()).
        per_cpu and per_hook: the kernel's submit-failure counts since the
        last such line."""
        if self.json_mode:
            return [record.dumps({"type": "lost", "tool": self.tool,
                                  "time": self.clock.iso(ts_ns), "ts_ns": ts_ns,
                                  "lost": lost, "per_cpu": list(per_cpu),
                                  "per_hook": dict(per_hook)})]
        where = " ".join("cpu%d=%d" % (i, n) for i, n in enumerate(per_cpu) if n)
        hooks = " ".join("%s=%d" % kv for kv in sorted(per_hook.items()) if kv[1])
        return ["%-*s %-3s [LOST %d] %s buffer full: %d events dropped before this line%s%s"
                % (TIME_W, self.clock.hms(ts_ns), "-", lost, self.buffer, lost,
                   " (%s)" % where if where else "", "; hooks: " + hooks if hooks else "")]

    # --- JSON -----------------------------------------------------------------

    def to_dict(self, r):
        """The --json schema (docs/skb_frag_list_watcher.md lists the keys)."""
        e = r.ev
        d = {
            "type": "event",
            "tool": self.tool,
            "time": self.clock.iso(e.ts_ns),
            "ts_ns": e.ts_ns,
            "cpu": e.cpu,
            "pid": e.pid,
            "comm": r.comm_text,
            "event": r.event_name,
            "function": r.function,
            "skb": "0x%x" % e.skb,
            "new_skb": "0x%x" % e.new_skb if e.new_skb else None,
            "head": "0x%x" % e.head,
            "frag_list_before": "0x%x" % e.frag_list_before if e.frag_list_before else None,
            "frag_list_after": "0x%x" % e.frag_list_after if e.frag_list_after else None,
            "gso_size_before": e.gso_size_before,
            "gso_size_after": e.gso_size_after,
            "gso_type_before": e.gso_type_before,
            "gso_type_after": e.gso_type_after,
            "gso_type_names": self.gso.names(e.gso_type_after if r.after_readable
                                             else e.gso_type_before),
            "gso_segs": e.gso_segs,
            "len": e.len,
            "data_len_before": e.data_len_before,
            "data_len_after": e.data_len_after,
            "nr_frags_before": e.nr_frags_before,
            "nr_frags_after": e.nr_frags_after,
            "frags_bytes": e.frags_bytes,
            "cloned": r.cloned,
            "encapsulation": r.encap,
            "after_readable": r.after_readable,
            "ifindex": e.ifindex,
            "iif": e.iif,
            "protocol": e.protocol,
            "flow": r.flow,
            "inner_flow": r.inner_flow,
            "severity": r.severity_name or None,
            "reasons": r.reasons_list,
            "last": None,
            "ret": e.ret,
            "aux": e.aux,
            "in_tunnel_segment": bool(e.flags & event.F_IN_TNL_SEG),
            "stack": list(r.stack),
            "stack_error": r.stack_error if self.stacks else None,
        }
        if r.last_function:
            d["last"] = {"function": r.last_function, "age_us": r.last_age_us,
                         "other_head": bool(e.flags & event.F_LAST_STALE)}
        return d
