"""The flight recorder: findings that survive the panic they explain.

Live side (skbtrace/live/flight_recorder.py): with --flight-recorder the BPF
programs also write their crash findings into the kernel's trace buffer
(bpf_trace_printk; bpf/skb_common.h fr_write), and kernel.ftrace_dump_on_oops
makes an oops print that buffer on the console before kdump or the panic,
where crash engineers look: the serial console, the kdump kernel's
vmcore-dmesg, `crash> log`.

Offline side: parse() finds those records anywhere in a text (console
capture, dmesg, journalctl -k, crash> log) and turns them back into the
tools' own records, so the same formatter prints them as text or JSON.

Record layout, version 2 (FR_PREFIX "SKBFR2", FR_LINES 7 lines, each
"SKBFR2 <seq> <n>/7 ..."; seq is tool << 31 | CPU << 24 | per-CPU count).
The first line alone answers `grep CRITICAL`: severity, tool, hook, skb.
  1/7 <tool> <SEVERITY or -> hook=<name> skb=0x<64-bit address>
  2/7 event=<EVENT> reasons=0x<hex>
  3/7 len=<u> data_len=<u>
  4/7 nr_frags=<u> frag_list=0x<hex>
  5/7 gso_size=<u> gso_type=0x<hex>
  6/7 flags=0x<hex>
  7/7 last=<hook>|origin=<hook> age_us=<u>     (none: no history)
Version 1 ("SKBFR1", still read: consoles kept from before) had the same
fields in another order, the skb on the second line:
  1/7 <tool> <SEVERITY or -> reasons=0x<hex>
  2/7 hook=<name> skb=0x<64-bit address>
  3/7 event=<EVENT> len=<u>
  4/7 data_len=<u> nr_frags=<u>
  5/7 frag_list=0x<hex> gso_size=<u>
  6/7 gso_type=0x<hex> flags=0x<hex>
  7/7 last=<hook>|origin=<hook> age_us=<u>
Every field is key=value but the first line's two words, so one reader
serves both.
"""
import re

from skbtrace.kernel import decoder, event

TOOL_IDS = {"skb_frag_list_watcher": 0, "skb_vxlan_source_detector": 1}
SEVERITY_WORDS = {0: "-", 1: "WARNING", 2: "CRITICAL"}
NONE_WORD = "none"


# --- what the BPF side names ------------------------------------------------

def names_table(hooks):
    """fr_names index -> name: the hooks, the events, the severities."""
    out = dict((h.hook_id, h.name) for h in hooks)
    for num, name in event.EVENT_NAMES.items():
        out[event.FR_EVENT_BASE + num] = name
    for num, word in SEVERITY_WORDS.items():
        out[event.FR_SEV_BASE + num] = word
    out[event.FR_SEV_BASE + 3] = NONE_WORD
    return out


# --- offline: records back from any text --------------------------------------

# every layout parse() reads, oldest first; the newest is what the BPF writes
PREFIXES = ("SKBFR1", event.FR_PREFIX)
# what all of them start with: a cheap test before the regular expression
LINE_MARK = "SKBFR"
_LINE_RE = re.compile("(%s)" % "|".join(re.escape(p) for p in PREFIXES) +
                      r" ([0-9a-f]{1,8}) ([1-9])/(\d) ?(.*?)\s*$")
# ftrace's own timestamp in front of the record: "1234.567890: ..." (trace
# file, console dump with the default clock) or "123456789us : ..." (latency
# format)
_TS_RE = re.compile(r"(\d+)\.(\d{6}): |(\d+)us : ")
_KV_RE = re.compile(r"([a-z_]+)=(\S+)")


class FlightRecord(object):
    """One record put back together from its lines."""

    def __init__(self, seq, prefix=event.FR_PREFIX):
        self.seq = seq
        self.prefix = prefix        # the layout's version: one of PREFIXES
        self.parts = {}
        self.ts_ns = None           # ftrace's clock (uptime-like), when the text had it
        self.line_no = None         # where its first line was in the input

    @property
    def complete(self):
        return len(self.parts) == event.FR_LINES

    @property
    def cpu(self):
        return (self.seq >> 24) & 0x7f

    def field(self, key, default=None):
        for text in self.parts.values():
            for k, v in _KV_RE.findall(text):
                if k == key:
                    return v
        return default

    def int_field(self, key):
        v = self.field(key)
        try:
            return int(v, 0) if v is not None else None
        except ValueError:
            return None

    @property
    def tool(self):
        words = self.parts.get(1, "").split()
        return words[0] if words else None

    @property
    def severity(self):
        words = self.parts.get(1, "").split()
        return words[1] if len(words) > 1 and words[1] != "-" else None

    @property
    def history_key(self):
        for k, _v in _KV_RE.findall(self.parts.get(7, "")):
            if k in ("last", "origin"):
                return k
        return None

    @property
    def history(self):
        v = self.field(self.history_key) if self.history_key else None
        return None if v in (None, NONE_WORD) else v


