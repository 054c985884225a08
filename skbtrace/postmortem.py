"""skb_postmortem: from saved logs, a console capture or a `crash` session to
the story of one skb.

Reads any mix of both tools' logs (text or --json, gzipped or not), consoles,
dmesg, journalctl -k, trace files (flight records, oopses) and `crash`
transcripts, recognised by content. Two passes over the tool logs keep the
memory bounded (docs/skb_postmortem.md, OVERHEAD): the first cuts every
address's observations into packets and keeps a summary per packet, the
second keeps the observations of the packets it tells.
"""
import heapq
import os

from skbtrace import cli, event, flightrec, gso, record, rules
from skbtrace import pm_sources as src
from skbtrace import pm_story as story
from skbtrace.detector import PATTERNS, DetectorFormatter
from skbtrace.errors import UserError
from skbtrace.formatter import Formatter, ptr
from skbtrace.sink import ReaderGone, Sink

from skbtrace import crashdump, crashrun, packet

PROG = "skb_postmortem.py"
TOOL = "skb_postmortem"
DEFAULT_MAX = 5
# how far out of time order a tool log may be (per-CPU perf buffers are
# read one after the other; the fixtures show up to 32 ms)
REORDER_S = 1.0
# flight records are tied to the logs' clock by records found in both: the
# offsets that agree within this window win
ANCHOR_WINDOW_S = 0.002

DESCRIPTION = """Read what a reproduction left behind and tell the story of the skb that
matters: who set UDP_TUNNEL, who cleared or changed frag_list, what state it
reached skb_segment in, and what the packet was.

Inputs, in any mix and order, recognised by content (gzip too; - is stdin):
both tools' logs (text and --json), consoles / dmesg / journalctl -k /
trace files with flight records and an oops, text saved from `crash` (bt,
bt -f, struct sk_buff, struct skb_shared_info, rd -8, p, eval, log).

Each skb address is cut into the packets it carried (an address is reused
every few ms); by default the packets told are the oops's, else those with
a CRITICAL finding, else those with a UDP_TUNNEL setter (a frag_list
clearer too first). A table counts packets by (UDP_TUNNEL setter, frag_list
clearer) with the users' decision tree's advice."""

EXAMPLES = """examples:
    skb_postmortem.py /var/tmp/frag_list.log /var/tmp/vxlan.log
    skb_postmortem.py frag_list.log.1.gz vxlan.log.1.gz console.log --skb 0xffff888007ce9f00
    skb_postmortem.py vmcore-dmesg.txt crash-session.txt --pcap /tmp/skb.pcap
    skb_postmortem.py --vmcore /var/crash/127.0.0.1-2024-05-02-10:11:12/vmcore \
        --vmlinux /usr/lib/debug/lib/modules/$(uname -r)/vmlinux --save-transcript crash.txt
    kubectl logs ds/skbtrace -c watcher | skb_postmortem.py - --node worker-3
    skb_postmortem.py --json *.json.gz | jq 'select(.type=="postmortem_summary")'"""


class NotFound(UserError):
    """Readable inputs, but nothing of what was asked for: exit 1."""
    exit_code = 1


def make_parser(prog=PROG):
    import argparse
    p = cli.Parser(prog=prog, description=DESCRIPTION, epilog=EXAMPLES,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_version(p)
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="a tool log, console capture, dmesg, trace file or crash transcript "
                        "(gzip is read as such; - reads stdin)")
    s = p.add_argument_group("selection")
    s.add_argument("--skb", action="append", metavar="ADDR", type=parse_addr,
                   help="tell the packets of this skb address (0xffff... or ffff...); "
                        "may be repeated")
    s.add_argument("--max", type=non_negative, default=DEFAULT_MAX, metavar="N",
                   help="tell at most N packets (default %d; 0: all)" % DEFAULT_MAX)
    s.add_argument("--node", metavar="HOST",
                   help="only records of this host (JSON records' host); records without "
                        "a host (text logs, consoles, crash) are taken to be from it")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="one JSON object per line, each with host and boot_id (where "
                        "skb_postmortem ran; the skb's own is under node)")
    o.add_argument("--pcap", metavar="FILE",
                   help="write every packet rebuilt from crash's rd -8 bytes to FILE "
                        "(pcap, Ethernet)")
    o.add_argument("--kernel", metavar="RELEASE",
                   help="name gso_type bits for this kernel release (default: the one an "
                        "oops or crash names)")
    crashrun.add_arguments(p)
    return p


