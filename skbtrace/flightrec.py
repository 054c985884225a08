"""The flight recorder: findings that survive the panic they explain.

Live side: with --flight-recorder the BPF programs also write their crash
findings into the kernel's trace buffer (bpf_trace_printk; bpf/skb_common.h
fr_write), and kernel.ftrace_dump_on_oops makes an oops print that buffer on
the console before kdump or the panic, where crash engineers look:
the serial console, the kdump kernel's vmcore-dmesg, `crash> log`.

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
import errno
import fcntl
import json
import os
import re

from skbtrace import event
from skbtrace.errors import EnvError

SYSCTL = "/proc/sys/kernel/ftrace_dump_on_oops"
# Both tools usually record at once and share the settings: the first to arm
# saves the original values, the last to exit restores them (tmpfs: a reboot
# forgets a stale entry, and dead pids are dropped).
STATE_DIR = "/run/skbtrace"
MODES = {"crash": event.FR_CRASH, "all": event.FR_ALL}
TOOL_IDS = {"skb_frag_list_watcher": 0, "skb_vxlan_source_detector": 1}
SEVERITY_WORDS = {0: "-", 1: "WARNING", 2: "CRITICAL"}
NONE_WORD = "none"


# --- live: what the option changes on the system -----------------------------

def names_table(hooks):
    """fr_names index -> name: the hooks, the events, the severities."""
    out = dict((h.hook_id, h.name) for h in hooks)
    for num, name in event.EVENT_NAMES.items():
        out[event.FR_EVENT_BASE + num] = name
    for num, word in SEVERITY_WORDS.items():
        out[event.FR_SEV_BASE + num] = word
    out[event.FR_SEV_BASE + 3] = NONE_WORD
    return out


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _write(path, value):
    with open(path, "w") as f:
        f.write(value + "\n")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


class _SharedState(object):
    """{"pids": [...], "original": [[path, value, label], ...]} under a lock."""

    def __init__(self):
        self.path = os.path.join(STATE_DIR, "flight-recorder.json")
        self.lock = None

    def __enter__(self):
        try:
            os.makedirs(STATE_DIR, exist_ok=True)
            self.lock = open(os.path.join(STATE_DIR, "flight-recorder.lock"), "w")
            fcntl.flock(self.lock, fcntl.LOCK_EX)
        except (IOError, OSError):
            self.lock = None        # no shared state: each tool on its own
        return self

    def __exit__(self, *exc):
        if self.lock:
            self.lock.close()

    def read(self):
        try:
            with open(self.path) as f:
                st = json.load(f)
        except (IOError, OSError, ValueError):
            st = {}
        st["pids"] = [p for p in st.get("pids", []) if _alive(p) and p != os.getpid()]
        st.setdefault("original", [])
        return st

    def write(self, st):
        if not self.lock:
            return
        if not st["pids"]:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            return
        with open(self.path, "w") as f:
            json.dump(st, f)


class Recorder(object):
    """kernel.ftrace_dump_on_oops on (and tracing_on, if it was off) while the
    tool runs; both restored at exit, by the last skbtrace tool using them.
    check() runs before anything loads."""

    def __init__(self, mode, tracefs_dir):
        self.mode = mode
        self.tracefs = tracefs_dir
        self.saved = []             # (path, old value, label), in the order set
        self.armed = False

    def check(self):
        prog = "--flight-recorder"
        if not os.path.exists(SYSCTL):
            raise EnvError("%s: this kernel has no kernel.ftrace_dump_on_oops (%s; "
                           "CONFIG_FTRACE off?)" % (prog, SYSCTL))
        if not self.tracefs or not os.path.exists(os.path.join(self.tracefs, "trace")):
            raise EnvError("%s: no trace buffer: tracefs is not mounted (mount -t tracefs "
                           "nodev /sys/kernel/tracing)" % prog)
        for path in (SYSCTL, os.path.join(self.tracefs, "tracing_on")):
            if os.path.exists(path) and not os.access(path, os.W_OK):
                raise EnvError("%s: no permission to change %s (run as root on the host; "
                               "a container needs /proc/sys and tracefs writable)"
                               % (prog, path))

    def _set(self, path, value, label):
        try:
            old = _read(path)
            if old != value:
                _write(path, value)
                self.saved.append((path, old, label))
            return old
        except (IOError, OSError) as e:
            self.restore()
            raise EnvError("--flight-recorder: cannot set %s: %s" % (
                label, e.strerror or os.strerror(e.errno or errno.EIO)))

    def arm(self):
        """Set what the recorder needs; returns the lines announcing it."""
        with _SharedState() as shared:
            st = shared.read()
            if st["original"]:
                # another tool armed first (alive, or killed before it could
                # restore): its saved originals are the system's
                self.saved = [tuple(x) for x in st["original"]]
            old = self._set(SYSCTL, "1", "kernel.ftrace_dump_on_oops")
            on = os.path.join(self.tracefs, "tracing_on")
            was = self._set(on, "1", "tracing_on") if os.path.exists(on) else "1"
            for path, value, _label in self.saved:
                if path == SYSCTL:
                    old = value
                elif path == on:
                    was = value
            st["pids"].append(os.getpid())
            st["original"] = [list(x) for x in self.saved]
            shared.write(st)
            self.armed = True
        lines = ["flight recorder (%s): %s also go to the kernel trace buffer as %s records "
                 "(bpf_trace_printk)" % (self.mode, "crash findings" if self.mode == "crash"
                                         else "crash findings, WARNINGs and tunnel-bit setters",
                                         event.FR_PREFIX),
                 "flight recorder: kernel.ftrace_dump_on_oops %s -> 1 (restored at exit): an "
                 "oops prints the trace buffer on the console" % old]
        if was != "1":
            lines.append("flight recorder: %s %s -> 1 (restored at exit)" % (on, was))
        lines.append("note: once per boot the kernel logs a 'trace_printk() being used' NOTICE "
                     "for BPF programs that use bpf_trace_printk: expected, harmless")
        return lines

    def restore(self):
        """Put every changed value back, unless another skbtrace tool still
        records (then the last one does); returns what was done."""
        out = []
        if self.armed:
            self.armed = False
            with _SharedState() as shared:
                st = shared.read()
                if st["pids"]:
                    shared.write(st)
                    self.saved = []
                    return ["kernel.ftrace_dump_on_oops left on: still used by pid %s, which "
                            "restores it" % ",".join(str(p) for p in st["pids"])]
                shared.write(st)
        while self.saved:
            path, old, label = self.saved.pop()
            try:
                _write(path, old)
                out.append("%s restored to %s" % (label, old))
            except (IOError, OSError) as e:
                out.append("%s NOT restored to %s: %s" % (label, old, e.strerror))
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
    from skbtrace import decoder
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