def parse(lines):
    """Yield FlightRecords from an iterable of text lines, in the order their
    first line appears, either version. A record is keyed by its version and
    sequence number; records of one CPU never interleave (one BPF program at
    a time per CPU), so a new 1/7 line for a sequence number already seen
    starts a new record (a restarted tool counts from 1 again). Incomplete records (the dump was cut)
    are yielded too, with .complete False."""
    open_recs = {}
    done = []
    order = 0
    for n, line in enumerate(lines, 1):
        if LINE_MARK not in line:
            continue
        m = _LINE_RE.search(line)
        if not m:
            continue
        prefix = m.group(1)
        seq, part, total = int(m.group(2), 16), int(m.group(3)), int(m.group(4))
        if total != event.FR_LINES or part > total:
            continue
        key = (prefix, seq)
        rec = open_recs.get(key)
        if part == 1 or rec is None or part in rec.parts:
            rec = FlightRecord(seq, prefix)
            rec.line_no = n
            open_recs[key] = rec
            done.append((order, rec))
            order += 1
        rec.parts[part] = m.group(5)
        if rec.ts_ns is None:
            t = _TS_RE.search(line[:m.start()])
            if t:
                rec.ts_ns = (int(t.group(1)) * 10 ** 9 + int(t.group(2)) * 1000) if t.group(1) \
                    else int(t.group(3)) * 1000
    for _o, rec in done:
        yield rec


class UptimeClock(object):
    """Flight records carry ftrace's clock, not wall time: show it as such."""

    def hms(self, ts_ns):
        return "%15s" % ("[%.6f]" % (ts_ns / 1e9) if ts_ns else "[?]")

    def iso(self, ts_ns):
        return "uptime+%.6f" % (ts_ns / 1e9) if ts_ns else None


def to_record(fr, hooks_by_name=None):
    """A FlightRecord as the decoder's Record, so Formatter prints it like a
    live event. hooks_by_name: name -> Hook of the tool that wrote it."""
    ev = event.SkbEvent()
    names = dict((v, k) for k, v in event.EVENT_NAMES.items())
    sevs = dict((v, k) for k, v in SEVERITY_WORDS.items())
    hooks_by_name = hooks_by_name or {}
    hook = hooks_by_name.get(fr.field("hook"))
    hist = hooks_by_name.get(fr.history)
    ev.hook_id = hook.hook_id if hook else 0xffff
    ev.event = names.get(fr.field("event"), 0)
    ev.severity = sevs.get(fr.severity or "-", 0)
    ev.reasons = fr.int_field("reasons") or 0
    ev.skb = fr.int_field("skb") or 0
    ev.len = fr.int_field("len") or 0
    ev.data_len_before = ev.data_len_after = fr.int_field("data_len") or 0
    ev.nr_frags_before = ev.nr_frags_after = fr.int_field("nr_frags") or 0
    ev.frag_list_before = ev.frag_list_after = fr.int_field("frag_list") or 0
    ev.gso_size_before = ev.gso_size_after = fr.int_field("gso_size") or 0
    ev.gso_type_before = ev.gso_type_after = fr.int_field("gso_type") or 0
    ev.flags = (fr.int_field("flags") or 0) & 0xff & ~event.F_AFTER_UNREADABLE
    ev.cpu = fr.cpu
    age = fr.int_field("age_us") or 0
    ev.ts_ns = fr.ts_ns or (age * 1000 + 1)
    if fr.history:
        ev.last_hook = (hist.hook_id + 1) if hist else 0xffff
        ev.last_ts_ns = max(1, ev.ts_ns - age * 1000)
    by_id = dict((h.hook_id, h) for h in hooks_by_name.values())
    rec = decoder.Record(ev, by_id)
    rec.function = fr.field("hook") or "?"
    rec.last_function = fr.history
    rec.flight = fr
    return rec
