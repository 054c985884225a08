"""The run loop with a fake bcc: SIGINT/SIGTERM statistics, pipes, skipped
hooks, per-CPU lost counts. The real BPF side is tested in tests/lab."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from helpers import fake_flight_system, make_event, run_into, to_bytes
from skbtrace.kernel import event, hooks
from skbtrace.watcher import main

HERE = os.path.dirname(os.path.abspath(__file__))
ID = dict((h.name, h.hook_id) for h in hooks.watcher_hooks())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_prints_statistics(fake, capsys, sig):
    fake.BPF.stop_signal = sig
    fake.BPF.lost = 3
    fake.BPF.percpu = {("counters", event.CNT_FILTERED): [10, 3],
                       ("counters", event.CNT_SUBMIT_FAIL): [1, 0],
                       ("hook_hits", ID["skb_segment"]): [7, 8],
                       ("hook_hits.filtered", ID["skb_segment"]): [1, 1]}
    fake.BPF.script = [[to_bytes(make_event(event=event.EV_CREATE, hook_id=ID["skb_gro_receive_list"],
                                            frag_list_after=0xffff000000000001))],
                       [to_bytes(make_event(event=event.EV_INCONSISTENT, hook_id=ID["skb_segment"],
                                            severity=2, reasons=event.RSN_SEG_NO_PAYLOAD,
                                            gso_size_after=1348))]]
    assert main(["--gso-only"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("TIME ")
    assert " CREATE " in lines[2] and "INCONSISTENT" in lines[3] and "[CRITICAL]" in lines[3]
    assert "Total events:       2" in out
    assert "Filtered out:     15" in out
    assert "Lost events:        3 (kernel side, per CPU buffer: cpu0=1 cpu1=0; user side, perf lost callback: 3)" in out
    assert "skipped: not in this kernel" in out
    seg = [l for l in lines if l.strip().startswith("skb_segment ")][0].split()
    assert seg[1:3] == ["15", "1"]
    assert "skipped hook pskb_carve: not in this kernel" in err
    assert "Tracing " in err and "Hit Ctrl-C to end." in err
    # the program text had the filter and only the present hooks
    text = fake.BPF.instances[-1].text
    assert "#define FILTER_GSO_ONLY 1" in text
    assert "HOOK_SEGMENT(KPROBE, skb_segment, %d," % ID["skb_segment"] in text
    assert "HOOK_MUTATE(KPROBE, pskb_carve" not in text
    kinds = set((k, sym) for k, sym, _fn in fake.BPF.instances[-1].attached)
    assert ("kretprobe", "pskb_expand_head") in kinds and ("kprobe", "udp4_gso_segment") in kinds
    assert ("kretprobe", "skb_segment") not in kinds
    # every stage program is loaded into the tail-call array
    inst = fake.BPF.instances[-1]
    assert inst.stages_loaded == ["stage_enter", "stage_mutate_return", "stage_copy_return",
                                  "stage_consume_enter", "stage_consume_return", "stage_segment"]
    assert sorted(inst.prog_array) == list(range(6))
    assert "#define STAGE_SEGMENT 5" in text and "#define NR_STAGES 6" in text


def test_json_mode_and_output_file(fake, tmp_path, capsys):
    fake.BPF.script = [[to_bytes(make_event(event=event.EV_CLEAR, hook_id=ID["skb_segment_list"],
                                            frag_list_before=0xffff000000000001))]]
    log = tmp_path / "w.log"
    assert main(["--json", "-o", str(log)]) == 0
    objs = [json.loads(l) for l in log.read_text().splitlines()]
    assert objs[0]["event"] == "CLEAR" and objs[0]["function"] == "skb_segment_list"
    assert objs[-1]["type"] == "statistics" and objs[-1]["events"]["CLEAR"] == 1
    assert capsys.readouterr().out == ""
    # every record names the node and the boot it comes from
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    assert [(o["host"], o["boot_id"]) for o in objs] == [(socket.gethostname(), boot_id)] * 2


def with_stack(ev, addrs):
    """A struct record_t as the kernel sends it: the event, then its stack."""
    if addrs:
        ev.stack_len = len(addrs)
    frames = list(addrs) + [0] * (event.STACK_FRAMES - len(addrs))
    return to_bytes(ev) + struct.pack("<%dQ" % event.STACK_FRAMES, *frames)


def test_stack_trace_each_event_shows_its_own_stack_or_says_why_not(fake, capsys):
    fake.BPF.script = [[
        with_stack(make_event(event=event.EV_CLEAR, hook_id=ID["pskb_expand_head"],
                              frag_list_before=1), [0xffffffff81000010, 0xffffffff81000020]),
        # bpf_get_stack failed (-EFAULT): the record says so, it does not
        # borrow the next event's stack
        with_stack(make_event(event=event.EV_INCONSISTENT, hook_id=ID["skb_segment"],
                              reasons=event.RSN_NULL_FRAGLIST_GSO, severity=1,
                              gso_size_after=1000, stack_len=-14), []),
        with_stack(make_event(event=event.EV_CLEAR, hook_id=ID["__pskb_pull_tail"],
                              frag_list_before=1), [0xffffffff81000030])]]
    assert main(["--stack-trace"]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(n for n, l in enumerate(lines) if " pskb_expand_head " in l)
    assert lines[i + 1:i + 3] == ["        fake_fn+0x10", "        fake_fn+0x20"]
    assert " skb_segment " in lines[i + 3] and lines[i + 4] == "        [no stack: EFAULT]"
    assert " __pskb_pull_tail " in lines[i + 5] and lines[i + 6] == "        fake_fn+0x30"
    assert any(l.startswith("Stacks:") and "1 events without a stack (EFAULT 1)" in l
               for l in lines)
    text = fake.BPF.instances[-1].text
    assert "#define STACK_TRACES 1" in text and "bpf_get_stack(" in text
    assert "BPF_STACK_TRACE(" not in text


def test_stack_trace_json_carries_stack_error(fake, capsys):
    fake.BPF.script = [[with_stack(make_event(event=event.EV_CLEAR, hook_id=ID["skb_segment_list"],
                                              frag_list_before=1, stack_len=-17), [])]]
    assert main(["--stack-trace", "--json"]) == 0
    objs = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert objs[0]["stack"] == [] and objs[0]["stack_error"] == "EEXIST"
    assert objs[-1]["events_without_stack"] == {"EEXIST": 1}


def test_short_stack_record_is_a_decode_error(fake, capsys):
    ev = make_event(event=event.EV_CLEAR, hook_id=ID["skb_segment_list"], frag_list_before=1,
                    stack_len=5)
    fake.BPF.script = [[to_bytes(ev)]]
    assert main(["--stack-trace"]) == 0
    out, err = capsys.readouterr()
    assert "event dropped: event says 5 stack frames" in err
    assert "Events dropped as undecodable: 1" in out


def test_flight_recorder_arms_names_and_restores(fake, capsys, tmp_path, monkeypatch):
    from skbtrace.live import flight_recorder
    sysctl, _tracefs = fake_flight_system(tmp_path, monkeypatch, tracing_on="1")
    seen = []
    real = flight_recorder.Recorder

    class Spy(real):
        def arm(self):
            lines = real.arm(self)
            seen.append(sysctl.read_text())
            return lines
    monkeypatch.setattr(flight_recorder, "Recorder", Spy)
    fake.BPF.percpu = {("counters", event.CNT_FR_WRITTEN): [1, 0],
                       ("counters", event.CNT_FR_SUPPRESSED): [0, 3]}
    fake.BPF.script = [[to_bytes(make_event(event=event.EV_INCONSISTENT, hook_id=ID["skb_segment"],
                                            severity=2, reasons=event.RSN_SEG_NO_PAYLOAD,
                                            gso_size_after=1348))]]
    assert main(["--flight-recorder"]) == 0
    out, err = capsys.readouterr()
    assert seen == ["1\n"] and sysctl.read_text() == "0\n"     # on while tracing, then back
    assert "kernel.ftrace_dump_on_oops 0 -> 1 (restored at exit)" in err
    assert "Flight recorder:    crash: 1 records written to the trace buffer, 3 suppressed" in out
    assert "kernel.ftrace_dump_on_oops restored to 0" in out
    inst = fake.BPF.instances[-1]
    assert inst.fr_names[ID["skb_segment"]] == b"skb_segment"
    assert inst.fr_names[event.FR_SEV_BASE + 2] == b"CRITICAL"
    assert "#define FLIGHT_RECORDER 1" in inst.text


def test_flight_recorder_refused_sysctl_is_one_line(fake, capsys, tmp_path, monkeypatch):
    fake_flight_system(tmp_path, monkeypatch, sysctl=False)
    assert main(["--flight-recorder=all"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--flight-recorder: this kernel has no " \
        "kernel.ftrace_dump_on_oops" in err


def test_lost_records_show_where_they_happened(fake, capsys):
    """A full perf buffer: a [LOST n] line between the events around the
    drop, with the kernel's per-CPU and per-hook counts, and the hook table's
    LOST column."""
    seg = ID["skb_segment"]
    fake.BPF.percpu = {("counters", event.CNT_SUBMIT_FAIL): [0, 5],
                       ("hook_lost", seg): [0, 5]}
    ev = to_bytes(make_event(event=event.EV_CREATE, hook_id=ID["skb_gro_receive_list"],
                             frag_list_after=0xffff000000000001))
    fake.BPF.script = [[ev, 5, ev]]
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(n for n, l in enumerate(lines) if "[LOST 5]" in l)
    assert " CREATE " in lines[i - 1] and " CREATE " in lines[i + 1]
    assert lines[i].endswith("[LOST 5] perf buffer full: 5 events dropped before this line "
                             "(cpu1=5); hooks: skb_segment=5")
    row = [l for l in lines if l.strip().startswith("skb_segment ")][0].split()
    assert row[3] == "5"          # HITS EVENTS LOST


def test_ring_buffer_losses_show_where_they_were_counted(fake, capsys, monkeypatch):
    """A ring buffer has no lost callback: the kernel's failed reservations,
    read between polls, become the [LOST n] line after the records read
    before it, and the statistics say which buffer it was."""
    from skbtrace.live import loader
    monkeypatch.setattr(loader, "ringbuf_support", lambda BPF, kernel_btf: (True, None))
    monkeypatch.setattr(loader.Program, "LOST_CHECK_S", 0)
    seg = ID["skb_segment"]
    ev = to_bytes(make_event(event=event.EV_CREATE, hook_id=ID["skb_gro_receive_list"],
                             frag_list_after=0xffff000000000001))

    def overflow():
        fake.BPF.percpu = {("counters", event.CNT_SUBMIT_FAIL): [4, 1],
                           ("hook_lost", seg): [4, 1]}
    fake.BPF.on_poll = {1: overflow}
    fake.BPF.script = [[ev], [], [ev]]
    assert main(["--buffer-pages", "8"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    i = next(n for n, l in enumerate(lines) if "[LOST 5]" in l)
    assert " CREATE " in lines[i - 1] and " CREATE " in lines[i + 1]
    assert lines[i].endswith("[LOST 5] ring buffer full: 5 events dropped before this line "
                             "(cpu0=4 cpu1=1); hooks: skb_segment=5")
    assert "Lost events:        5 (kernel side, ring buffer full, by emitting CPU: " \
        "cpu0=4 cpu1=1)" in out
    # 8 pages per CPU, as many CPUs as this machine has, to a power of two
    pages = loader.ring_pages(8)
    assert "event buffer: ring, %d pages shared by the CPUs (--buffer auto)" % pages in err
    assert "#define RINGBUF_PAGES %d" % pages in fake.BPF.instances[-1].text


def test_ring_buffer_asked_for_where_there_is_none(fake, capsys):
    assert main(["--buffer", "ring"]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1
    assert err.endswith("error: --buffer ring: fake kernel: no ring buffer\n")
    assert "skipped hook" not in err    # said before hooks are resolved or anything compiles


def test_perf_buffer_is_said_at_startup(fake, capsys):
    assert main(["--buffer", "perf"]) == 0
    out, err = capsys.readouterr()
    assert "event buffer: perf, 64 pages per CPU (--buffer perf)" in err
    assert "#define RINGBUF_PAGES 0" in fake.BPF.instances[-1].text
    assert "user side, perf lost callback: 0)" in out


def test_no_hook_present(fake, capsys):
    fake.BPF.available = []
    assert main([]) == 1
    assert "none of the hooks exists in this kernel" in capsys.readouterr().err


def run_piped(reader_cmd, npolls=50):
    return run_into([sys.executable, os.path.join(HERE, "fake_run.py"), "watcher", str(npolls),
                     "SIGTERM"], reader_cmd)


def test_head_ends_quietly():
    rc, out, err = run_piped(["head", "-3"])
    assert len(out.splitlines()) == 3
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    assert rc == 0


def test_grep_sees_lines_and_stats():
    rc, out, err = run_piped(["grep", "-E", "ACCESS|Total events"], npolls=3)
    assert rc == 0
    assert out.count(" ACCESS       skb_segment ") == 30 and "Total events:       30" in out
