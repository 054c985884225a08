"""skb_postmortem's reasoning: observations of one skb address cut into the
packets it carried ("lives"), what each packet went through, which packets
to tell, and the table of (UDP_TUNNEL setter, frag_list clearer) pairs with
the users' decision tree.

Address reuse (docs/skb_postmortem.md, TIMELINES AND ADDRESS REUSE): an
address carries a new packet as soon as its skb is freed, every few ms under
forwarding load. A packet moves forward through three stages: birth (GRO
builds it: CREATE by a GRO receive hook, GRO_COMPLETE, VIRTIO_RX), the path
(everything else), segmentation (entered in call order __skb_gso_segment ->
udp4/6_ufo_fragment -> skb_udp_tunnel_segment -> skb_segment), which
consumes it. Time-ordered observations of one address start a new life when

  1. the stage goes back (a birth or path event after segmentation, a birth
     after the path);
  2. segmentation is entered again: a step earlier in the call order, or the
     same tool's same hook a second time;
  3. a hook the packet passed at birth or segmentation comes again more than
     BORN_SLACK_S after its last observation (within it: the other tool
     reporting the same call, or GRO's nested completions);
  4. the watcher's last= names a GRO receive hook (skb_gro_receive,
     skb_gro_receive_list) whose time (the event's time minus the age) is
     after everything seen of a packet GRO already completed or that is past
     its birth: the packet was built again after the last thing we saw (its
     birth events were lost or filtered).

`(other head)` (F_LAST_STALE) alone does not cut: __pskb_pull_tail
reallocates the head of the same packet and carries it in every life of the
real fixtures.
"""
from collections import OrderedDict

from skbtrace.kernel import event, hooks, rules, udp_tunnel
from skbtrace.postmortem.sources import DETECTOR, WATCHER

BIRTH, PATH, SEG = 0, 1, 2

# Segmentation entry points in the order one packet enters them (the
# watcher reports them at entry, the detector too): a step back is a new
# packet. skb_segment, skb_segment_list, __udp_gso_segment and the IP
# fragmenters are where it ends.
SEG_ORDER = {"__skb_gso_segment": 0, "udp4_ufo_fragment": 1, "udp6_ufo_fragment": 1,
             "skb_udp_tunnel_segment": 2, "__udp_gso_segment": 3, "skb_segment": 3,
             "skb_segment_list": 3, "ip_do_fragment": 3, "ip6_fragment": 3}
GRO_RECEIVE = frozenset(h.name for h in hooks.watcher_hooks() if h.event == "CREATE")
BIRTH_EVENTS = frozenset(("GRO_COMPLETE", "VIRTIO_RX"))
# where skb_segment's crash rule runs (the watcher's HF_CRASH_CHECK and
# HF_LIST_CHECK hooks): "the state it reached skb_segment in"
SEGMENT_SITES = frozenset(h.name for h in hooks.watcher_hooks()
                          if h.flags & (hooks.HF_CRASH_CHECK | hooks.HF_LIST_CHECK))
DETECTOR_EVENT_OF = dict((h.name, h.event) for h in hooks.detector_hooks())
CLEARING_HOOKS = frozenset(h.name for h in hooks.watcher_hooks() if "CLEAR" in h.event)
# clock error between the two tools' processes, the µs rounding of ages, and
# the time one call takes to be reported by both tools
BORN_SLACK_S = 0.001


def stage(obs):
    f = obs.function
    if f in SEG_ORDER:
        return SEG, SEG_ORDER[f]
    if obs.event in BIRTH_EVENTS or (obs.event == "CREATE" and f in GRO_RECEIVE):
        return BIRTH, 0
    return PATH, 0


def cuts(life, obs):
    """Does obs start a new packet at life's address? (the rules above)"""
    st, sub = stage(obs)
    if st < life.stage:
        return True
    late = obs.t is not None and life.last_t is not None and \
        obs.t > life.last_t + BORN_SLACK_S
    if st == SEG and life.stage == SEG:
        if sub < life.seg_sub or (obs.tool, obs.function) in life.seen:
            return True
    if st in (BIRTH, SEG) and obs.function in life.seen_functions and late:
        return True
    last = obs.last
    if (last and last[0] in GRO_RECEIVE and last[1] is not None and late and
            (life.stage >= PATH or life.completed)):
        if obs.t - last[1] / 1e6 > life.last_t + BORN_SLACK_S:
            return True
    return False


def _sev_rank(s):
    return {"WARNING": 1, "CRITICAL": 2}.get(s, 0)


