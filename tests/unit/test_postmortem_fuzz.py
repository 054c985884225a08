"""Malformed, truncated, empty, binary or mutated inputs: every reader of
skb_postmortem either understands a line or leaves it, and the command
either tells a story or prints one line and exits non-zero; never a
traceback. Property-based (hypothesis) over random bytes and over
mutations of the real fixtures."""
import contextlib
import gzip
import io
import os
import shutil
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="python3-hypothesis (make deps)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from skbtrace.postmortem import sources as src  # noqa: E402
from skbtrace.postmortem import cli as postmortem  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PM = os.path.join(HERE, "data", "postmortem")
CONSOLES = os.path.join(HERE, "data", "consoles")
FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def real_lines(name, n=300):
    p = os.path.join(PM, name)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(p, "rt") as f:
        return f.read().splitlines()[:n]


WATCHER = real_lines("6.1-calico-watcher.log.gz")
DETECTOR = real_lines("6.1-calico-detector.log.gz")
WJSON = real_lines("6.1-calico-watcher.json.gz", 60)
DJSON = real_lines("6.1-calico-detector.json.gz", 60)
CONSOLE = real_lines("6.1-crash-console.log", 200)
SESSION = real_lines("6.1-crash-session.txt", 2000)
TRACE = real_lines("6.1-calico-trace.txt")
ALL = WATCHER + DETECTOR + WJSON + DJSON + CONSOLE + TRACE


@st.composite
def mutated(draw, lines):
    """A real line, cut, with bytes changed, inserted or deleted."""
    line = draw(st.sampled_from(lines))
    ops = draw(st.lists(st.tuples(st.sampled_from(["cut", "flip", "insert", "delete"]),
                                  st.integers(0, max(0, len(line))),
                                  st.text(min_size=1, max_size=8)), max_size=4))
    for op, i, t in ops:
        if op == "cut":
            line = line[:i]
        elif op == "flip" and line:
            i = min(i, len(line) - 1)
            line = line[:i] + t[0] + line[i + 1:]
        elif op == "insert":
            line = line[:i] + t + line[i:]
        elif op == "delete":
            line = line[:i] + line[i + len(t):]
    return line


@FAST
@given(st.one_of(st.text(max_size=400), mutated(WATCHER + DETECTOR)))
def test_text_line_reader(line):
    obs = src.parse_text_line(line, 1, 1, details=False)
    if obs is not None:
        obs.details()
        assert obs.skb is not None and obs.function and obs.event in src.EVENT_NUMBERS
        if line.lstrip().startswith("  -> Flow: "):
            src.parse_flow_line(obs, line)


@FAST
@given(st.one_of(st.text(max_size=400), mutated(WJSON + DJSON)))
def test_json_line_reader(line):
    try:
        d = src.json_object(line)
    except ValueError:
        return
    if d is not None and d.get("type") == "event":
        try:
            src.parse_json_event(d)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            pass            # what the scanner counts as a malformed line


@FAST
@given(st.lists(st.one_of(mutated(CONSOLE + TRACE), st.text(max_size=200)), max_size=80))
def test_kernel_text_reader(lines):
    kt = src.KernelText(1)
    for n, line in enumerate(lines, 1):
        kt.feed(n, line)
    for rec in kt.records():
        src.flight_observation(rec, 1)
    for o in kt.oopses:
        o.to_dict()


def run_cli(data, args=()):
    d = tempfile.mkdtemp(prefix="pm_fuzz.")
    try:
        p = os.path.join(d, "input")
        with open(p, "wb") as f:
            f.write(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = postmortem.main([p] + list(args))
        return rc, out.getvalue(), err.getvalue()
    finally:
        shutil.rmtree(d)


def check(rc, err):
    assert rc in (0, 1, 2), rc
    if rc:
        assert err.count("\n") == 1 and ": error: " in err, err
    assert "Traceback" not in err


@FAST
@given(st.binary(max_size=3000))
def test_cli_on_random_bytes(data):
    check(*run_cli(data)[::2])


@FAST
@given(st.lists(st.one_of(mutated(ALL), st.sampled_from(ALL)), min_size=1, max_size=120))
def test_cli_on_mutated_real_lines(lines):
    rc, _out, err = run_cli(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
    check(rc, err)


@FAST
@given(st.lists(st.one_of(mutated(SESSION), st.sampled_from(SESSION)), min_size=1,
                max_size=200))
def test_cli_on_mutated_crash_sessions(lines):
    rc, _out, err = run_cli(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
    check(rc, err)


@pytest.mark.parametrize("name", ["6.1-calico-watcher.log.gz", "6.1-calico-detector.json.gz",
                                  "6.1-crash-session.txt", "6.1-crash-console.log"])
@FAST
@given(cut=st.floats(0.0, 1.0))
def test_cli_on_truncated_fixtures(name, cut):
    with open(os.path.join(PM, name), "rb") as f:
        data = f.read()
    rc, _out, err = run_cli(data[:int(len(data) * cut)])
    check(rc, err)
    if name.endswith(".gz") and 0.05 < cut < 0.99:
        assert rc == 2 and "gzip" in err
