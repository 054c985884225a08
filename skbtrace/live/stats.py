"""Counts kept while tracing and the table printed at exit (SIGINT/SIGTERM).

Layout follows the users' guide (seed 001) and adds what the guide missed:
per-hook hits and events, hooks that were skipped and why, events lost per
CPU buffer (perf_submit failures counted in the kernel) and in user space
(bcc's lost callback)."""
from collections import OrderedDict

from skbtrace.kernel import event


def lost_total(kernel, lost_cb_total):
    """A full perf buffer fails the bpf_perf_event_output() (counted per CPU
    in the kernel) and the kernel later reports the same drop to the reader
    as PERF_RECORD_LOST (bcc's lost callback): two views of one loss, so the
    total is the larger, not the sum (the lab's demo showed 297 and 297)."""
    return max(sum(kernel.get("SUBMIT_FAIL", [])), lost_cb_total)


class Stats(object):
    def __init__(self, hooks, event_names):
        self.hooks = hooks
        self.event_names = event_names      # the events this tool can emit, in order
        self.tool = None                    # the tool's name, for --json
        self.by_event = OrderedDict((n, 0) for n in event_names)
        self.by_severity = {"WARNING": 0, "CRITICAL": 0}
        self.by_hook = {}
        self.total = 0
        self.decode_errors = 0
        self.stacks = False                 # --stack-trace: count events that have none
        self.buffer = "perf"                # the event buffer: "perf" or "ring"
        self.no_stack = OrderedDict()       # why -> events (errno name of bpf_get_stack)
        self.flight_recorder = None         # --flight-recorder mode
        self.flight_restored = []           # what was put back at exit
        self.extra = OrderedDict()          # tool-specific "label: value" lines
        self.extra_lines = []               # tool-specific sections (the detector's verdict)
        self.extra_dict = {}
        # The runner's fast path (skbtrace/output/fastpath.py) counts here instead of
        # calling add(): one dict update per event, keyed by
        # raw_key(hook_id, event, severity); render() and to_dict() fold it
        # into the counts above first.
        self.raw = {}

    def add(self, record):
        self.total += 1
        name = record.event_name
        self.by_event[name] = self.by_event.get(name, 0) + 1
        if record.severity_name:
            self.by_severity[record.severity_name] += 1
        self.by_hook[record.hook_id] = self.by_hook.get(record.hook_id, 0) + 1
        if self.stacks and not record.stack_addrs:
            why = record.stack_error or "empty"
            self.no_stack[why] = self.no_stack.get(why, 0) + 1

    def fold(self):
        """Move the fast path's counts into total, by_event, by_severity and
        by_hook. Keys are in the order their first event came (dicts keep
        insertion order, CPython 3.6 included), so events outside
        event_names are listed in the order add() would have listed them."""
        raw = self.raw
        if not raw:
            return
        for key, n in raw.items():
            hook_id, ev, sev = key & 0xffff, (key >> 16) & 0xff, key >> 24
            self.total += n
            name = event.EVENT_NAMES.get(ev, "EVENT%d" % ev)
            self.by_event[name] = self.by_event.get(name, 0) + n
            sev_name = event.SEVERITY_NAMES.get(sev, "")
            if sev_name:
                self.by_severity[sev_name] += n
            self.by_hook[hook_id] = self.by_hook.get(hook_id, 0) + n
        raw.clear()

    def render(self, kernel, lost_cb_total, hook_hits, attach_notes=None, hook_lost=None):
        """kernel: dict counter name -> per-CPU list (from Program.counters())."""
        self.fold()
        out = ["", "--- Statistics ---", "%-20s%d" % ("Total events:", self.total)]
        for name, n in self.by_event.items():
            label = "%s:" % name if name == "INCONSISTENT" else "%s events:" % name
            out.append("  %-18s%d" % (label, n))
        # Severity is carried by CLEAR and segmentation lines too, not only by
        # INCONSISTENT: next to the INCONSISTENT count it read as "25 of 15".
        out.append("  %-18sCRITICAL %d, WARNING %d (any event type)" % (
            "Findings:", self.by_severity["CRITICAL"], self.by_severity["WARNING"]))
        filtered = sum(kernel.get("FILTERED", []))
        out.append("  %-18s%d" % ("Filtered out:", filtered))
        per_cpu = " ".join("cpu%d=%d" % (i, n) for i, n in
                           enumerate(kernel.get("SUBMIT_FAIL", []))) or "n/a"
        if self.buffer == "ring":
            out.append("%-20s%d (kernel side, ring buffer full, by emitting CPU: %s)" % (
                "Lost events:", lost_total(kernel, lost_cb_total), per_cpu))
        else:
            out.append("%-20s%d (kernel side, per CPU buffer: %s; user side, perf lost "
                       "callback: %d)" % ("Lost events:", lost_total(kernel, lost_cb_total),
                                          per_cpu, lost_cb_total))
        unpaired = sum(kernel.get("UNPAIRED", []))
        full = sum(kernel.get("ENTRY_FULL", []))
        stage_fail = sum(kernel.get("STAGE_FAIL", []))
        too_deep = sum(kernel.get("TOO_DEEP", []))
        if unpaired or full or stage_fail or too_deep:
            out.append("%-20s%d unpaired returns, %d entry records not stored (map full), "
                       "%d failed stage calls, %d hits nested too deep to trace" % (
                           "Bookkeeping:", unpaired, full, stage_fail, too_deep))
        if self.flight_recorder:
            fr = self.flight_dict(kernel)
            out.append("%-20s%s: %d records written to the trace buffer, %d suppressed by the "
                       "rate limit (%d/s per CPU and class), %d refused by bpf_trace_printk%s" % (
                           "Flight recorder:", fr["mode"], fr["written"], fr["suppressed"],
                           event.FR_RATE_PER_SEC, fr["failed"],
                           "; " + "; ".join(fr["restored"]) if fr["restored"] else ""))
        if self.stacks:
            out.append("%-20s%d events without a stack%s" % (
                "Stacks:", sum(self.no_stack.values()), "".join(
                    " (%s %d)" % kv for kv in self.no_stack.items())))
        for k, v in self.extra.items():
            out.append("%-20s%s" % (k + ":", v))
        hook_lost = hook_lost or {}
        out.append("Hooks:")
        out.append("  %-26s %10s %8s %6s  %s" % ("HOOK", "HITS", "EVENTS", "LOST", "STATUS"))
        for h in self.hooks:
            if h.symbol:
                status = "attached %s %s" % (getattr(h, "backend", "kprobe"), h.symbol)
                if attach_notes and h.name in attach_notes:
                    status += " (%s)" % attach_notes[h.name]
                out.append("  %-26s %10d %8d %6d  %s" % (
                    h.name, hook_hits.get(h.hook_id, 0), self.by_hook.get(h.hook_id, 0),
                    hook_lost.get(h.hook_id, 0), status))
            else:
                out.append("  %-26s %10s %8s %6s  skipped: %s" % (
                    h.name, "-", "-", "-", h.skip_reason or "not attached"))
        if self.decode_errors:
            out.append("Events dropped as undecodable: %d" % self.decode_errors)
        out.extend(self.extra_lines)
        return out

    def flight_dict(self, kernel):
        return {"mode": self.flight_recorder,
                "written": sum(kernel.get("FR_WRITTEN", [])),
                "suppressed": sum(kernel.get("FR_SUPPRESSED", [])),
                "suppressed_per_cpu": list(kernel.get("FR_SUPPRESSED", [])),
                "failed": sum(kernel.get("FR_FAILED", [])),
                "restored": list(self.flight_restored)}

    def to_dict(self, kernel, lost_cb_total, hook_hits, hook_lost=None):
        self.fold()
        d = {
            "type": "statistics",
            "tool": self.tool,
            "total_events": self.total,
            "events": dict(self.by_event),
            "severity": dict(self.by_severity),
            "filtered_out": sum(kernel.get("FILTERED", [])),
            "buffer": self.buffer,
            "lost_per_cpu": list(kernel.get("SUBMIT_FAIL", [])),
            "lost_user_space": lost_cb_total,
            "lost_total": lost_total(kernel, lost_cb_total),
            "unpaired_returns": sum(kernel.get("UNPAIRED", [])),
            "entry_map_full": sum(kernel.get("ENTRY_FULL", [])),
            "stage_call_failures": sum(kernel.get("STAGE_FAIL", [])),
            "nested_too_deep": sum(kernel.get("TOO_DEEP", [])),
            "events_without_stack": dict(self.no_stack) if self.stacks else None,
            "flight_recorder": self.flight_dict(kernel) if self.flight_recorder else None,
            "extra": dict(self.extra),
            "hooks": [{"name": h.name, "symbol": h.symbol,
                       "backend": getattr(h, "backend", "kprobe") if h.symbol else None,
                       "backend_why": getattr(h, "backend_why", None) if h.symbol else None,
                       "hits": hook_hits.get(h.hook_id, 0) if h.symbol else None,
                       "events": self.by_hook.get(h.hook_id, 0),
                       "lost": (hook_lost or {}).get(h.hook_id, 0) if h.symbol else None,
                       "skipped": h.skip_reason} for h in self.hooks],
        }
        d.update(self.extra_dict)
        return d


def raw_key(hook_id, ev, severity):
    """Stats.raw's key: hook_id (u16), event (u8) and severity (u8) of an
    event in one int."""
    return hook_id | ev << 16 | severity << 24


WATCHER_EVENTS = [event.EVENT_NAMES[v] for v in (
    event.EV_CREATE, event.EV_CLEAR, event.EV_MODIFY, event.EV_PROPAGATE,
    event.EV_COPY_FAIL, event.EV_ACCESS, event.EV_INCONSISTENT)]
