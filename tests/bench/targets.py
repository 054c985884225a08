"""Issue 18's performance targets and the verdict lines the benchmarks end
with: pure (no bcc, no lab), so the unit tests check the arithmetic and the
wording, and bench_overhead_lab.py and bench_pipeline.py print the same form:

    target <name> <configuration> measured <value> goal <value> met|NOT MET

A value measured over several repetitions is their median, with the spread
(min..max) after it; a configuration that could not run says why instead of
disappearing.
"""
import collections

RATIO, PERCENT, RATE, LOST = "ratio", "percent", "rate", "lost"

Target = collections.namedtuple("Target", "name kind op goal what")

# op "<=": the measured value may not exceed the goal; ">=": may not fall below
TARGETS = collections.OrderedDict((t.name, t) for t in (
    Target("emitting-hit", RATIO, "<=", 1.0,
           "per hit, the tool's default flags, vs the bpftrace peer"),
    Target("filtered-hit", RATIO, "<=", 2.0,
           "per hit, --gso-only --src-ip matching nothing, vs the empty program "
           "of the same backend"),
    Target("forwarding-filtered", PERCENT, ">=", 97.0,
           "forwarding with the non-matching filter, of the empty program's on the "
           "same backend"),
    Target("forwarding-emitting", PERCENT, ">=", 90.0,
           "forwarding with the watcher emitting, of the empty program's on the same "
           "backend"),
    Target("userspace-vs-bcc-print", RATIO, ">=", 2.0,
           "events/s as the tool runs, vs bcc's table.event + print (guest)"),
    Target("userspace-vs-empty-callback", PERCENT, ">=", 40.0,
           "events/s as the tool runs, of bcc's empty callback (guest)"),
    Target("no-loss-20k", LOST, "<=", 0,
           "events lost at 20,000 events/s for the whole run, default buffer size"),
    Target("native-as-the-tool-runs", RATE, ">=", 500000.0,
           "events/s as the tool runs, natively (bench_pipeline.py)"),
))

Result = collections.namedtuple("Result", "target config values why")


def measured(target, config, values):
    """A target's figure in one configuration: values, one per repetition."""
    if target not in TARGETS:
        raise ValueError("unknown target %r" % target)
    values = [float(v) for v in values]
    if not values:
        raise ValueError("target %s %s: no values" % (target, config))
    return Result(target, config, values, None)


def not_measured(target, config, why):
    if target not in TARGETS:
        raise ValueError("unknown target %r" % target)
    return Result(target, config, None, why)


def median(values):
    s = sorted(values)
    n = len(s)
    if not n:
        raise ValueError("median of nothing")
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def spread(values):
    return min(values), max(values)


def met(target, value):
    t = TARGETS[target]
    return value <= t.goal if t.op == "<=" else value >= t.goal


def show(kind, value, digits=None):
    """A value as the lines print it: 1.43x, 96.2%, 51,200 ev/s, 0 lost."""
    if kind == RATIO:
        return "%.*fx" % (2 if digits is None else digits, value)
    if kind == PERCENT:
        return "%.*f%%" % (1 if digits is None else digits, value)
    if kind == RATE:
        return "{:,.{}f} ev/s".format(value, 0 if digits is None else digits)
    return "{:,.0f} lost".format(value)


def _digits(kind, value, goal):
    """Enough digits that a value on the wrong side of the goal does not
    print as the goal itself (0.9996 as 1.00x, NOT MET)."""
    if kind == LOST or value == goal:
        return None
    d0 = {RATIO: 2, PERCENT: 1, RATE: 0}[kind]
    for d in range(d0, d0 + 6):
        if show(kind, value, d) != show(kind, goal, d):
            return d if d != d0 else None
    return d0 + 6


def line(result):
    t = TARGETS[result.target]
    head = "target %s %s" % (result.target, result.config)
    goal = "goal %s%s" % ("" if t.kind == LOST else t.op, show(t.kind, t.goal))
    if result.values is None:
        return "%s not measured (%s) %s" % (head, result.why, goal)
    m = median(result.values)
    d = _digits(t.kind, m, t.goal)
    value = show(t.kind, m, d)
    if len(result.values) > 1:
        lo, hi = spread(result.values)
        value += " (%s..%s)" % (show(t.kind, lo, d), show(t.kind, hi, d))
    return "%s measured %s %s %s" % (head, value, goal,
                                      "met" if met(result.target, m) else "NOT MET")


def block(results, title="targets of issue 18"):
    """The closing block: a title, then one line per target and
    configuration, in the order of TARGETS and then as given."""
    order = dict((name, i) for i, name in enumerate(TARGETS))
    rows = sorted(enumerate(results), key=lambda ir: (order[ir[1].target], ir[0]))
    return ["== %s: median of the repetitions (min..max) ==" % title] + \
        [line(r) for _i, r in rows]
