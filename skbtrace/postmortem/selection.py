"""Which packets the post-mortem tells, and why: the ones asked for (--skb),
else the oops's, else those with a CRITICAL finding, else those with a
UDP_TUNNEL setter; at most --max of a class."""


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