class Life(object):
    """One packet at one address: a summary kept up to date as observations
    arrive (pass 1 keeps only this), and the observations themselves when
    the life is one to tell (pass 2)."""

    __slots__ = ("node", "addr", "idx", "first_t", "last_t", "first_time", "last_time",
                 "stage", "seg_sub", "seen", "seen_functions", "completed", "n", "tools", "setter", "tunnel_first",
                 "tunnel_removed", "detector_seen", "watcher_seen", "created", "clears",
                 "segment", "severity", "critical", "flows", "obs", "extra",
                 "oops", "crash", "why", "gso", "flight_only", "fl_seen")

    def __init__(self, node, addr, idx, gso):
        self.node, self.addr, self.idx, self.gso = node, addr, idx, gso
        self.first_t = self.last_t = self.first_time = self.last_time = None
        self.stage = -1
        self.seg_sub = -1
        self.seen = set()               # (tool, hook) at birth and segmentation
        self.seen_functions = set()
        self.completed = False          # GRO completed (or virtio built) it
        self.n = 0
        self.tools = set()
        self.setter = None
        self.tunnel_first = None
        self.tunnel_removed = None
        self.detector_seen = self.watcher_seen = False
        self.created = []
        self.clears = []
        self.segment = None
        self.severity = None
        self.critical = None
        self.flows = []
        self.obs = None             # kept observations (pass 2), else None
        self.extra = []             # flight records and crash states placed here
        self.oops = None
        self.crash = None
        self.why = []
        self.flight_only = False
        self.fl_seen = False

    @property
    def key(self):
        return (self.node, self.addr, self.idx)

    def add_stage(self, obs):
        """What the cut rule needs: the stage reached and the time span."""
        st, sub = stage(obs)
        if st > self.stage:
            self.stage = st
        if st == SEG and sub > self.seg_sub:
            self.seg_sub = sub
        if st != PATH:
            self.seen.add((obs.tool, obs.function))
            self.seen_functions.add(obs.function)
            if obs.event in BIRTH_EVENTS:
                self.completed = True
        if obs.t is not None:
            if self.first_t is None or obs.t < self.first_t:
                self.first_t, self.first_time = obs.t, obs.time_text
            if self.last_t is None or obs.t >= self.last_t:
                self.last_t, self.last_time = obs.t, obs.time_text
        self.n += 1

    def add(self, obs):
        if obs._tail is not None:
            if self.obs is not None or obs.tool == DETECTOR or obs.function in SEGMENT_SITES \
                    or obs.event not in ("INCONSISTENT", "ACCESS") or "[CRITICAL]" in obs._tail:
                obs.details()
            else:
                obs.glance()
        self.add_stage(obs)
        if obs.tool:
            self.tools.add(obs.tool)
        if obs.kind in ("log", "json"):
            if obs.tool == DETECTOR:
                self.detector_seen = True
            elif obs.tool == WATCHER:
                self.watcher_seen = True
        self._tunnel(obs)
        self._frag_list(obs)
        if obs.function in SEGMENT_SITES:
            self._segment(obs)
        if obs.severity and _sev_rank(obs.severity) > _sev_rank(self.severity):
            self.severity = obs.severity
        if obs.severity == "CRITICAL" and self.critical is None:
            self.critical = obs.ref()
        if obs.flow or obs.inner_flow:
            f = (obs.flow, obs.inner_flow)
            if f not in self.flows and len(self.flows) < 4:
                self.flows.append(f)
        if self.obs is not None:
            self.obs.append(obs)

    # --- who set UDP_TUNNEL ------------------------------------------------------

    def _tunnel(self, obs):
        tun = obs.has_tunnel(self.gso)
        if tun and self.tunnel_first is None:
            self.tunnel_first = obs.ref()
        if obs.tunnel == "removed" and self.tunnel_removed is None:
            self.tunnel_removed = obs.ref()
        if obs.tool != DETECTOR:
            return
        if self.setter is not None and self.setter["how"] == "set":
            return
        origin = obs.origin
        on_entry = bool(origin and origin[2])
        if obs.tunnel == "added":
            pattern = "C" if on_entry else udp_tunnel.PATTERN_OF_EVENT.get(obs.event, "C")
            self.setter = _setter(obs.function, obs.event, pattern, "set", obs, obs.time_text)
        elif origin and self.setter is None and obs.tunnel != "set_by_enclosing":
            fn, age = origin[0], origin[1]
            ev = obs.event if fn == obs.function else DETECTOR_EVENT_OF.get(fn, "")
            pattern = "C" if on_entry else udp_tunnel.PATTERN_OF_EVENT.get(ev, "C")
            when = None
            if obs.t is not None and age is not None:
                when = "%s - %dus" % (obs.time_text, age)
            self.setter = _setter(fn, ev, pattern, "origin", obs, when)
        elif tun and self.setter is None and obs.tunnel != "set_by_enclosing":
            self.setter = _setter(None, obs.event, "C", "first seen", obs, obs.time_text)

    def setter_label(self):
        s = self.setter
        if s is None:
            return "set, setter not recorded" if self.tunnel_first is not None \
                else "none (no tunnel bit seen)"
        if s["pattern"] == "C":
            return "already set when first seen"
        return s["function"]

    # --- who cleared or changed frag_list ---------------------------------------

    def _frag_list(self, obs):
        if obs.tool != WATCHER:
            return
        if obs.fl_before or obs.fl_after:
            self.fl_seen = True
        if obs.event == "CREATE":
            self.created.append(obs.ref())
        elif obs.event in ("CLEAR", "MODIFY"):
            self.clears.append(obs.ref())

    def clear_chain(self):
        """The functions that cleared (or changed) the last frag_list, the
        one that did it first: nested calls (bpf_skb_pull_data ->
        __pskb_pull_tail) both report the clear, the inner one returns
        first. Without a CLEAR, a FRAGLIST skb that reached segmentation
        without its list names its clearer in the watcher's last= there."""
        if not self.clears:
            last = self.segment_last()
            reasons = self.segment["reasons"] if self.segment else ()
            if last and last[0] in CLEARING_HOOKS and "FRAGLIST_NO_LIST" in reasons:
                return [last[0]]
            return []
        last = self.clears[-1]
        chain = [c for c in self.clears if c.event == last.event and
                 c.fl_before == last.fl_before]
        out = []
        for c in chain:
            if c.function not in out:
                out.append(c.function)
        return out

    def segment_last(self):
        """The watcher's last= where segmentation found the skb."""
        if self.segment is None:
            return None
        for o in self.segment["seen_by"]:
            if o.tool == WATCHER and o.last:
                return o.last
        return None

    def clearer_label(self):
        chain = self.clear_chain()
        if chain and not self.clears:
            return "%s (last=, no CLEAR seen)" % chain[0]
        if chain:
            verb = "" if self.clears[-1].event == "CLEAR" else "changed by "
            return verb + " in ".join(chain)
        if not self.watcher_seen:
            if any(o.tool == WATCHER for o in self.extra):
                return "no CLEAR recorded (flight records only)"
            return "not traced (no watcher record)"
        if self.created or self.fl_seen:
            return "kept (frag_list present)"
        return "none (no frag_list seen)"

    # --- the state it reached skb_segment in --------------------------------------

    def _segment(self, obs):
        s = self.segment
        if s is None:
            self.segment = s = {"site": obs.function, "first": obs.ref()}
        for k in ("gso_type", "gso_size", "length", "data_len", "nr_frags", "frags_bytes",
                  "frag_list", "in_tnl", "encap"):
            v = obs.gso_type() if k == "gso_type" else \
                obs.fl_before if k == "frag_list" else getattr(obs, k)
            if s.get(k) is None and v is not None:
                s[k] = v
        if _sev_rank(obs.severity) > _sev_rank(s.get("severity")):
            s["severity"] = obs.severity
        s.setdefault("reasons", set()).update(obs.reasons)
        seen = s.setdefault("seen_by", [])
        if not any(o.src == obs.src and o.line_no == obs.line_no for o in seen):
            seen.append(obs.ref())


