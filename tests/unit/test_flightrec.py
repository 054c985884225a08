"""The flight recorder: records back from real console captures (kept from
the lab's panics, tests/unit/data/consoles), the option's system changes and
their restoration, the CLI."""
import json
import os
import re

import pytest

from helpers import fake_flight_system
from skbtrace.kernel import event, flightrec, gso, hooks
from skbtrace.live import flight_recorder
from skbtrace.output.detector_formatter import DetectorFormatter
from skbtrace.output.formatter import Formatter

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "consoles")
HW = dict((h.name, h) for h in hooks.watcher_hooks())
HD = dict((h.name, h) for h in hooks.detector_hooks())


def console(name):
    with open(os.path.join(DATA, name), encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def injected_skb(lines):
    for l in lines:
        m = re.search(r"skb_fault_inject: breaking skb ([0-9a-f]{16})", l)
        if m:
            return int(m.group(1), 16)
    raise AssertionError("no injector line")


# SKBFR1 consoles (the layout before the first line carried the skb) and
# SKBFR2 ones: the same reader
V1 = ["6.1-injected-plain.log", "6.1-injected-encap.log", "5.10-injected-encap.log"]
V2 = ["6.1-injected-encap-skbfr2.log", "5.10-injected-encap-skbfr2.log"]


@pytest.mark.parametrize("name", V1 + V2)
def test_injected_panic_consoles_hold_both_tools_records(name):
    lines = console(name)
    recs = list(flightrec.parse(lines))
    skb = injected_skb(lines)
    by_tool = dict((r.tool, r) for r in recs if r.severity == "CRITICAL")
    assert set(by_tool) == {"skb_frag_list_watcher", "skb_vxlan_source_detector"}
    for r in by_tool.values():
        assert r.complete and r.int_field("skb") == skb and r.field("hook") == "skb_segment"
        assert r.int_field("reasons") & event.RSN_CRASH_MASK
        assert r.ts_ns and r.cpu in (0, 1)
    assert by_tool["skb_frag_list_watcher"].history_key == "last"
    assert by_tool["skb_vxlan_source_detector"].history_key == "origin"
    # tool bit in the sequence number keeps the two tools' records apart
    assert by_tool["skb_vxlan_source_detector"].seq >> 31 == 1
    assert by_tool["skb_frag_list_watcher"].seq >> 31 == 0
    if "encap" in name:
        assert by_tool["skb_vxlan_source_detector"].history == "bpf_skb_adjust_room"
        assert by_tool["skb_frag_list_watcher"].int_field("gso_type") == 0x403
    assert set(r.prefix for r in recs) == {"SKBFR2" if name in V2 else "SKBFR1"}


@pytest.mark.parametrize("name", V1 + V2)
def test_grep_critical_alone_names_the_skb_from_version_2_on(name):
    """Issue 21: `grep CRITICAL console.log` must show the skb and the hook,
    not only the finding. SKBFR1's first line did not; SKBFR2's does."""
    lines = console(name)
    skb = injected_skb(lines)
    crit = [l for l in lines if "CRITICAL" in l]
    named = [l for l in crit if "hook=skb_segment skb=0x%x" % skb in l]
    if name in V2:
        assert sorted(re.search(r" 1/7 (\S+) ", l).group(1) for l in named) == [
            "skb_frag_list_watcher", "skb_vxlan_source_detector"]
        assert len(named) == len(crit)
    else:
        assert crit and not named and not [l for l in crit if "%x" % skb in l]


@pytest.mark.parametrize("name", ["5.10-natural-pull-data.log",
                                  "5.10-natural-pull-data-skbfr2.log"])
def test_natural_panic_console_names_the_seglist_state(name):
    lines = console(name)
    recs = list(flightrec.parse(lines))
    assert len(recs) == 1
    r = recs[0]
    crit = [l for l in lines if "CRITICAL" in l]
    assert ("hook=skb_segment_list skb=0x%x" % r.int_field("skb") in crit[0]) == (
        r.prefix == "SKBFR2")
    assert r.severity == "CRITICAL" and r.field("hook") == "skb_segment_list"
    assert event.reason_names(r.int_field("reasons")) == [
        "NULL_FRAGLIST_GSO", "FRAGLIST_NO_LIST", "SEGLIST_NO_LIST"]
    assert r.history == "bpf_skb_pull_data" and r.int_field("age_us") > 0


@pytest.mark.parametrize("name", ["6.1-injected-encap.log", "6.1-injected-encap-skbfr2.log"])
def test_records_render_as_the_tools_lines(name):
    recs = list(flightrec.parse(console(name)))
    w = [r for r in recs if r.tool == "skb_frag_list_watcher"][0]
    d = [r for r in recs if r.tool == "skb_vxlan_source_detector"][0]
    f = Formatter(flightrec.UptimeClock(), gso.DEFAULT)
    line = f.lines(flightrec.to_record(w, HW))[0]
    assert re.match(r"^ +\[\d+\.\d{6}\] %d +INCONSISTENT skb_segment +\| 0x%016x \| NULL "
                    r"\(no change\) \[CRITICAL\] reasons=SEG_NO_PAYLOAD gso_size=1448 "
                    r"gso_type=0x403\(TCPV4\|DODGY\|UDP_TUNNEL\) len=2896 data_len=2896 "
                    r"nr_frags=0 frags_bytes=0 in=skb_udp_tunnel_segment "
                    r"last=skb_gro_receive\(\+\d+us\)$" % (w.cpu, w.int_field("skb")), line), line
    dline = DetectorFormatter(flightrec.UptimeClock(), gso.DEFAULT).lines(
        flightrec.to_record(d, HD))[0]
    assert " GSO_SET      skb_segment " in dline and "[CRITICAL]" in dline
    assert "origin=bpf_skb_adjust_room(+" in dline
    js = json.loads(Formatter(flightrec.UptimeClock(), gso.DEFAULT,
                              json_mode=True).lines(flightrec.to_record(w, HW))[0])
    assert js["severity"] == "CRITICAL" and js["skb"] == "0x%x" % w.int_field("skb")
    assert js["time"].startswith("uptime+") and js["last"]["function"] == "skb_gro_receive"


def test_cut_dump_gives_an_incomplete_record():
    lines = console("6.1-injected-plain.log")
    cut = next(i for i, l in enumerate(lines) if " 4/7 " in l and "SKBFR1" in l)
    recs = list(flightrec.parse(lines[:cut]))
    assert len(recs) == 1 and not recs[0].complete and sorted(recs[0].parts) == [1, 2, 3]


def test_other_prefixes_same_records():
    """The same console as dmesg without timestamps and as journalctl -k
    prints it: prefixes differ, records do not."""
    lines = console("6.1-injected-plain.log")
    plain = list(flightrec.parse(lines))
    bare = [re.sub(r"^\[ *\d+\.\d+\] ", "", l) for l in lines]
    journal = [re.sub(r"^\[ *\d+\.\d+\] ", "Nov 30 08:37:05 lab kernel: ", l) for l in lines]
    for variant in (bare, journal):
        got = list(flightrec.parse(variant))
        assert [(r.seq, r.parts) for r in got] == [(r.seq, r.parts) for r in plain]


def test_a_restarted_tool_reusing_a_sequence_number_starts_a_new_record():
    all_lines = console("6.1-injected-plain.log")
    w = [r for r in flightrec.parse(all_lines) if r.tool == "skb_frag_list_watcher"][0]
    lines = [l for l in all_lines if "SKBFR1 %x " % w.seq in l]
    assert len(lines) == event.FR_LINES
    recs = list(flightrec.parse(lines + lines))
    assert len(recs) == 2 and all(r.complete for r in recs)


def test_names_table_covers_hooks_events_severities():
    t = flightrec.names_table(hooks.watcher_hooks())
    assert t[HW["skb_segment"].hook_id] == "skb_segment"
    assert t[event.FR_EVENT_BASE + event.EV_INCONSISTENT] == "INCONSISTENT"
    assert t[event.FR_SEV_BASE + event.SEV_CRITICAL] == "CRITICAL"
    assert t[event.FR_SEV_BASE + 3] == "none"
    assert max(t) < event.FR_NAMES and all(len(v) < event.FR_NAME_LEN for v in t.values())


def _c_record_formats():
    from skbtrace import paths
    with open(os.path.join(paths.bpf_dir(), "skb_common.h")) as f:
        c = f.read()
    assert 'char f_[] = FR_PREFIX " %x " fmt;' in c
    tools = {"FR_TOOL": "skb_frag_list_watcher", "FR_HIST": "last"}
    out = []
    for m in re.finditer(r'FR_LINE\(((?:"[^"]*"|\s|FR_TOOL|FR_HIST)+),', c):
        fmt = "".join(tools.get(t, t.strip('"')) for t in
                      re.findall(r'"[^"]*"|FR_TOOL|FR_HIST', m.group(1)))
        out.append(event.FR_PREFIX + " %x " + fmt)
    return out


def test_c_format_strings_fit_bpf_trace_printk_and_match_the_parser():
    """The record lines the C writes are the ones parse() reads, within what
    4.18's and 5.10's bpf_trace_printk accept (3 conversions, one %s; the
    sequence number is the first), and the first line alone carries the
    severity, the hook and the full skb address."""
    fmts = _c_record_formats()
    parts = [int(re.search(r" (\d)/(\d) ", f).group(1)) for f in fmts]
    assert sorted(set(parts)) == list(range(1, event.FR_LINES + 1))
    for f in fmts:
        convs = re.findall(r"%(ll[xu]|[sux])", f)
        assert len(convs) <= 3 and convs.count("s") <= 1, f
        assert re.search(r" \d/%d " % event.FR_LINES, f), f
    firsts = [f for f in fmts if " 1/7 " in f]
    assert sorted(re.search(r" 1/7 \S+ (\S+) ", f).group(1) for f in firsts) == [
        "-", "CRITICAL", "WARNING"]
    assert all(f.endswith(" hook=%s skb=0x%llx") for f in firsts)
    # each severity's record as the kernel prints it, read back
    sample = {"hook": "skb_segment", "skb": 0xffff888008011800, "event": "INCONSISTENT",
              "reasons": 0x20, "len": 2896, "data_len": 2896, "nr_frags": 0, "frag_list": 0,
              "gso_size": 1448, "gso_type": 0x403, "flags": 0x40, "last": "skb_gro_receive",
              "age_us": 6730}

    def render(f):
        f = f.replace(" %x ", " 1000001 ", 1)
        return re.sub(r"(\w+)=(0x)?%(?:ll)?([sux])", lambda m: "%s=%s%s" % (
            m.group(1), m.group(2) or "", ("%x" if m.group(3) == "x" else "%s")
            % sample[m.group(1)]), f)

    rest = [render(f) for f in fmts if " 1/7 " not in f]
    for first in firsts:
        line1 = render(first)
        assert "%" not in line1 and all("%" not in l for l in rest)
        recs = list(flightrec.parse(["[ 151.1] " + l for l in [line1] + rest]))
        assert len(recs) == 1 and recs[0].complete and recs[0].prefix == "SKBFR2"
        r = recs[0]
        assert r.tool == "skb_frag_list_watcher" and r.history == "skb_gro_receive"
        assert r.severity == (None if " - " in first else first.split()[4])
        for k, v in sample.items():
            assert (r.field(k) if isinstance(v, str) else r.int_field(k)) == v, k
        # `grep CRITICAL` alone: the skb and the hook are on that line
        if r.severity == "CRITICAL":
            assert "skb=0xffff888008011800" in line1 and "hook=skb_segment" in line1


# --- the option's system changes ----------------------------------------------

@pytest.fixture
def fake_sys(tmp_path, monkeypatch):
    return fake_flight_system(tmp_path, monkeypatch)


def test_the_last_tool_to_exit_restores(fake_sys, tmp_path):
    """Watcher and detector record together: the one that exits first must
    not turn the dump off under the other."""
    import subprocess
    sysctl, tracefs = fake_sys
    other = subprocess.Popen(["sleep", "60"])       # stands for the other tool
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "flight-recorder.json").write_text(json.dumps(
            {"pids": [other.pid], "original": [[str(sysctl), "0", "kernel.ftrace_dump_on_oops"]]}))
        sysctl.write_text("1\n")                   # as the other tool left it
        rec = flight_recorder.Recorder("crash", str(tracefs))
        lines = rec.arm()
        assert any("kernel.ftrace_dump_on_oops 0 -> 1 (restored at exit)" in l for l in lines)
        assert rec.restore() == ["kernel.ftrace_dump_on_oops left on: still used by pid %d, "
                                 "which restores it" % other.pid]
        assert sysctl.read_text() == "1\n"
    finally:
        other.kill()
        other.wait()
    # the other tool is gone (even without cleaning up): the next one to exit restores
    rec = flight_recorder.Recorder("crash", str(tracefs))
    rec.arm()
    rec.restore()
    assert sysctl.read_text() == "0\n"
    assert not (tmp_path / "run" / "flight-recorder.json").exists()


