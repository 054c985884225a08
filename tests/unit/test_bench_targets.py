"""The benchmarks' verdict lines (tests/bench/targets.py): the median and
spread of repetitions, met/NOT MET at the goal itself, and the wording of
each target's line."""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
import targets  # noqa: E402

LINE = re.compile(r"^target (\S+) (\S+) (measured .+|not measured \(.+\)) "
                  r"goal (\S+(?: ev/s| lost)?)(?: (met|NOT MET))?$")


def test_median_odd_even_and_unsorted():
    assert targets.median([3.0, 1.0, 2.0]) == 2.0
    assert targets.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert targets.median([7.0]) == 7.0
    with pytest.raises(ValueError):
        targets.median([])


def test_spread_is_min_and_max():
    assert targets.spread([1.6, 1.31, 1.43]) == (1.31, 1.6)


def test_ratio_line_with_spread():
    r = targets.measured("emitting-hit", "watcher/fentry/ring", [1.43, 1.31, 1.60])
    assert targets.line(r) == ("target emitting-hit watcher/fentry/ring measured 1.43x "
                               "(1.31x..1.60x) goal <=1.00x NOT MET")


def test_single_value_has_no_spread():
    r = targets.measured("filtered-hit", "detector/kprobe", [1.5])
    assert targets.line(r) == ("target filtered-hit detector/kprobe measured 1.50x "
                               "goal <=2.00x met")


@pytest.mark.parametrize("target, value, verdict", [
    ("emitting-hit", 1.0, "met"),
    ("emitting-hit", 1.0001, "NOT MET"),
    ("filtered-hit", 2.0, "met"),
    ("forwarding-filtered", 97.0, "met"),
    ("forwarding-filtered", 96.99, "NOT MET"),
    ("forwarding-emitting", 90.0, "met"),
    ("userspace-vs-bcc-print", 2.0, "met"),
    ("userspace-vs-bcc-print", 1.999, "NOT MET"),
    ("userspace-vs-empty-callback", 40.0, "met"),
    ("no-loss-20k", 0, "met"),
    ("no-loss-20k", 1, "NOT MET"),
    ("native-as-the-tool-runs", 500000, "met"),
    ("native-as-the-tool-runs", 499999.6, "NOT MET"),
])
def test_boundary(target, value, verdict):
    line = targets.line(targets.measured(target, "c", [value]))
    assert line.endswith(" " + verdict)
    assert LINE.match(line).group(5) == verdict


def test_a_miss_by_a_hair_does_not_print_as_the_goal():
    # 0.9996 of the goal rounds to the goal at the usual digits: more digits
    line = targets.line(targets.measured("userspace-vs-bcc-print", "ring/text", [1.9996]))
    assert "measured 1.9996x goal >=2.00x NOT MET" in line
    line = targets.line(targets.measured("native-as-the-tool-runs", "watcher/text",
                                         [499999.6, 499999.6, 510000]))
    assert "measured 499,999.6 ev/s (499,999.6 ev/s..510,000.0 ev/s)" in line
    assert line.endswith("NOT MET")


def test_percent_rate_and_lost_lines():
    assert targets.line(targets.measured("forwarding-filtered", "watcher/kprobe",
                                         [96.2, 90.0, 99.5])) == \
        ("target forwarding-filtered watcher/kprobe measured 96.2% (90.0%..99.5%) "
         "goal >=97.0% NOT MET")
    assert targets.line(targets.measured("userspace-vs-empty-callback", "perf/json",
                                         [41.25])) == \
        ("target userspace-vs-empty-callback perf/json measured 41.2% goal >=40.0% met")
    assert targets.line(targets.measured("native-as-the-tool-runs", "watcher/json/64-a-poll",
                                         [51200])) == \
        ("target native-as-the-tool-runs watcher/json/64-a-poll measured 51,200 ev/s "
         "goal >=500,000 ev/s NOT MET")
    assert targets.line(targets.measured("no-loss-20k", "perf", [12345])) == \
        "target no-loss-20k perf measured 12,345 lost goal 0 lost NOT MET"


def test_not_measured_line_says_why_and_has_no_verdict():
    r = targets.not_measured("emitting-hit", "watcher/fentry/ring",
                             "no ring buffer: the kernel has no BPF_MAP_TYPE_RINGBUF")
    line = targets.line(r)
    assert line == ("target emitting-hit watcher/fentry/ring not measured (no ring buffer: "
                    "the kernel has no BPF_MAP_TYPE_RINGBUF) goal <=1.00x")
    m = LINE.match(line)
    assert m and m.group(5) is None


def test_every_target_line_parses():
    for name in targets.TARGETS:
        for r in (targets.measured(name, "a/b", [1, 2, 3]), targets.not_measured(name, "a/b", "x")):
            assert LINE.match(targets.line(r)), targets.line(r)


def test_block_orders_by_target_then_as_given():
    rs = [targets.measured("no-loss-20k", "ring", [0]),
          targets.measured("emitting-hit", "watcher/kprobe/ring", [2.0]),
          targets.not_measured("emitting-hit", "watcher/fentry/ring", "no fentry"),
          targets.measured("filtered-hit", "watcher/kprobe", [1.0])]
    out = targets.block(rs)
    assert out[0].startswith("== ")
    assert [l.split()[1:3] for l in out[1:]] == [
        ["emitting-hit", "watcher/kprobe/ring"], ["emitting-hit", "watcher/fentry/ring"],
        ["filtered-hit", "watcher/kprobe"], ["no-loss-20k", "ring"]]


def test_unknown_target_or_no_values_is_an_error():
    with pytest.raises(ValueError):
        targets.measured("fast", "c", [1])
    with pytest.raises(ValueError):
        targets.not_measured("fast", "c", "x")
    with pytest.raises(ValueError):
        targets.measured("emitting-hit", "c", [])
