"""skb_postmortem's inputs: what a file holds, recognised by its content, and
its lines turned into observations of skbs.

A file is read as bytes (gzip by its magic, whatever its name; `-` is stdin,
spooled to a temporary file because everything is read twice), line by line
with a bound on the line length, so a 1 GB log never sits in memory and a
binary file cannot make one giant line. Every recognizer runs on every line:
a console capture holds an oops and flight records, a `crash> log` holds
both, a DaemonSet's container log holds JSON records behind the runtime's
prefix.

  tool logs     both tools' text lines (default and --verbose, with their
                `  -> Flow:` and stack lines) and --json records: one
                Observation per event, in the order of the file
  flight        SKBFR2 / SKBFR1 records (skbtrace.kernel.flightrec.parse)
  oops          BUG/Oops/RIP/Call Trace/registers, and the ftrace dump an
                oops printed (the records in it belong to that oops)
  crash         text saved from `crash`: handed whole to skbtrace.postmortem.crashdump

Errors a user can fix (unreadable, empty, binary, corrupt gzip) are
InputError: one line, exit 2.
"""
import datetime
import gzip
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zlib

from skbtrace.kernel import event, flightrec, hooks
from skbtrace.postmortem import crashdump
from skbtrace.errors import UserError

WATCHER = "skb_frag_list_watcher"
DETECTOR = "skb_vxlan_source_detector"
TOOLS = (WATCHER, DETECTOR)

# A line longer than this is not one of ours (the longest, a JSON event with
# --stack-trace, is ~6 KB): the rest of it is skipped unread.
MAX_LINE = 1 << 20
SNIFF_LINES = 4000
SNIFF_BYTES = 4 << 20
GZIP_MAGIC = b"\x1f\x8b"

EVENT_NUMBERS = dict((v, k) for k, v in event.EVENT_NAMES.items())
DETECTOR_ONLY = set(name for name in EVENT_NUMBERS if EVENT_NUMBERS[name] >= event.EV_VIRTIO_RX)


class InputError(UserError):
    """Input the user can fix or replace: one line, exit 2."""


class Observation(object):
    """One thing an input says about one skb at one time: a tool's event
    (text or JSON), a flight record, or a `crash` state. Fields a source
    does not carry stay None."""

    # class-level defaults: a log line sets a few fields, the rest read None
    # without costing a store (the hot path of a 1 GB log)
    t = time_text = ts_ns = cpu = event = function = skb = node = severity = None
    gso_before = gso_after = gso_names = gso_size = length = data_len = nr_frags = None
    frags_bytes = fl_before = fl_after = new_skb = last = origin = tunnel = in_tnl = None
    encap = flow = inner_flow = detail = dump = also = _tail = tunnel_bit = None
    reasons = ()

    def __init__(self, src, line_no, tool, kind):
        self.src, self.line_no, self.tool, self.kind = src, line_no, tool, kind
        self.stack = []
        self.raw = []

    def details(self):
        """Parse the rest of a text line (deferred: most lines of a long log
        only need glance())."""
        if self._tail is not None:
            tail, self._tail = self._tail, None
            _details(self, tail)
        return self

    def glance(self):
        """What a packet's summary needs from a line that is neither a
        frag_list change, nor segmentation, nor the detector's: severity and
        whether the tunnel bit is there (last= is read already)."""
        tail = self._tail
        if tail is not None and "[" in tail:
            if "[CRITICAL]" in tail:
                self.severity = "CRITICAL"
            elif "[WARNING]" in tail:
                self.severity = "WARNING"
        self.tunnel_bit = tail is not None and "UDP_TUNNEL" in tail

    def ref(self):
        return Ref(self)

    def gso_type(self):
        """gso_type the state ended in (after the hook, when readable)."""
        return self.gso_after if self.gso_after is not None else self.gso_before

    def has_tunnel(self, gso_table):
        if self.gso_names:
            return "UDP_TUNNEL" in self.gso_names
        if self.tunnel_bit is not None:
            return self.tunnel_bit
        v = self.gso_type()
        return bool(v and v & gso_table.tunnel_mask())



class Ref(object):
    """What a packet's summary keeps of an observation: the observation
    itself, with its text, would keep every open packet's lines alive."""

    __slots__ = ("src", "line_no", "tool", "kind", "time_text", "t", "function", "event",
                 "fl_before", "fl_after", "reasons", "severity", "last", "origin", "skb")

    def __init__(self, obs):
        self.src, self.line_no, self.tool, self.kind = obs.src, obs.line_no, obs.tool, obs.kind
        self.time_text, self.t, self.function, self.event = (obs.time_text, obs.t,
                                                             obs.function, obs.event)
        self.fl_before, self.fl_after, self.reasons = obs.fl_before, obs.fl_after, obs.reasons
        self.severity, self.last, self.origin, self.skb = (obs.severity, obs.last, obs.origin,
                                                           obs.skb)