def test_arm_announces_and_restore_puts_back(fake_sys):
    sysctl, tracefs = fake_sys
    rec = flight_recorder.Recorder("crash", str(tracefs))
    rec.check()
    lines = rec.arm()
    assert sysctl.read_text() == "1\n" and (tracefs / "tracing_on").read_text() == "1\n"
    assert any("kernel.ftrace_dump_on_oops 0 -> 1 (restored at exit)" in l for l in lines)
    assert any("tracing_on 0 -> 1" in l for l in lines)
    assert any("trace_printk() being used" in l for l in lines)
    done = rec.restore()
    assert sysctl.read_text() == "0\n" and (tracefs / "tracing_on").read_text() == "0\n"
    assert done == ["tracing_on restored to 0", "kernel.ftrace_dump_on_oops restored to 0"]
    assert rec.restore() == []


def test_check_errors_are_one_line(fake_sys, monkeypatch):
    sysctl, tracefs = fake_sys
    from skbtrace.errors import EnvError
    with pytest.raises(EnvError, match="no trace buffer"):
        flight_recorder.Recorder("crash", None).check()
    monkeypatch.setattr(flight_recorder, "SYSCTL", str(tracefs / "missing"))
    with pytest.raises(EnvError, match="has no kernel.ftrace_dump_on_oops"):
        flight_recorder.Recorder("crash", str(tracefs)).check()
