"""The fast path with the tools' own clock (output/clock.Clock), which the
handlers do not call per event: they work out the TIME column and --json's
"time" from the clock's offset and its text per second (Clock.hms_head(),
Clock.json_head()). test_fastpath.py compares the paths with the tests'
fixed clock; this compares them with a real one, over the same events."""
import pytest

import fastpath_cases as cases

from skbtrace.output import clock as clock_mod
from skbtrace.output import record


@pytest.mark.parametrize("tool,mode,stacks", cases.configurations())
def test_the_tool_clock_gives_the_reference_time(tool, mode, stacks, monkeypatch):
    monkeypatch.setattr(record, "_identity", [cases.IDENTITY])
    clock = clock_mod.Clock()
    monkeypatch.setattr(cases, "FixedClock", lambda: clock)
    data = cases.records(tool)
    ref, ref_summary = cases.reference(tool, mode, stacks, data)
    got, got_summary = cases.fast(tool, mode, stacks, data)
    assert len(set(r[:8] for r in ref if r[:1].isdigit())) > 10 or mode == "json"
    for i, (r, g) in enumerate(zip(ref, got)):
        assert g == r, "record %d" % i
    assert (len(got), got_summary) == (len(ref), ref_summary)