# --- reading ------------------------------------------------------------------

class Input(object):
    """One file named on the command line (or `-`)."""

    def __init__(self, path, index):
        self.path = path
        self.index = index
        self.label = "stdin" if path == "-" else path
        self._spool_dir = None
        self.gzip = False
        # what the whole file turned out to hold (filled while reading)
        self.kinds = set()
        self.events = 0
        self.malformed = 0
        self.long_lines = 0
        self.flight = 0
        self.oopses = 0
        self.lost = {}              # tool -> events the tool said it lost
        self.static = []            # the detector's STATIC verdict lines
        self.first_time = None
        self.last_time = None
        self.tools = set()
        # from the sniff
        self.nodes = set()
        self.min_date = None
        self.sniff_tool_lines = False
        self.crash = False

    def prepare(self):
        """Spool stdin to a file (read twice); check the file can be read."""
        if self.path == "-":
            self._spool_dir = tempfile.mkdtemp(prefix="skb_postmortem.")
            path = os.path.join(self._spool_dir, "stdin")
            src = getattr(sys.stdin, "buffer", sys.stdin)
            try:
                with open(path, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (IOError, OSError) as e:
                raise InputError("stdin: cannot spool it: %s" % (e.strerror or e))
            self.path = path
        try:
            with open(self.path, "rb") as f:
                magic = f.read(2)
        except (IOError, OSError) as e:
            raise InputError("%s: cannot read: %s" % (self.label, e.strerror or e))
        self.gzip = magic == GZIP_MAGIC
        if not magic:
            raise InputError("%s: empty file: no skbtrace records, flight records or crash "
                             "output found in %s" % (self.label, self.label))

    def cleanup(self):
        if self._spool_dir:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
            self._spool_dir = None

    def _open(self):
        try:
            raw = open(self.path, "rb")
        except (IOError, OSError) as e:
            raise InputError("%s: cannot read: %s" % (self.label, e.strerror or e))
        if self.gzip:
            return gzip.GzipFile(fileobj=raw, mode="rb"), raw
        return raw, raw

    def lines(self, limit_bytes=None):
        """(line number, text) for every line; a line over MAX_LINE
        characters is dropped (its number kept) without being read whole;
        CRs and terminal escapes removed."""
        stream, raw = self._open()
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")
        n = 0
        read = 0
        try:
            while True:
                line = self._readline(text, n)
                if not line:
                    return
                n += 1
                read += len(line)
                if len(line) >= MAX_LINE and not line.endswith("\n"):
                    self.long_lines += 1
                    while True:
                        more = self._readline(text, n)
                        read += len(more)
                        if not more or more.endswith("\n"):
                            break
                    line = ""   # not one of ours: the number is kept, the text not
                yield n, clean(line)
                if limit_bytes is not None and read >= limit_bytes:
                    return
        finally:
            text.close()
            raw.close()

    def _readline(self, text, n):
        try:
            return text.readline(MAX_LINE)
        except (IOError, OSError, EOFError, zlib.error) as e:
            raise InputError("%s: corrupt or truncated gzip data after line %d (%s)"
                             % (self.label, n, e))


_ESC_RE = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|c)")


def clean(text):
    text = text.rstrip("\r\n")
    if "\x1b" in text:
        text = _ESC_RE.sub("", text)
    if "\r" in text:
        text = text.replace("\r", "")
    return text


def looks_binary(sample):
    """NUL bytes, or mostly control bytes: not a log, a console or a transcript."""
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    ctrl = sum(1 for c in bytearray(sample[:65536]) if c < 9 or 13 < c < 27 or 27 < c < 32)
    return ctrl * 20 > min(len(sample), 65536)


# --- tool logs: text -------------------------------------------------------------

_TIME_RE = r"(\d\d):(\d\d):(\d\d)\.(\d{6})"
_TIME_WORD_RE = re.compile(_TIME_RE + "$")
_HEX16_RE = re.compile(r"[0-9a-f]{16}$")
_PTR = r"NULL|0x[0-9a-f]+"
_FRAG_RE = re.compile(r"^(%s)(?: -> (%s)| new_skb=(%s)| \(no change\))?" % (_PTR, _PTR, _PTR))
_GSO_RE = re.compile(r"0x([0-9a-f]+)\(([^)]*)\)")
_KV_RE = re.compile(r"\b(reasons|gso_size|gso_type|len|data_len|nr_frags|frags_bytes|in|"
                    r"encap|size|type|segs)=(\S+)")
