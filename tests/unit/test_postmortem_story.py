"""Packets ("lives") of one skb address, the setters and clearers, the
decision tree's table, flight records tied to the logs' clock: on the real
Calico-pattern run (tests/unit/data/postmortem), where the tools' own
statistics and verdict say what the answers must add up to."""
import gzip
import json
import os
import re

import pytest

from skbtrace.kernel import gso, hooks
from skbtrace.postmortem import sources as src
from skbtrace.postmortem import story
from skbtrace.kernel.udp_tunnel import PATTERNS
from skbtrace.postmortem import cli as postmortem
from skbtrace.postmortem.run import Run, ordered

HERE = os.path.dirname(os.path.abspath(__file__))
PM = os.path.join(HERE, "data", "postmortem")
TEXT = ["6.1-calico-watcher.log.gz", "6.1-calico-detector.log.gz"]
JSON = ["6.1-calico-watcher.json.gz", "6.1-calico-detector.json.gz"]
ADDR = 0xffff88801e727400       # carries 10 packets in 1.9 s of the text run


def observations(names, keep=lambda o: True):
    streams = []
    for i, name in enumerate(names, 1):
        inp = src.Input(os.path.join(PM, name), i)
        inp.prepare()
        src.sniff(inp)
        streams.append(o for o in src.Scanner(inp).observations() if keep(o))
    return ordered(streams)


def lives(names, keep=lambda o: True):
    closed = []
    t = story.Tracker(gso.DEFAULT, closed.append, keep=KeepAll())
    for o in observations(names, keep):
        t.add(o)
    t.finish()
    return closed


class KeepAll(object):
    def __contains__(self, key):
        return True


def verdict_of_text(name):
    with gzip.open(os.path.join(PM, name), "rt") as f:
        m = re.search(r"^D +a BPF program encapsulated +bpf_skb_adjust_room +(\d+)$", f.read(),
                      re.M)
    return int(m.group(1))


def verdict_of_json(name):
    with gzip.open(os.path.join(PM, name), "rt") as f:
        stats = [json.loads(l) for l in f if '"statistics"' in l][0]
    return dict((s["function"], s["skbs"]) for s in stats["verdict"]["setters"])


def test_one_address_carries_ten_packets():
    at = sorted((l for l in lives(TEXT) if l.addr == ADDR), key=lambda l: l.idx)
    assert [l.first_time for l in at] == [
        "09:20:34.139214", "09:20:34.490684", "09:20:34.676675", "09:20:34.681179",
        "09:20:34.708157", "09:20:35.023265", "09:20:35.176267", "09:20:35.348360",
        "09:20:35.591088", "09:20:36.003838"]
    firsts = [(l.obs[0].event, l.obs[0].function) for l in at]
    # a packet starts where GRO built it (CREATE, GRO_COMPLETE) or, when the
    # detector lost that event, at the watcher's first line after the
    # previous packet's segmentation
    assert firsts[:3] == [("CREATE", "skb_gro_receive"), ("GRO_COMPLETE", "inet_gro_complete"),
                          ("GRO_COMPLETE", "inet_gro_complete")]
    assert firsts[3] == ("INCONSISTENT", "__pskb_pull_tail")
    for l in at:
        assert l.obs[-1].function == "skb_segment"     # each one ends in segmentation
    assert at[0].clear_chain() == ["__pskb_pull_tail", "bpf_skb_pull_data"]


@pytest.mark.parametrize("names", [TEXT, JSON], ids=["text", "json"])
def test_every_packet_is_segmented_once(names):
    """No life holds two segmentations by one hook: the cut rule splits
    exactly where the address was reused."""
    every = lives(names)
    for l in every:
        hits = [(o.tool, o.function) for o in l.obs if o.function in story.SEG_ORDER]
        assert len(hits) == len(set(hits)), (hex(l.addr), l.idx)
    # and every watcher line at skb_segment found a packet of its own
    segs = sum(1 for o in observations(names[:1]) if o.function == "skb_segment")
    assert segs == sum(1 for l in every for o in l.obs
                       if o.tool == src.WATCHER and o.function == "skb_segment")
    assert sum(1 for l in every if any(o.tool == src.WATCHER and o.function == "skb_segment"
                                       for o in l.obs)) == segs


def test_other_head_alone_does_not_cut():
    """__pskb_pull_tail reallocates the head of the same packet: every pull
    in the fixture says (other head), inside one packet."""
    marked = 0
    for l in lives(TEXT):
        for i, o in enumerate(l.obs):
            if o.last and o.last[2]:
                marked += 1
                if i:
                    assert story.stage(l.obs[i - 1])[0] <= story.stage(o)[0]
    assert marked > 700


def test_a_packet_rebuilt_after_the_last_sighting_is_cut_without_its_segmentation():
    """Rule 2: with every segmentation line gone (filtered, lost), the
    watcher's last=skb_gro_receive(+age) still tells packets apart."""
    def no_seg(o):
        return o.tool == src.WATCHER and o.function not in story.SEG_ORDER
    at = [l for l in lives(TEXT, no_seg) if l.addr == ADDR]
    assert len(at) == 10
    assert all(story.stage(l.obs[0])[0] in (story.BIRTH, story.PATH) for l in at)