def parse_addr(text):
    import argparse
    t = text.lower()
    if t.startswith("0x"):
        t = t[2:]
    try:
        v = int(t, 16)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not an skb address (hex)" % text)
    if not 0 < v < 1 << 64:
        raise argparse.ArgumentTypeError("'%s' is not a 64-bit address" % text)
    return v


def non_negative(text):
    import argparse
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not a number" % text)
    if n < 0:
        raise argparse.ArgumentTypeError("%d is negative" % n)
    return n


def hms(t):
    """Seconds since day 0's midnight -> HH:MM:SS.uuuuuu."""
    s = int(t)
    us = int(round((t - s) * 1e6))
    if us >= 1000000:
        s, us = s + 1, us - 1000000
    return "%02d:%02d:%02d.%06d" % (s // 3600 % 24, s // 60 % 60, s % 60, us)


def ordered(streams):
    """The inputs' observations merged by time; REORDER_S of disorder
    within one input (one CPU's buffer read after another's) is undone."""
    merged = heapq.merge(*streams, key=lambda o: (o.t, o.src, o.line_no))
    heap = []
    for obs in merged:
        heapq.heappush(heap, (obs.t, obs.src, obs.line_no, obs))
        while heap[0][0] < obs.t - REORDER_S:
            yield heapq.heappop(heap)[3]
    while heap:
        yield heapq.heappop(heap)[3]


class Run(object):
    """One skb_postmortem run: inputs, the two passes, the placement of
    flight records and crash states, the selection."""

    def __init__(self, args):
        self.args = args
        self.inputs = [src.Input(p, i) for i, p in enumerate(args.files, 1)]
        self.flights = []           # flight Observations, deduplicated
        self.oopses = []
        self.sessions = []          # (Input, CrashSession)
        self.crash_obs = []
        self.release = args.kernel
        self.default_node = None
        self.offset = None          # logs' clock - ftrace clock, seconds
        self.anchors = 0
        self.spread = None
        self.table = story.Table()
        self.lives = 0
        self.addresses = 0
        self.picked = []
        self.pick_note = ""
        self.dup_of = {}            # (src, line) of a logged event -> flight Observation
        self.gso = gso.DEFAULT
        self.slack = ANCHOR_WINDOW_S
        self.kept = 0               # observations of the node asked for (--node)
        self.hosts = set()          # the other hosts seen

    # --- reading -----------------------------------------------------------------

    def read(self):
        for inp in self.inputs:
            inp.prepare()
            src.sniff(inp, crashdump.looks_like)
        days = [i.min_date for i in self.inputs if i.min_date is not None]
        self.day0 = min(days) if days else None
        nodes = set()
        for i in self.inputs:
            nodes |= i.nodes
        if self.args.node:
            nodes = set(n for n in nodes if n[0] == self.args.node)
            self.default_node = nodes.pop() if len(nodes) == 1 else (self.args.node, None)
        elif len(nodes) == 1:
            self.default_node = nodes.pop()
        self.tool_inputs = []
        seen = set()
        for inp in self.inputs:
            if inp.sniff_tool_lines:
                self.tool_inputs.append(inp)
                continue
            sc = src.Scanner(inp, self.day0)
            if sum(1 for _ in sc.observations()):
                # tool lines after the sniffed head: pass 1 reads it again
                # and counts it then; its flight records are known from here
                self.tool_inputs.append(inp)
                inp.events = inp.flight = inp.oopses = 0
                inp.first_time = inp.last_time = None
                inp.kinds.clear()
                inp.lost.clear()
                del inp.static[:]
            self._kernel(inp, sc.kernel, seen)
            if inp.crash:
                self._crash(inp)
        self.kernel_seen = seen

    def _kernel(self, inp, kt, seen):
        for o in kt.oopses:
            if o.key() not in [x.key() for x in self.oopses]:
                self.oopses.append(o)
        self.release = self.release or kt.release
        for rec in kt.records():
            k = src.flight_key(rec)
            if k in seen:
                continue
            seen.add(k)
            obs = src.flight_observation(rec, inp.index)
            if obs.skb is None or obs.function is None:
                continue
            obs.node = self.default_node
            self.flights.append(obs)

    def _crash(self, inp):
        try:
            session = crashdump.parse(text for _n, text in inp.lines())
        except crashdump.CrashParseError:
            return                  # prompts, but nothing crash prints: other kinds decide
        inp.kinds.add("crash transcript")
        self.sessions.append((inp, session))
        self.release = self.release or session.release

    def keep(self, obs):
        if obs.node is None:
            obs.node = self.default_node
        elif self.args.node and obs.node[0] != self.args.node:
            self.hosts.add(obs.node[0])
            return False
        self.kept += 1
        return True

    def stream(self, first, addresses=None):
        scanners = [src.Scanner(inp, self.day0, stacks=not first, first=first,
                                addresses=addresses) for inp in self.tool_inputs]
        self._scanners = scanners
        return (o for o in ordered([s.observations() for s in scanners]) if self.keep(o))

    # --- pass 1 ------------------------------------------------------------------

    def pass1(self):
        self.family = gso.family_of_release(self.release)
        if self.family:
            self.gso = gso.for_family(self.family)
        index = {}
        for fr in self.flights:
            index.setdefault((fr.node, fr.skb), []).append(fr)
        crash_keys = set()
        for _inp, session in self.sessions:
            for addr in session.skbs:
                crash_keys.add((self.default_node, addr))
        self.selector = Selector(self.args)
        watched = set(index) | crash_keys
        tracker = story.Tracker(self.gso, self._closed1, history=watched)
        self._watched = watched
        cands = []
        for obs in self.stream(first=True):
            life = tracker.add(obs)
            for fr in index.get((obs.node, obs.skb), ()):
                if _same_event(fr, obs):
                    cands.append((obs.t - fr.ts_ns / 1e9, fr, obs, life))
        tracker.finish()
        self.tracker = tracker
        self.lives = sum(tracker.count.values())
        self.addresses = len(tracker.count)
        for inp, sc in zip(self.tool_inputs, self._scanners):
            self._kernel(inp, sc.kernel, self.kernel_seen)
        self._anchor(cands)
        self._place()
        self._select()

    def _closed1(self, life):
        if (life.node, life.addr) in self._watched:
            return                  # counted after flight records and crash states joined
        self.table.add(life)
        self.selector.offer(life)

    def _anchor(self, cands):
        if not cands:
            return
        offs = sorted(c[0] for c in cands)
        best = (0, 0)
        j = 0
        for i in range(len(offs)):
            while offs[i] - offs[j] > ANCHOR_WINDOW_S:
                j += 1
            if i - j + 1 > best[1] - best[0]:
                best = (j, i + 1)
        win = offs[best[0]:best[1]]
        center = win[len(win) // 2]
        self.offset = center
        self.spread = (win[-1] - win[0]) if win else None
        chosen = {}
        for off, fr, obs, life in cands:
            d = abs(off - center)
            if d <= ANCHOR_WINDOW_S and (id(fr) not in chosen or d < chosen[id(fr)][0]):
                chosen[id(fr)] = (d, fr, obs, life)
        self.anchors = len(chosen)
        self.slack = max(0.0002, 2 * self.spread)
        for _d, fr, obs, life in chosen.values():
            fr.also = (obs.src, obs.line_no)
            fr.t = fr.ts_ns / 1e9 + center
            self.dup_of[(obs.src, obs.line_no)] = fr
            life.extra.append(fr)

    # --- flight records and crash states among the packets -----------------------------

    def _lives_of(self, key):
        """The packets of an address known to flight records or crash output
        (their lives were kept through pass 1); records found only while
        reading a tool log (a file mixing both) join packets of their own."""
        return list(self.tracker.history.get(key, [])) + self._fr_lives.get(key, [])

    def _new_life(self, key):
        n = self.tracker.count.get(key, 0) + len(self._fr_lives.get(key, []))
        life = story.Life(key[0], key[1], n, self.gso)
        life.flight_only = True
        self._fr_lives.setdefault(key, []).append(life)
        return life

    def _place(self):
        self._fr_lives = {}
        for fr in sorted(self.flights, key=lambda o: (o.ts_ns or 0, o.src, o.line_no)):
            if fr.also is not None:
                continue
            if self.offset is not None and fr.ts_ns:
                fr.t = fr.ts_ns / 1e9 + self.offset
                fr.time_text = "~" + hms(fr.t)
            key = (fr.node, fr.skb)
            life, inside = self._locate(self._lives_of(key), fr)
            # inside a packet's time span it is that packet's, whatever the
            # stage the packet reached later; after it, the cut rule decides
            if life is None or (not inside and story.cuts(life, fr)):
                life = self._new_life(key)
            life.add(fr)
            life.extra.append(fr)
            if fr.dump is not None and fr.severity == "CRITICAL":
                life.oops = fr.dump
        for inp, session in self.sessions:
            for finding in crashdump.skb_findings(session, self.family):
                if finding.skb.addr is None:
                    continue        # printed without its address: no timeline to join
                obs = crash_observation(finding, session, inp.index)
                obs.node = self.default_node
                addr = obs.skb
                key = (obs.node, addr)
                lives = self._lives_of(key)
                life = next((l for l in lives if l.oops is not None), None)
                if life is None:
                    life = lives[-1] if lives else None
                    if life is not None and (life.seg_sub >= 3 or story.cuts(life, obs)):
                        life = None
                if life is None:
                    life = self._new_life(key)
                life.add(obs)
                life.extra.append(obs)
                life.crash = (inp, session, obs)
                self.crash_obs.append(obs)
        for key in self._watched | set(self._fr_lives):
            for life in self._lives_of(key):
                if life.first_t is None and not life.extra and life.n == 0:
                    continue
                self.table.add(life)
                self.selector.offer(life)
        self.lives += sum(len(v) for v in self._fr_lives.values())
        self.addresses = len(set(self.tracker.count) | set(self._fr_lives))

    def _locate(self, lives, fr):
        """(the packet fr belongs to or follows, whether fr is inside its span)"""
        if not lives:
            return None, False
        if fr.t is None:
            return lives[-1], False
        timed = [l for l in lives if l.first_t is not None]
        for l in timed:
            if l.first_t - self.slack <= fr.t <= l.last_t + self.slack:
                return l, True
        before = [l for l in timed if l.last_t < fr.t]
        return (before[-1] if before else None), False

    def _select(self):
        sel = self.selector
        self.picked, self.pick_note = sel.result()

    # --- pass 2 --------------------------------------------------------------------

    def pass2(self):
        keep = set(l.key for l in self.picked if not l.flight_only)
        if not keep:
            return
        kept = {}

        def closed(life):
            if life.obs is not None:
                kept[life.key] = life
        tracker = story.Tracker(self.gso, closed, keep=keep, light=True)
        addresses = set(k[1] for k in keep)
        for obs in self.stream(False, addresses if len(addresses) <= 64 else None):
            tracker.add(obs)
        tracker.finish()
        for life in self.picked:
            k = kept.get(life.key)
            if k is not None:
                life.obs = k.obs

    def cleanup(self):
        for inp in self.inputs:
            inp.cleanup()

    def check_inputs(self):
        for inp in self.inputs:
            if not (inp.events or inp.flight or inp.oopses or inp.crash or inp.static or
                    inp.lost):
                raise src.InputError("no skbtrace records, flight records or crash output "
                                     "found in %s" % inp.label)


def _same_event(fr, obs):
    if fr.tool != obs.tool or fr.function != obs.function or fr.event != obs.event or \
            not fr.ts_ns or fr.also is not None:
        return False
    for k in ("length", "data_len", "nr_frags", "gso_size"):
        a, b = getattr(fr, k), getattr(obs, k)
        if a is not None and b is not None and a != b:
            return False
    a, b = fr.gso_type(), obs.gso_type()
    return a is None or b is None or a == b


def crash_observation(finding, session, src_index):
    """A crashdump.SkbFinding (the state `crash` printed, with the live
    tools' rules applied at the crash site) -> Observation at the panic."""
    st = finding.skb
    obs = src.Observation(src_index, 0, "crash", "crash")
    obs.event = "CRASH"
    obs.skb = st.addr
    site = session.crash_site()
    obs.function = site[0] if site else None
    obs.time_text = "[vmcore]"
    obs.gso_before = obs.gso_after = st.gso_type
    obs.gso_names = finding.gso_names
    obs.gso_size = st.gso_size
    obs.length = st.len
    obs.data_len = st.data_len
    obs.nr_frags = st.nr_frags
    obs.frags_bytes = st.frags_bytes
    obs.fl_before = obs.fl_after = st.frag_list
    obs.encap = bool(st.encapsulation) if st.encapsulation is not None else None
    obs.in_tnl = finding.in_tunnel_segment
    obs.reasons = tuple(finding.reason_names)
    obs.severity = event.SEVERITY_NAMES.get(finding.severity) or None
    obs.raw = finding
    return obs


class Selector(object):
    """Which packets to tell, and why (bounded: --max per class)."""

    CLASSES = ("asked", "oops", "critical", "setter and clearer", "setter")

    def __init__(self, args):
        self.limit = args.max
        self.asked = set(args.skb or ())
        self.kept = dict((c, []) for c in self.CLASSES)
        self.counts = dict((c, 0) for c in self.CLASSES)

    def classify(self, life):
        if self.asked:
            return "asked" if life.addr in self.asked else None
        if life.oops is not None or life.crash is not None:
            return "oops"
        if life.severity == "CRITICAL":
            return "critical"
        if life.setter is not None:
            return "setter and clearer" if life.clears else "setter"
        return None

    def offer(self, life):
        c = self.classify(life)
        if c is None:
            return
        self.counts[c] += 1
        lst = self.kept[c]
        if not self.limit or len(lst) < self.limit:
            lst.append(life)

    def result(self):
        c = self.counts
        if self.asked:
            lives = sorted(self.kept["asked"], key=_life_order)
            note = "%d packets at %s" % (c["asked"], ", ".join("0x%x" % a for a in
                                                                sorted(self.asked)))
            for l in lives:
                l.why.append("asked for (--skb)")
            return self._cap(lives, c["asked"]), note
        if c["oops"]:
            lives = self.kept["oops"]
            note = "the oops's skb" if any(l.oops is not None for l in lives) else \
                "the skb the crash transcript shows"
        elif c["critical"]:
            lives = self.kept["critical"]
            note = "%d packets with a CRITICAL finding" % c["critical"]
        else:
            lives = self.kept["setter and clearer"] + self.kept["setter"]
            note = "no oops, no CRITICAL finding; %d packets with a UDP_TUNNEL setter " \
                   "(%d with a frag_list clearer too)" % (c["setter"] + c["setter and clearer"],
                                                           c["setter and clearer"])
        for l in lives:
            l.why.extend(why(l))
        total = c["oops"] or c["critical"] or (c["setter"] + c["setter and clearer"])
        return self._cap(lives, total), note

    def _cap(self, lives, total):
        if self.limit and len(lives) > self.limit:
            lives = lives[:self.limit]
        self.shown, self.total = len(lives), total
        return lives


def _life_order(l):
    return (l.first_t if l.first_t is not None else float("inf"), l.idx)


def why(life):
    out = []
    if life.oops is not None:
        o = life.oops
        out.append("the oops (%s; RIP %s; input [%d] line %d) dumped this skb's CRITICAL "
                   "flight record" % (o.text, o.rip or "?", o.src, o.line_no))
    if life.crash is not None:
        inp, _s, obs = life.crash
        out.append("the crash transcript [%d] shows struct sk_buff 0x%x%s" % (
            inp.index, life.addr, " (panic in %s)" % obs.function if obs.function else ""))
    if not out and life.critical is not None:
        c = life.critical
        out.append("CRITICAL %s at %s (input [%d] line %d)" % (
            ",".join(c.reasons), c.function, c.src, c.line_no))
    if not out and life.setter is not None:
        out.append("UDP_TUNNEL set by %s%s" % (
            life.setter_label(), " and frag_list cleared by %s on the same packet"
            % life.clearer_label() if life.clears else ""))
    return out


# --- output ----------------------------------------------------------------------------

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
    from skbtrace import decoder

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


def write_pcap(run, path):
    """Every packet the crash output let us rebuild; returns how many."""
    packets = [o.raw.packet for o in run.crash_obs if o.raw.packet is not None]
    try:
        return packet.write_pcap(path, packets)
    except (IOError, OSError) as e:
        raise UserError("--pcap: cannot write %s: %s" % (path, e.strerror or e))


def _main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    crashrun.check_arguments(parser, args)
    spool = None
    if args.vmcore:
        path, temporary, _, _ = crashrun.from_vmcore(args)
        args.files = list(args.files) + [path]
        spool = path if temporary else None
    try:
        return _tell(args)
    finally:
        if spool:
            os.unlink(spool)
            os.rmdir(os.path.dirname(spool))


def _tell(args):
    run = Run(args)
    sink = None
    try:
        run.read()
        run.pass1()
        run.check_inputs()
        if args.node and not run.kept and not run.flights and not run.sessions:
            raise NotFound("--node %s: no record of this host in the inputs (hosts: %s)" % (
                args.node, ", ".join(sorted(h for h in run.hosts if h)) or "none named"))
        if args.skb and not run.picked:
            raise NotFound("--skb %s: no packet of this address in the inputs%s" % (
                ", ".join("0x%x" % a for a in args.skb),
                " of node %s" % args.node if args.node else ""))
        run.pass2()
        sink = Sink()
        out = Output(run, sink)
        out.header()
        counts = {}
        for life in run.picked:
            key = (life.node, life.addr)
            counts[key] = run.tracker.count.get(key, 0)
        for life in run.picked:
            out.story(life, counts[(life.node, life.addr)])
        out.summary()
        if args.pcap:
            n = write_pcap(run, args.pcap)
            if args.json:
                out.dump({"type": "postmortem_pcap", "path": args.pcap, "packets": n})
            elif n:
                out.write("pcap: %d packet%s written to %s" % (n, "" if n == 1 else "s",
                                                               args.pcap))
            else:
                out.write("pcap: no packet could be rebuilt (%s): %s holds the pcap header "
                          "only" % ("the crash output does not hold the packet bytes; the "
                                    "crash: lines say what to read" if run.crash_obs else
                                    "no crash output among the inputs", args.pcap))
    except ReaderGone:
        pass
    finally:
        run.cleanup()
        if sink is not None:
            sink.close()
    return 0


def main(argv=None):
    return cli.run_main(_main, argv)