def _setter(function, ev, pattern, how, obs, when):
    return {"function": function, "event": ev, "pattern": pattern, "how": how,
            "obs": obs.ref(), "when": when}


# --- the decision tree ----------------------------------------------------------

# Seed 000's "Root Cause Decision Tree", condensed to one row per branch;
# the branches it lacks come from seed 004 (Calico #11424: a BPF program's
# bpf_skb_adjust_room sets the bit, its bpf_skb_pull_data empties frag_list)
# and the detector's patterns (skbtrace.kernel.udp_tunnel.PATTERNS: A-E).
SETTER_TREE = OrderedDict([
    ("A", "virtio GSO type conversion: check drivers/net/virtio_net.c receive_buf() and the "
          "host's virtio header (seed 000)"),
    ("B", "GRO took the flow for a UDP tunnel: check net/ipv4/udp_offload.c "
          "udp4_gro_complete() and `ss -uapn` for a tunnel socket (seed 000)"),
    ("C", "set before any traced function: check the host kernel, it may be set before the "
          "packet reaches the VM (seed 000)"),
    ("D", "a BPF program encapsulated (bpf_skb_adjust_room ENCAP_L4_UDP, Calico eBPF VXLAN): "
          "see the tc programs (seed 004)"),
    ("E", "a kernel tunnel device transmitted: see its offloads (detector pattern E)"),
])
CLEARER_TREE = OrderedDict([
    ("bpf_skb_pull_data", "a BPF program pulled the data into the head (Calico's unconditional "
                          "bpf_skb_pull_data, seed 004): harmless while the head holds the "
                          "payload, fatal when skb_segment finds data beyond head and frags"),
    ("pskb_expand_head", "header expansion during forwarding: does it keep frag_list for GSO "
                         "packets, or call skb_gso_reset()? (seed 000)"),
    ("__pskb_pull_tail", "forced linearization (__skb_linearize, pskb_may_pull): why is it "
                         "triggered? call skb_gso_reset() after it (seed 000)"),
    ("skb_segment_list", "fraglist segmentation consumed the list (expected)"),
    ("none", "never created: why did GRO not build a frag_list? a wrong gso_type changes "
             "GRO's choice (seed 000)"),
])


