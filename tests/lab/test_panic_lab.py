"""Real panics, and what the flight recorder leaves on the serial console.

Each test boots a guest of its own, runs both tools with --flight-recorder,
makes the kernel panic, and reads the console of the dead guest (Lab keeps it
under LAB_CONSOLE_DIR). A guest that panics here is the result, not a lab
failure. These tests cost a boot each: marker `panic`, run by
`make test-lab-panic` (docs/lab.md has what each costs and what CI runs).

- natural: a lab kernel that still panics on its own (bullseye's 5.10, the
  bpf_skb_pull_data scenario, a1e40ac5b5e9 missing);
- injected: the seeds' own site. tests/lab/kmod/skb_fault_inject.c (built
  in the guest, test-only) breaks one forwarded TCP GSO skb into the state the
  crash rule names just before it is segmented; skb_segment() then
  dereferences the NULL frag_list. `encap`: a tc program first encapsulates
  the skb with bpf_skb_adjust_room(ENCAP_L4_UDP), as Calico's eBPF dataplane
  does, which gives the seeds' gso_type 0x403 (TCPV4|DODGY|UDP_TUNNEL).
"""
import os
import re
import time

import pytest

import kdump
import vmcore_story
from skbtrace.kernel import event, flightrec
from test_watcher_lab import PULL_DATA_PANICS

pytestmark = [pytest.mark.lab, pytest.mark.panic]

T = "python3 tests/lab/guest/traffic.py"
# kprobes: see W in test_watcher_lab.py
W = "python3 skb_frag_list_watcher.py --backend kprobe --flight-recorder -o /tmp/watcher.log"
D = "python3 skb_vxlan_source_detector.py --backend kprobe --no-static --flight-recorder " \
    "-o /tmp/detector.log"
KERNEL = os.environ.get("LAB_KERNEL", "6.1")


@pytest.fixture
def dumps(request):
    """How the guest leaves its memory (vmcore_story.Dumps: kdump, QMP or not
    at all), removed after the test unless LAB_VMCORE keeps it."""
    variant = request.node.callspec.params.get("variant") \
        if hasattr(request.node, "callspec") else None
    try:
        d = vmcore_story.Dumps(KERNEL, variant)
    except kdump.KdumpError as e:
        pytest.fail("kdump for LAB_KERNEL=%s cannot be set up: %s" % (KERNEL, e), pytrace=False)
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def guest(request, dumps):
    """A guest of the test's own: it is not expected to survive."""
    lab = dumps.lab(request.node.name)
    try:
        lab.__enter__()
        dumps.arm(lab)
    except Exception as e:
        lab.__exit__(None, None, None)
        pytest.fail("lab guest (LAB_KERNEL=%s) could not boot (or load its capture kernel): "
                    "%s\nconsole tail:\n%s"
                    % (lab.kernel, e, lab.console_tail()), pytrace=False)
    try:
        yield lab
    finally:
        lab.__exit__(None, None, None)