_LAST_RE = re.compile(r"\blast=([^\s(]+)(?:\(\+(\d+)us\))?(\(other head\))?")
_ORIGIN_RE = re.compile(r"\borigin=([^\s(]+)(?:\(\+(\d+)us\))?(\(already set there\))?"
                        r"(\(other head\))?( \(already set on entry\))?")
_NESTED_RE = re.compile(r"\(nested: set by ([^)\s]+)\)")
_DETAIL_RE = re.compile(r"\b(?:mode|mask|proto|virtio_gso)=\S+(?: \S+=\S+)*")


def seconds_of_day(h, m, s, us):
    return int(h) * 3600 + int(m) * 60 + int(s) + int(us) / 1e6


def _after(text):
    """'1448' or '1448->0' (formatter.change_text): the value after."""
    v = text.rsplit("->", 1)[-1]
    return int(v, 0)


def _ptr_value(text):
    return 0 if text in (None, "NULL") else int(text, 16)


def parse_text_line(line, src=0, line_no=0, details=True):
    """A watcher or detector text event line -> Observation (t: seconds of
    the day, the caller adds the day), or None. details=False parses only
    what the cut rule reads (last=); Observation.details() does the rest.
    String operations first, regular expressions only on what they found:
    this runs on every line of a 1 GB log."""
    i = line.find(" | 0x")
    if i < 0 or line[i + 21:i + 24] != " | ":
        return None
    words = line[:i].split()
    # the time is the first word, unless a journal or runtime prefix
    # precedes it: then the first word that is a time followed by a CPU
    n = len(words)
    j = 0
    while True:
        if j + 4 > n:
            return None
        w = words[j]
        if len(w) == 15 and w[2] == ":" and w[5] == ":" and w[8] == "." and \
                _TIME_WORD_RE.match(w) and words[j + 1].isdigit():
            break
        j += 1
    ev_name, function = words[-2], words[-1]
    if ev_name not in EVENT_NUMBERS:
        return None
    hexa = line[i + 5:i + 21]
    if not _HEX16_RE.match(hexa):
        return None
    skb = int(hexa, 16)
    rest = line[i + 24:]
    gso = _GSO_RE.match(rest)
    detector = bool(gso) or ev_name in DETECTOR_ONLY
    obs = Observation(src, line_no, DETECTOR if detector else WATCHER, "log")
    obs.t = int(w[:2]) * 3600 + int(w[3:5]) * 60 + int(w[6:8]) + int(w[9:]) / 1e6
    obs.time_text = w
    obs.cpu = int(words[j + 1])
    obs.event = ev_name
    obs.function = function
    obs.skb = skb
    obs.raw = [line[line.find(words[j]):] if j else line]
    if detector:
        if not gso:
            return None
        head, _sep, tail = rest.partition(" | ")
        types = _GSO_RE.findall(head)
        obs.gso_before = int(types[0][0], 16)
        obs.gso_after = int(types[-1][0], 16)
        obs.gso_names = types[-1][1]
    else:
        f = _FRAG_RE.match(rest)
        if not f:
            return None
        obs.fl_before = _ptr_value(f.group(1))
        obs.fl_after = _ptr_value(f.group(2)) if f.group(2) else obs.fl_before
        if f.group(3):
            obs.new_skb = _ptr_value(f.group(3))
        tail = rest[f.end():]
    if details:
        _details(obs, tail)
    else:
        obs._tail = tail
        if "last=" in tail:
            _last(obs, tail)
    return obs


# The tails the formatters write most (watcher.Formatter.detail, the
# detector's event_detail/markers/origin_text), in one match each; anything
# else (--verbose columns, COPY_FAIL, virtio details) takes the general path.
_W_FAST = re.compile(
    r"(?: \[!!\])?(?: \[(WARNING|CRITICAL)\])?"
    r"(?: reasons=([A-Z_,]+) gso_size=(\d+) gso_type=0x([0-9a-f]+)\(([^)]*)\) len=(\d+) "
    r"data_len=(\d+) nr_frags=(\d+) frags_bytes=(\d+))?(?: ret=-?\d+)?(?: in=(\S+))?"
    r"(?: last=(?:none|([^\s(]+)(?:\(\+(\d+)us\))?(\(other head\))?))?$")
_D_FAST = re.compile(
    r"(?:(.*?) )?gso_size=(\d+)(?:->(\d+))? encap=([01])"
    r"(?: \[UDP_TUNNEL (ADDED|REMOVED)\]| \(nested: set by ([^)\s]+)\)|"
    r" \(nested: already set by an enclosing call\))?"
    r"(?: \[(WARNING|CRITICAL)\])?(?: reasons=([A-Z_,]+))?"
    r"(?: origin=here( \(already set on entry\))?| origin=([^\s(]+)\(\+(\d+)us\)"
    r"(\(already set there\))?(\(other head\))?)?(?: in=(\S+))?$")