def advice(life):
    """The decision tree's branches for this packet: its setter's, and its
    frag_list's when it was cleared, or when it crashed (or would have)
    without one; a packet that survived with the payload in its head needs
    no frag_list branch."""
    out = []
    s = life.setter
    if s is not None:
        out.append(SETTER_TREE.get(s["pattern"], ""))
    elif life.tunnel_first is not None:
        out.append("the detector names the setter: run it too (or look at its lost events)")
    chain = life.clear_chain()
    for fn in reversed(chain):          # the outermost caller is the actionable one
        if fn in CLEARER_TREE:
            out.append(CLEARER_TREE[fn])
            break
    else:
        fatal = life.severity == "CRITICAL" or life.oops is not None
        if not chain and fatal and not life.created and not life.fl_seen:
            out.append(CLEARER_TREE["none"])
    return "; ".join(x for x in out if x)


class Table(object):
    """Packets counted by (UDP_TUNNEL setter, frag_list clearer)."""

    def __init__(self):
        self.rows = OrderedDict()       # (setter, clearer) -> [count, advice, pattern]

    def add(self, life):
        key = (life.setter_label(), life.clearer_label())
        row = self.rows.get(key)
        if row is None:
            self.rows[key] = row = [0, advice(life),
                                    life.setter["pattern"] if life.setter else None]
        row[0] += 1

    def sorted_rows(self):
        return sorted(((k[0], k[1], v[0], v[1], v[2]) for k, v in self.rows.items()),
                      key=lambda r: (-r[2], r[0], r[1]))

    def total(self):
        return sum(v[0] for v in self.rows.values())


# --- lives from a time-ordered stream ------------------------------------------------

class Tracker(object):
    """Cuts the observations of each (node, address) into lives.

    on_close(life) gets every life once it is over (its address carried a
    new packet, or the input ended). keep: life keys whose observations are
    kept (pass 2). history: addresses whose every life stays reachable after
    it closed (flight records and crash states are placed among them)."""

    def __init__(self, gso, on_close, keep=None, history=(), light=False):
        self.gso = gso
        self.on_close = on_close
        self.keep = keep
        self.light = light          # only the kept lives get a summary (pass 2)
        self.current = {}
        self.count = {}
        self.history = dict((k, []) for k in history)

    def add(self, obs):
        key = (obs.node, obs.skb)
        life = self.current.get(key)
        if life is not None and cuts(life, obs):
            self._close(life)
            life = None
        if life is None:
            idx = self.count.get(key, 0)
            self.count[key] = idx + 1
            life = Life(obs.node, obs.skb, idx, self.gso)
            if self.keep is not None and life.key in self.keep:
                life.obs = []
            self.current[key] = life
            if key in self.history:
                self.history[key].append(life)
        if self.light and life.obs is None:
            life.add_stage(obs)
        else:
            life.add(obs)
        return life

    def _close(self, life):
        self.on_close(life)

    def finish(self):
        for life in list(self.current.values()):
            self._close(life)
        self.current.clear()


def reason_text(names):
    return ["%s: %s" % (n, rules.TEXT.get(n, "")) for n in names]


def reasons_sorted(names):
    order = dict((name, bit) for bit, name in event.REASON_BITS)
    return sorted(names, key=lambda n: order.get(n, 1 << 30))