def test_setters_add_up_to_the_detectors_own_verdict():
    every = lives(TEXT)
    set_here = [l for l in every if l.setter and l.setter["how"] == "set"]
    assert len(set_here) == verdict_of_text("6.1-calico-detector.log.gz")
    assert all(l.setter["pattern"] == "D" for l in set_here)
    every = lives(JSON)
    set_here = [l for l in every if l.setter and l.setter["how"] == "set"]
    assert len(set_here) == verdict_of_json("6.1-calico-detector.json.gz")[
        "bpf_skb_adjust_room"]
    # the detector lost events: a later event's origin= still names the setter
    assert any(l.setter and l.setter["how"] == "origin" for l in every)


def test_the_table_counts_every_packet_once_with_the_trees_advice():
    every = lives(JSON)
    t = story.Table()
    for l in every:
        t.add(l)
    assert t.total() == len(every)
    rows = dict(((s, c), (n, adv)) for s, c, n, adv, _p in t.sorted_rows())
    n, adv = rows[("bpf_skb_adjust_room", "__pskb_pull_tail in bpf_skb_pull_data")]
    assert n >= 1
    assert story.SETTER_TREE["D"] in adv and story.CLEARER_TREE["bpf_skb_pull_data"] in adv
    clears = [l for l in every if l.clears]
    assert len(clears) == sum(v[0] for k, v in rows.items() if "bpf_skb_pull_data" in k[1])


def test_decision_tree_rows_name_real_hooks():
    names = set(h.name for h in hooks.watcher_hooks())
    for fn in story.CLEARER_TREE:
        assert fn == "none" or fn in names
    assert set(story.SETTER_TREE) == set(PATTERNS)
    assert set(story.SEG_ORDER) <= names | set(h.name for h in hooks.detector_hooks())


def run_of(names, *extra):
    args = postmortem.make_parser().parse_args([os.path.join(PM, n) for n in names] +
                                               list(extra))
    r = Run(args)
    r.read()
    r.pass1()
    return r


def test_flight_records_tie_to_the_logs_clock():
    r = run_of(TEXT + ["6.1-calico-trace.txt"])
    assert r.clock.anchors >= 8 and r.clock.spread < 0.001
    tied = [f for f in r.flights if f.also is not None]
    assert len(tied) == r.clock.anchors
    for f in r.flights:
        assert f.t is not None          # every record now has a time on the logs' clock
    # the others fall inside a logged packet of their skb (the detector lost
    # their events: 2524 lost in this run)
    assert not any(r._fr_lives.values())


def test_the_oops_skb_is_picked_from_the_console():
    r = run_of(["../consoles/6.1-injected-encap.log"])
    assert len(r.picked) == 1
    life = r.picked[0]
    assert life.addr == 0xffff8880069fb100 and life.oops is not None
    assert life.setter["function"] == "bpf_skb_adjust_room" and life.setter["how"] == "origin"
    assert life.segment["site"] == "skb_segment" and life.severity == "CRITICAL"
    assert "SEG_NO_PAYLOAD" in life.segment["reasons"]


@pytest.mark.parametrize("names", [TEXT, JSON], ids=["text", "json"])
def test_a_hook_repeated_late_is_another_packet(names):
    """Rule 3, on the runs where the detector lost events: a GRO completion
    200 ms after another, or the detector's skb_segment 43 ms after the
    watcher's, are two packets; within 1 ms they are one call seen twice."""
    for l in lives(names):
        for i, o in enumerate(l.obs):
            if story.stage(o)[0] == story.PATH:
                continue
            if any(p.function == o.function for p in l.obs[:i]):
                assert o.t - l.obs[i - 1].t <= story.BORN_SLACK_S, (hex(l.addr), o.function)
    spans = [l.last_t - l.first_t for l in lives(TEXT)]
    assert max(spans) < 0.01


def test_second_pass_reads_only_the_picked_skbs_lines(monkeypatch):
    """Pass 2 parses only lines naming a picked skb: the packets it cuts from
    them are those pass 1 cut from every line."""
    def timelines(r):
        r.pass2()
        return [[(o.src, o.line_no) for o in l.obs] for l in r.picked]
    fast = timelines(run_of(TEXT, "--max", "4", "--skb", "0xffff88801e727400", "--skb",
                            "0xffff888006f7af00"))
    init = src.Scanner.__init__

    def every_line(self, *a, **kw):
        kw["addresses"] = None
        init(self, *a, **kw)
    monkeypatch.setattr(src.Scanner, "__init__", every_line)
    full = timelines(run_of(TEXT, "--max", "4", "--skb", "0xffff88801e727400", "--skb",
                            "0xffff888006f7af00"))
    assert fast == full and len(full) == 4 and all(full)