def _reasons(text):
    return tuple(r for r in text.split(",") if r in event.REASON_NAMES)


def _fast(obs, tail):
    if obs.tool == WATCHER:
        m = _W_FAST.match(tail)
        if not m:
            return False
        (sev, reasons, size, gtype, names, length, data_len, nr_frags, frags_bytes, in_,
         last, age, other) = m.groups()
        obs.severity = sev
        if reasons:
            obs.reasons = _reasons(reasons)
            obs.gso_size = int(size)
            obs.gso_before = obs.gso_after = int(gtype, 16)
            obs.gso_names = names
            obs.length, obs.data_len = int(length), int(data_len)
            obs.nr_frags, obs.frags_bytes = int(nr_frags), int(frags_bytes)
        if in_:
            obs.in_tnl = in_ == "skb_udp_tunnel_segment"
        if last:
            obs.last = (last, int(age) if age else None, bool(other))
        return True
    m = _D_FAST.match(tail)
    if not m:
        return False
    (detail, size, size_after, encap, added, nested, sev, reasons, on_entry, origin, age,
     there, other, in_) = m.groups()
    obs.detail = detail
    obs.gso_size = int(size_after or size)
    obs.encap = encap == "1"
    if added:
        obs.tunnel = "added" if added == "ADDED" else "removed"
    elif nested:
        obs.tunnel = "added_nested"
    elif "(nested: already" in tail:
        obs.tunnel = "set_by_enclosing"
    obs.severity = sev
    if reasons:
        obs.reasons = _reasons(reasons)
    if origin:
        obs.origin = (origin, int(age), bool(there), bool(other))
    elif "origin=here" in tail:
        obs.origin = (obs.function, 0, bool(on_entry), False)
    if in_:
        obs.in_tnl = in_ == "skb_udp_tunnel_segment"
    return True


def _details(obs, tail):
    if _fast(obs, tail):
        return
    if obs.tool == DETECTOR:
        d = _DETAIL_RE.search(tail)
        obs.detail = d.group(0) if d else None
    if "[" in tail:
        if "[CRITICAL]" in tail:
            obs.severity = "CRITICAL"
        elif "[WARNING]" in tail:
            obs.severity = "WARNING"
        if "[UDP_TUNNEL ADDED]" in tail:
            obs.tunnel = "added"
        elif "[UDP_TUNNEL REMOVED]" in tail:
            obs.tunnel = "removed"
    if "(nested: " in tail:
        if "(nested: already set by an enclosing call)" in tail:
            obs.tunnel = "set_by_enclosing"
        elif _NESTED_RE.search(tail):
            obs.tunnel = "added_nested"
    for k, v in _KV_RE.findall(tail):
        try:
            if k == "reasons":
                obs.reasons = tuple(r for r in v.split(",") if r in event.REASON_NAMES)
            elif k in ("gso_type", "type"):
                types = _GSO_RE.findall(v)
                if types:
                    if obs.gso_before is None:
                        obs.gso_before = int(types[0][0], 16)
                    obs.gso_after = int(types[-1][0], 16)
                    obs.gso_names = types[-1][1]
            elif k in ("gso_size", "size"):
                obs.gso_size = _after(v)
            elif k == "len":
                obs.length = int(v)
            elif k == "data_len":
                obs.data_len = _after(v)
            elif k == "nr_frags":
                obs.nr_frags = _after(v)
            elif k == "frags_bytes":
                obs.frags_bytes = int(v)
            elif k == "in":
                obs.in_tnl = v == "skb_udp_tunnel_segment"
            elif k == "encap":
                obs.encap = v == "1"
        except ValueError:
            continue
    if "last=" in tail:
        _last(obs, tail)
    if "origin=" in tail:
        m = _ORIGIN_RE.search(tail)
        if m:
            here = m.group(1) == "here"
            obs.origin = (obs.function if here else m.group(1),
                          0 if here else (int(m.group(2)) if m.group(2) else None),
                          bool(m.group(3) or m.group(5)), bool(m.group(4)))


def _last(obs, tail):
    m = _LAST_RE.search(tail)
    if m and m.group(1) != "none":
        obs.last = (m.group(1), int(m.group(2)) if m.group(2) else None, bool(m.group(3)))


def parse_flow_line(obs, line):
    """`  -> Flow: <flow> | inner: <flow> | len=... encap=...` (--verbose)."""
    parts = line.split("-> Flow: ", 1)[1].split(" | ")
    if not parts[0].startswith("not IP"):
        obs.flow = parts[0].strip()
    for p in parts[1:]:
        if p.startswith("inner: "):
            obs.inner_flow = p[len("inner: "):].strip()
        elif "encap=" in p:
            _details(obs, p)
    obs.raw.append(line.rstrip())


