"""One skb_postmortem run: read the inputs, pass 1 (every address cut into
packets, a summary kept per packet), the flight records and crash states
joined to the packets, the selection, pass 2 (the observations of the packets
told). Two passes keep the memory bounded (docs/skb_postmortem.md, OVERHEAD)."""
import heapq

from skbtrace.kernel import event, gso
from skbtrace.postmortem import crashdump, story
from skbtrace.postmortem import sources as src
from skbtrace.postmortem.selection import Selector

# how far out of time order a tool log may be (per-CPU perf buffers are
# read one after the other; the fixtures show up to 32 ms)
REORDER_S = 1.0
# flight records are tied to the logs' clock by records found in both: the
# offsets that agree within this window win
ANCHOR_WINDOW_S = 0.002


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


class FlightClock(object):
    """Flight records carry ftrace's clock (seconds since boot); the logs carry
    wall-clock time. Records found in a log too tie the two: the offsets that
    agree within ANCHOR_WINDOW_S win, and every other record is placed by it."""

    def __init__(self):
        self.offset = None          # logs' clock - ftrace clock, seconds
        self.anchors = 0
        self.spread = None
        self.slack = ANCHOR_WINDOW_S
        self.dup_of = {}            # (src, line) of a logged event -> flight Observation

    def anchor(self, cands):
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

    def to_logs(self, fr):
        """A flight record's time on the logs' clock, when there is a tie."""
        if self.offset is not None and fr.ts_ns:
            fr.t = fr.ts_ns / 1e9 + self.offset
            fr.time_text = "~" + hms(fr.t)

    def locate(self, lives, fr):
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
        self.clock = FlightClock()  # ftrace's clock -> the logs'
        self.table = story.Table()
        self.lives = 0
        self.addresses = 0
        self.picked = []
        self.pick_note = ""
        self.gso = gso.DEFAULT
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
        self.clock.anchor(cands)
        self._place()
        self._select()

    def _closed1(self, life):
        if (life.node, life.addr) in self._watched:
            return                  # counted after flight records and crash states joined
        self.table.add(life)
        self.selector.offer(life)

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
            self.clock.to_logs(fr)
            key = (fr.node, fr.skb)
            life, inside = self.clock.locate(self._lives_of(key), fr)
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