def console_blocks(text):
    """(oops lines, first ftrace dump's lines) of a console capture."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if "Dumping ftrace buffer:" in l), None)
    assert start is not None, "no ftrace dump on the console:\n" + text[-4000:]
    end = next(i for i in range(start + 2, len(lines)) if lines[i].rstrip().endswith("-" * 33))
    return lines[:start], lines[start:end + 1]


def records(lines, tool):
    return [r for r in flightrec.parse(lines) if r.tool == tool]


def grep_critical(text, tool):
    """What `grep CRITICAL console.log` shows of one tool: its records' first
    lines, each with the hook and the full skb address."""
    return [l for l in text.splitlines() if "CRITICAL" in l and " %s " % tool in l]


def assert_rip(lines, fn):
    rip = [l for l in lines if "RIP: 0010:" in l]
    assert rip and re.search(r"RIP: 0010:%s\+0x" % fn, rip[0]), rip


@pytest.mark.skipif(KERNEL not in PULL_DATA_PANICS,
                    reason="LAB_KERNEL=%s survives the bpf_skb_pull_data scenario (upstream "
                           "a1e40ac5b5e9 is in it): the injected tests carry the proof here"
                           % KERNEL)
def test_natural_panic_leaves_the_seglist_record(guest, dumps):
    """A kernel in reach that panics by itself: the watcher's record of the
    skb that crashed is on the console, written before the oops."""
    guest.run("%s topo --gro-list on --router-egress-gso off && %s tc-attach --netns r "
              "--dev r-h1 --dir ingress --src tests/lab/progs/pull_data.c --fn pull_all"
              % (T, T), check=True)
    guest.start_tool(W, name="w")
    guest.run("sysctl -qw kernel.panic_on_oops=1", check=True)
    died, res = guest.run_until_death("%s udp-gso --count 3" % T, timeout=300)
    if not died:
        pytest.skip("the lab's %s kernel (%s) no longer panics in the bpf_skb_pull_data "
                    "scenario (traffic ended: %r): PULL_DATA_PANICS and docs/lab.md are out "
                    "of date; the injected tests carry the proof"
                    % (guest.kernel, guest.meta["release"], res))
    dumps.collect(guest, guest.console_text())
    before, dump = console_blocks(guest.console_text())
    assert_rip(before, "__udp_gso_segment")
    recs = [r for r in records(dump, "skb_frag_list_watcher") if r.severity == "CRITICAL"]
    assert recs, dump
    r = recs[0]
    assert r.complete and r.field("hook") == "skb_segment_list"
    assert r.int_field("reasons") & event.RSN_SEGLIST_NO_LIST
    assert r.history_key == "last" and r.history == "bpf_skb_pull_data"
    assert r.int_field("frag_list") == 0 and r.int_field("gso_type") & 0x40000   # FRAGLIST
    assert r.prefix == event.FR_PREFIX
    assert [l for l in grep_critical(guest.console_text(), "skb_frag_list_watcher")
            if "hook=skb_segment_list skb=0x%x" % r.int_field("skb") in l], dump


@pytest.mark.parametrize("variant", ["plain", "encap"])
def test_injected_crash_is_recorded_by_both_tools(guest, dumps, variant):
    """CRITICAL means "this skb panics": the watcher's CRITICAL record names
    exactly the skb the injector broke, and skb_segment is where the kernel
    died; with the encapsulation, the detector's record names
    bpf_skb_adjust_room as the origin of UDP_TUNNEL."""
    build = guest.run("tests/lab/kmod/build.sh /tmp/kmod", timeout=900)
    assert build.rc == 0 and build.out.strip().endswith(".ko"), build
    guest.run("%s topo --gro-list off --router-egress-tso off" % T, check=True)
    if variant == "encap":
        guest.run("%s tc-attach --netns r --dev r-h2 --dir egress "
                  "--src tests/lab/progs/udp_encap.c --fn udp_encap" % T, check=True)
    guest.start_tool(W, name="w", wait=False)
    guest.start_tool(D, name="d", wait=False)
    guest.wait_tool("w")
    guest.wait_tool("d")
    guest.run("sysctl -qw kernel.panic_on_oops=1 && insmod /tmp/kmod/skb_fault_inject.ko "
              "ifname=r-h2", check=True)
    t0 = time.time()
    died, res = guest.run_until_death("%s tcp-bulk --seconds 3" % T, timeout=300)
    assert died, ("the guest survived the injected state", res, guest.console_tail())
    guest.log("traffic to QEMU's end: %.1f s" % (time.time() - t0))
    text = guest.console_text()
    # kdump: the capture kernel took over from the oops and wrote its files
    dumps.collect(guest, text)
    broke = re.search(r"skb_fault_inject: breaking skb ([0-9a-f]{16}) on r-h2: .* "
                      r"gso_type=0x([0-9a-f]+) encapsulation=(\d)", text)
    assert broke, text[-4000:]
    skb = int(broke.group(1), 16)
    before, dump = console_blocks(text)
    # the oops: skb_segment read list_skb->len (NULL + 0x70), as in the seeds
    assert_rip(before, "skb_segment")
    assert re.search(r"BUG: kernel NULL pointer dereference, address: 0+70\b", "\n".join(before))
    calls = "\n".join(before[next(i for i, l in enumerate(before) if "Call Trace:" in l):])
    assert "tcp_gso_segment" in calls and "validate_xmit_skb" in calls or \
        "__skb_gso_segment" in calls, calls
    # the records sit in the dump the oops printed: written before it died
    assert text.index(broke.group(0)) < text.index("\n".join(dump[:1]))
    w = [r for r in records(dump, "skb_frag_list_watcher") if r.int_field("skb") == skb]
    d = [r for r in records(dump, "skb_vxlan_source_detector") if r.int_field("skb") == skb]
    assert w and d, dump
    for r in (w[0], d[0]):
        assert r.complete and r.severity == "CRITICAL", r.parts
        assert r.field("hook") == "skb_segment"
        assert r.int_field("reasons") & (event.RSN_SEG_UNCOVERED | event.RSN_SEG_NO_PAYLOAD)
        assert r.int_field("frag_list") == 0 and r.int_field("nr_frags") == 0
        assert r.int_field("data_len") > 0 and r.int_field("gso_size") > 0
        assert r.int_field("gso_type") == int(broke.group(2), 16)
    assert "CRITICAL" in "\n".join(l for l in dump if "skb_frag_list_watcher" in l)
    # `grep CRITICAL` on the console alone names the injected skb, for both tools
    for tool, r in (("skb_frag_list_watcher", w[0]), ("skb_vxlan_source_detector", d[0])):
        assert r.prefix == event.FR_PREFIX
        assert [l for l in grep_critical(text, tool)
                if "hook=skb_segment skb=0x%x" % skb in l], (tool, grep_critical(text, tool))
    if variant == "encap":
        assert int(broke.group(2), 16) == 0x403 and broke.group(3) == "1"
        assert "skb_udp_tunnel_segment" in calls, calls
        assert d[0].history_key == "origin" and d[0].history == "bpf_skb_adjust_room"
        assert w[0].int_field("flags") & event.F_IN_TNL_SEG
    else:
        assert int(broke.group(2), 16) & 0x1 and not int(broke.group(2), 16) & 0x400
        assert d[0].history is None
    # the package turns the records back into the tools' own lines
    from skbtrace.output import formatter
    from skbtrace.kernel import gso, hooks
    hw = dict((h.name, h) for h in hooks.watcher_hooks())
    line = formatter.Formatter(flightrec.UptimeClock(), gso.DEFAULT).lines(
        flightrec.to_record(w[0], hw))[0]
    assert " INCONSISTENT skb_segment " in line and "[CRITICAL]" in line
    assert "| 0x%016x |" % skb in line
    # the same story from the guest's memory (VMCORE_KERNELS, or LAB_VMCORE)
    if guest.vmcore:
        vmcore_story.check(guest, skb, w[0].int_field("gso_size"), int(broke.group(2), 16),
                           variant, dmesg=dumps.files.get("vmcore-dmesg.txt"))