# --- tool logs: JSON --------------------------------------------------------------

_ISO_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T" + _TIME_RE)


def _str(d, key, required=True):
    v = d.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str):
        raise ValueError(key)
    return v


def _num(d, key, default=None):
    v = d.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(key)
    return int(v)


def _hex(d, key, required=True):
    v = _str(d, key, required)
    return None if v is None else int(v, 16)


def json_object(line):
    """The JSON object a line holds (behind a container runtime's prefix
    too), or None; ValueError when it looks like ours but does not parse."""
    s = line.strip()
    if not s.startswith('{"'):
        i = s.find('{"')
        if i < 0 or '"type"' not in s:
            return None     # a brace of crash's struct output, C, anything
        s = s[i:]
    try:
        d = json.loads(s)
    except (ValueError, RecursionError):
        raise ValueError("not JSON")
    if not isinstance(d, dict):
        raise ValueError("not an object")
    return d


def parse_json_event(d, src=0, line_no=0):
    """A --json event record -> Observation (t: seconds of the day; the
    record's date is in .ts_ns's companion, see date_of())."""
    tool = _str(d, "tool")
    if tool not in TOOLS:
        raise ValueError("tool")
    obs = Observation(src, line_no, tool, "json")
    m = _ISO_RE.match(_str(d, "time"))
    if not m:
        raise ValueError("time")
    obs.t = seconds_of_day(*m.group(4, 5, 6, 7))
    obs.time_text = "%s:%s:%s.%s" % m.group(4, 5, 6, 7)
    obs.ts_ns = _num(d, "ts_ns")
    obs.cpu = _num(d, "cpu", 0)
    obs.event = _str(d, "event")
    if obs.event not in EVENT_NUMBERS:
        raise ValueError("event")
    obs.function = _str(d, "function")
    obs.skb = _hex(d, "skb")
    host, boot = d.get("host"), d.get("boot_id")
    if host is not None or boot is not None:
        obs.node = (host if isinstance(host, str) else None,
                    boot if isinstance(boot, str) else None)
    sev = d.get("severity")
    obs.severity = sev if sev in ("WARNING", "CRITICAL") else None
    reasons = d.get("reasons") or []
    if not isinstance(reasons, list):
        raise ValueError("reasons")
    obs.reasons = tuple(r for r in reasons if r in event.REASON_NAMES)
    obs.gso_before = _num(d, "gso_type_before")
    readable = d.get("after_readable", True) is not False
    obs.gso_after = _num(d, "gso_type_after") if readable else obs.gso_before
    names = d.get("gso_type_names")
    obs.gso_names = names if isinstance(names, str) else None
    obs.gso_size = _num(d, "gso_size_after" if readable else "gso_size_before")
    obs.length = _num(d, "len")
    obs.data_len = _num(d, "data_len_after")
    obs.nr_frags = _num(d, "nr_frags_after")
    obs.frags_bytes = _num(d, "frags_bytes")
    obs.fl_before = _hex(d, "frag_list_before", False) or 0
    obs.fl_after = _hex(d, "frag_list_after", False) or 0
    obs.new_skb = _hex(d, "new_skb", False)
    obs.in_tnl = bool(d.get("in_tunnel_segment"))
    obs.encap = bool(d.get("encapsulation"))
    flow, inner = d.get("flow"), d.get("inner_flow")
    obs.flow = flow if isinstance(flow, str) else None
    obs.inner_flow = inner if isinstance(inner, str) else None
    last = d.get("last")
    if isinstance(last, dict) and isinstance(last.get("function"), str):
        age = last.get("age_us")
        obs.last = (last["function"], int(age) if isinstance(age, (int, float)) else None,
                    bool(last.get("other_head")))
    origin = d.get("origin")
    if isinstance(origin, dict) and isinstance(origin.get("function"), str):
        age = origin.get("age_us")
        here = bool(origin.get("here"))
        obs.origin = (origin["function"], 0 if here else
                      (int(age) if isinstance(age, (int, float)) else None),
                      bool(origin.get("on_entry")), bool(origin.get("other_head")))
    change = d.get("tunnel_change")
    obs.tunnel = change if isinstance(change, str) else None
    stack = d.get("stack")
    if isinstance(stack, list):
        obs.stack = [s for s in stack if isinstance(s, str)]
    obs.raw = d
    return obs


def date_of(d):
    """The record's date as a day number (proleptic ordinal), or None."""
    t = d.get("time")
    m = _ISO_RE.match(t) if isinstance(t, str) else None
    if not m:
        return None
    try:
        return datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).toordinal()
    except ValueError:
        return None


# --- oopses and the ftrace dumps they print -----------------------------------------

_OOPS_START_RE = re.compile(r"\b(BUG: .*|Oops: .*|general protection fault.*|kernel BUG at .*|"
                            r"Unable to handle kernel .*)$")
_PANIC_RE = re.compile(r"\bKernel panic - not syncing: .*$")
_CPU_RE = re.compile(r"\bCPU: (\d+) PID: (\d+) Comm: (.+?) +(?:Not tainted|Tainted: [A-Z ]*?) *"
                     r"(\d+\.\d+[^\s#]*) #")
# An oops's RIP and call-trace lines are read with the crash reader's own
# patterns (skbtrace.postmortem.crashdump reads them from `crash> log`), after what
# precedes a console line's text: printk's time, journalctl's "kernel:".
_PREFIX_RE = re.compile(r"^(?:\s*\[[^\]]*\]|.*?\bkernel:)")
_REG_RE = re.compile(r"\b(R[A-Z0-9]{1,2}): ([0-9a-f]{16})\b")
_OOPS_NUM_RE = re.compile(r"Oops: [0-9a-f]+ \[#(\d+)\]")
_OOPS_WORDS = ("BUG: ", "Oops: ", "general protection fault", "kernel BUG at",
               "Unable to handle kernel")


class Oops(object):
    """One oops: what it says, and which ftrace dump it printed."""

    def __init__(self, src, line_no, text):
        self.src = src
        self.line_no = line_no
        self.text = text                # the BUG:/Oops: line
        self.number = None              # N of "Oops: ... [#N]"
        self.rip = None                 # 'skb_segment+0x24c'
        self.cpu = None
        self.comm = None
        self.release = None             # '6.1.0-57-amd64'
        self.frames = []                # call trace, reliable frames only
        self.registers = {}
        self.panic = None               # 'Kernel panic - not syncing: ...'
        self.dump_lines = None          # (first, last) line numbers of its ftrace dump

    def key(self):
        return (self.text, self.rip, tuple(self.frames[:8]))

    def to_dict(self):
        return {"text": self.text, "number": self.number, "rip": self.rip, "cpu": self.cpu, "comm": self.comm,
                "release": self.release, "call_trace": list(self.frames),
                "panic": self.panic}


class KernelText(object):
    """Line-level scanner for consoles, dmesg, journalctl -k, crash> log and
    trace files: flight records, oopses and the dumps they print."""

    def __init__(self, src):
        self.src = src
        self.fr_lines = []              # (line number, text) of flight-record lines
        self.oopses = []
        self.dumps = []                 # [first, last] line numbers
        self._oops = None
        self._in_trace = False
        self._dump = None
        self.release = None

    def feed(self, n, line):
        if flightrec.LINE_MARK in line:
            self.fr_lines.append((n, line))
            if self._dump is not None:
                self._dump[1] = n
            return
        # cheap tests first: most lines of a long log are none of these
        if any(w in line for w in _OOPS_WORDS):
            m = _OOPS_START_RE.search(line)
            if m:
                num = _OOPS_NUM_RE.search(line)
                o = self._oops
                # "BUG: ..." then "Oops: 0000 [#1] ...": one oops
                if num and o is not None and o.number is None and not o.frames:
                    o.number = int(num.group(1))
                    return
                self._oops = Oops(self.src, n, m.group(1))
                self._oops.number = int(num.group(1)) if num else None
                self.oopses.append(self._oops)
                self._in_trace = False
                return
        if "Dumping ftrace buffer:" in line:
            self._dump = [n, n]
            self.dumps.append(self._dump)
            if self._oops is not None and self._oops.dump_lines is None:
                self._oops.dump_lines = self._dump
            return
        cpu = _CPU_RE.search(line) if "CPU: " in line and " PID: " in line else None
        if cpu:
            self.release = cpu.group(4)
        o = self._oops
        if o is None:
            return
        if cpu and o.cpu is None:
            o.cpu, o.comm, o.release = int(cpu.group(1)), cpu.group(3), cpu.group(4)
            return
        if "RIP: " in line:
            m = crashdump._LOG_RIP.search(line)
            if m and o.rip is None:
                o.rip = "%s+%s" % m.group(1, 2)
            self._in_trace = False
        elif "Call Trace:" in line:
            self._in_trace = not o.frames
        elif "Kernel panic - not syncing" in line:
            o.panic = o.panic or _PANIC_RE.search(line).group(0)
            self._in_trace = False
        elif "---[ end " in line:
            self._in_trace = False
        elif self._in_trace:
            f = crashdump._LOG_FRAME.match(_PREFIX_RE.sub("", line, 1))
            if f and not f.group(1) and len(o.frames) < 64:
                o.frames.append(f.group(2))
        elif not o.frames and len(o.registers) < 32:
            for reg, val in _REG_RE.findall(line):
                o.registers.setdefault(reg, int(val, 16))

    def records(self):
        """The flight records, each with .line_no in the file and .dump set
        to the Oops whose dump printed it (None outside an oops's dump)."""
        out = []
        text = [l for _n, l in self.fr_lines]
        for rec in flightrec.parse(text):
            rec.line_no = self.fr_lines[rec.line_no - 1][0]
            rec.oops = None
            for o in self.oopses:
                if o.dump_lines and o.dump_lines[0] <= rec.line_no <= o.dump_lines[1]:
                    rec.oops = o
            out.append(rec)
        return out


HOOKS = {WATCHER: dict((h.name, h) for h in hooks.watcher_hooks()),
         DETECTOR: dict((h.name, h) for h in hooks.detector_hooks())}


def flight_observation(rec, src):
    """A flight record -> Observation on ftrace's clock (t stays None until
    the record is tied to the logs' clock)."""
    tool = rec.tool if rec.tool in TOOLS else None
    obs = Observation(src, rec.line_no, tool, "flight")
    obs.ts_ns = rec.ts_ns
    obs.time_text = "[%.6f]" % (rec.ts_ns / 1e9) if rec.ts_ns else "[?]"
    obs.cpu = rec.cpu
    obs.event = rec.field("event")
    obs.function = rec.field("hook")
    obs.skb = rec.int_field("skb")
    obs.severity = rec.severity
    obs.reasons = tuple(event.reason_names(rec.int_field("reasons") or 0))
    obs.gso_before = obs.gso_after = rec.int_field("gso_type")
    obs.gso_size = rec.int_field("gso_size")
    obs.length = rec.int_field("len")
    obs.data_len = rec.int_field("data_len")
    obs.nr_frags = rec.int_field("nr_frags")
    fl = rec.int_field("frag_list")
    obs.fl_before = obs.fl_after = fl
    flags = rec.int_field("flags") or 0
    obs.in_tnl = bool(flags & event.F_IN_TNL_SEG)
    obs.encap = bool(flags & event.F_ENCAP)
    age = rec.int_field("age_us")
    if rec.history:
        if rec.history_key == "last":
            obs.last = (rec.history, age, bool(flags & event.F_LAST_STALE))
        else:
            obs.origin = (rec.history, age, bool(flags & event.F_ORIGIN_ON_ENTRY),
                          bool(flags & event.F_LAST_STALE))
    obs.dump = rec.oops
    obs.raw = rec
    return obs


def flight_key(rec):
    """The same record read from two places (the console and `crash> log`)."""
    return (rec.seq, rec.ts_ns, tuple(sorted(rec.parts.items())))


# --- one file, start to end ------------------------------------------------------

class Scanner(object):
    """Reads one input: tool-log Observations come out of observations() in
    file order (t: seconds since day 0), everything else is kept on the
    scanner (flight records, oopses) and on the Input (counts, lost events,
    STATIC verdicts)."""

    def __init__(self, inp, day0=None, stacks=True, first=True, addresses=None):
        self.inp = inp
        self.kernel = KernelText(inp.index)
        self.day0 = day0
        self.stacks = stacks
        self.first = first          # the first read counts; a second one only yields
        # a second read for a few skbs looks at the lines that name them only
        # (an skb's packets are cut from its own lines): a substring test
        # instead of a parse for every other line
        self.needles = None if addresses is None else ["%x" % a for a in addresses]

    def observations(self):
        inp = self.inp
        pending = None
        day = 0
        prev_t = None
        for n, line in inp.lines():
            if pending is not None:
                if line.startswith("  -> Flow: "):
                    parse_flow_line(pending, line)
                    continue
                if line.startswith("        ") and pending.kind == "log":
                    if self.stacks and len(pending.stack) < event.STACK_FRAMES + 1:
                        pending.stack.append(line.strip())
                        pending.raw.append(line.rstrip())
                    continue
                yield pending
                pending = None
            if self.needles is not None and not any(x in line for x in self.needles):
                continue
            obs = parse_text_line(line, inp.index, n, False)
            if obs is not None:
                # text logs carry no date: a clock that goes back by more than
                # 12 hours went past midnight
                if prev_t is not None and obs.t < prev_t - 43200:
                    day += 1
                prev_t = obs.t
                obs.t += day * 86400
                if self.first:
                    self._count(obs)
                pending = obs
                continue
            if "{" in line:
                try:
                    d = json_object(line)
                except ValueError:
                    inp.malformed += self.first
                    continue
                if d is not None:
                    obs = self._json(d, n)
                    if obs is not None:
                        yield obs
                    continue
            if not self.first:
                continue
            if line.startswith("Lost events:"):
                self._lost_text(line)
            elif line.startswith("STATIC: "):
                inp.kinds.add("detector static section")
                inp.static.append(line)
            self.kernel.feed(n, line)
        if pending is not None:
            yield pending
        if not self.first:
            return
        inp.flight += len(self.kernel.fr_lines)
        inp.oopses += len(self.kernel.oopses)
        if self.kernel.fr_lines:
            inp.kinds.add("flight records")
        if self.kernel.oopses:
            inp.kinds.add("oops")

    def _count(self, obs):
        inp = self.inp
        inp.events += 1
        inp.tools.add(obs.tool)
        inp.kinds.add("%s %s" % (obs.tool, "JSON" if obs.kind == "json" else "text log"))
        if inp.first_time is None:
            inp.first_time = obs.time_text
        inp.last_time = obs.time_text

    def _json(self, d, n):
        typ = d.get("type")
        tool = d.get("tool")
        if typ == "event":
            try:
                obs = parse_json_event(d, self.inp.index, n)
                date = date_of(d)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
                self.inp.malformed += self.first
                return None
            obs.t += ((date - self.day0) if (date is not None and self.day0 is not None)
                      else 0) * 86400
            if self.first:
                self._count(obs)
            return obs
        if not self.first:
            return None
        if typ == "statistics" and tool in TOOLS:
            lost = d.get("lost_total")
            if isinstance(lost, int) and not isinstance(lost, bool):
                self.inp.lost[tool] = lost
            self.inp.kinds.add("%s JSON" % tool)
        elif typ == "static" and tool == DETECTOR:
            v = d.get("verdict")
            if isinstance(v, str):
                self.inp.static.append(v)
            self.inp.kinds.add("detector static record")
        return None

    def _lost_text(self, line):
        m = re.match(r"Lost events: +(\d+)", line)
        if m:
            tools = sorted(self.inp.tools) or ["?"]
            self.inp.lost[tools[-1] if len(tools) == 1 else "?"] = int(m.group(1))


_SNIFF_TOOL_RE = re.compile(r'"tool"\s*:\s*"(\w+)"')
_SNIFF_HOST_RE = re.compile(r'"host"\s*:\s*"([^"\\]*)"')
_SNIFF_BOOT_RE = re.compile(r'"boot_id"\s*:\s*"([^"\\]*)"')
_SNIFF_TIME_RE = re.compile(r'"time"\s*:\s*"([^"\\]*)"')


def sniff(inp, crash_looks_like=None):
    """Read the head of an input: binary?, tool lines?, JSON nodes and
    dates, a crash transcript? Raises InputError for binary data."""
    stream, raw = inp._open()
    try:
        try:
            head = stream.read(65536)
        except (IOError, OSError, EOFError, zlib.error) as e:
            raise InputError("%s: corrupt gzip data (%s)" % (inp.label, e))
    finally:
        stream.close()
        raw.close()
    if not head:
        raise InputError("%s: empty%s: no skbtrace records, flight records or crash output "
                         "found in %s" % (inp.label, " after gunzip" if inp.gzip else "",
                                          inp.label))
    if looks_binary(head):
        raise InputError("%s: binary data, not a log, a console capture or crash output: no "
                         "skbtrace records, flight records or crash output found in %s"
                         % (inp.label, inp.label))
    text = []
    for n, line in inp.lines(limit_bytes=SNIFF_BYTES):
        if n <= 400:
            text.append(line)
        if '"tool"' in line:
            # the node and the date without parsing the whole record
            tool = _SNIFF_TOOL_RE.search(line)
            if tool and tool.group(1) in TOOLS:
                inp.sniff_tool_lines = True
                host, boot = _SNIFF_HOST_RE.search(line), _SNIFF_BOOT_RE.search(line)
                if host or boot:
                    inp.nodes.add((host.group(1) if host else None,
                                   boot.group(1) if boot else None))
                t = _SNIFF_TIME_RE.search(line)
                day = date_of({"time": t.group(1)}) if t else None
                if day is not None and (inp.min_date is None or day < inp.min_date):
                    inp.min_date = day
        elif not inp.sniff_tool_lines and parse_text_line(line) is not None:
            inp.sniff_tool_lines = True
        elif line.startswith("crash> "):
            inp.crash = True
        if n >= SNIFF_LINES:
            break
    if crash_looks_like is not None and not inp.crash:
        inp.crash = bool(crash_looks_like("\n".join(text)))
