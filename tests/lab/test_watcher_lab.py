"""skb_frag_list_watcher.py on a real kernel against real traffic.

Each tool start costs a BCC compile (~1-2 min under TCG), so every test
drives several traffic steps through one run and asserts on all of them."""
import json
import re

import pytest

from skbtrace.kernel import event, flightrec

pytestmark = pytest.mark.lab

T = "python3 tests/lab/guest/traffic.py"
# kprobes: the fentry build compiles ~1.5x longer under TCG (every hook inlines
# its work); test_backends_lab.py runs both backends and compares them
W = "python3 skb_frag_list_watcher.py --backend kprobe"


def events(out):
    return [l for l in out.splitlines() if re.match(r"^\d\d:\d\d:\d\d\.\d{6} ", l)]


def stats_block(out):
    return out[out.index("--- Statistics ---"):]


EVENT_RE = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} .*? (CREATE|CLEAR|MODIFY|PROPAGATE|COPY_FAIL|ACCESS|"
                      r"INCONSISTENT) +(\S+) +\|")


def stacks_by_event(lines):
    """[(event line, function, [stack lines])] from --stack-trace text output."""
    out = []
    for line in lines:
        m = EVENT_RE.match(line)
        if m:
            out.append((line, m.group(2), []))
        elif line.startswith("        ") and out:
            out[-1][2].append(line.strip())
    return out


def attached_symbols(out):
    """hook name -> the kernel symbol it attached to, from the statistics'
    STATUS column: `attached BACKEND SYMBOL`."""
    syms = {}
    for line in stats_block(out).splitlines():
        parts = line.split()
        if "attached" in parts[:6]:
            i = parts.index("attached")
            assert parts[i + 1] in ("kprobe", "fentry"), line
            syms[parts[0]] = parts[i + 2]
    return syms


def hook_row(out, name):
    for line in stats_block(out).splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return parts
    raise AssertionError("no statistics row for %s" % name)


@pytest.mark.matrix
def test_healthy_forwarding_create_clear_and_sigterm_stats(topo):
    # the way a user starts it: the default backend, fentry on every lab
    # kernel (the one matrix test that compiles it on each)
    r = topo.trace("python3 skb_frag_list_watcher.py", traffic=[
        "%s udp-gso --count 10" % T,                                  # fraglist GRO
        "%s tcp-bulk --seconds 2" % T,                                # TCP GSO/GRO
        "%s topo --gro-list off --udp-gro-fwd on && %s udp-gso --count 10" % (T, T),
    ], signal_name="TERM")
    assert r.rc == 0, r
    assert all(t["rc"] == 0 for t in r.traffic), r.traffic
    # forwarded and delivered; a loaded TCG host may still drop a few UDP
    # segments (the sink's buffer is 16 MiB, so not there)
    got = int(re.search(r"udp-sink received (\d+) bytes", r.traffic[0]["out"]).group(1))
    assert got >= 0.9 * 140000, r.traffic
    ev = events(r.out)
    creates = [l for l in ev if " CREATE " in l and "skb_gro_receive_list" in l]
    clears = [l for l in ev if " CLEAR " in l and "skb_segment_list" in l]
    assert creates and clears, r.out
    # CREATE then CLEAR of the same skb, and the CLEAR names the GRO that built it
    skb = clears[0].split("|")[1].strip()
    first_create = next(i for i, l in enumerate(ev) if " CREATE " in l and skb in l)
    assert first_create < ev.index(clears[0])
    assert "[!!]" in clears[0] and "last=skb_gro_receive_list(+" in clears[0]
    # healthy traffic: no CRITICAL and no WARNING but the seeds' state that the
    # kernel's own receive-path linearization leaves (bullseye's 5.10 condenses
    # GRO skbs: skb_condense -> __pskb_pull_tail, payload all in the head);
    # 6.1 and 6.12 print no INCONSISTENT line at all here
    inc = [l for l in ev if " INCONSISTENT " in l]
    odd = [l for l in inc if not (re.search(r" INCONSISTENT (__pskb_pull_tail|skb_condense) ", l)
                                  and "[WARNING] reasons=NULL_FRAGLIST_GSO " in l
                                  and " data_len=0 " in l)]
    assert not odd and "[CRITICAL]" not in r.out, odd or r.out
    st = stats_block(r.out)
    assert re.search(r"^  INCONSISTENT: +%d$" % len(inc), st, re.M), st
    # findings count every line with a severity (CLEARs too), not only INCONSISTENT
    warned = len([l for l in ev if "[WARNING]" in l])
    assert re.search(r"^  Findings: +CRITICAL 0, WARNING %d \(any event type\)$" % warned, st,
                     re.M), st
    assert re.search(r"CREATE events:\s+%d" % len([l for l in ev if " CREATE " in l]), st)
    assert "Lost events:        0" in st
    assert int(hook_row(r.out, "skb_gro_receive_list")[1]) > 0
    assert "Tracing " in r.err and "skipped hook" in r.err
    assert "backend fentry (--backend auto): " in r.err, r.err


# Lab kernels on which a scenario panics the guest: it cannot run there, and
# the reason is the finding (docs/lab.md has the console trace).
PULL_DATA_PANICS = {
    "5.10": "bullseye's 5.10.262 lacks upstream a1e40ac5b5e9: the pulled FRAGLIST skb goes to "
            "skb_segment_list and __udp_gso_segment dereferences the NULL second segment "
            "(kernel panic reproduced in the lab; the watcher's SEGLIST_NO_LIST rule names this "
            "state, but its line cannot leave the guest before the panic)",
}


@pytest.mark.matrix
def test_bpf_pull_data_then_skb_segment_names_the_mutator(lab):
    """The benign seeds' state: a tc program pulls fraglist GRO skbs into
    their head (frag_list CLEARed, payload in the head), the router segments
    them. The kernel survives; the watcher names the mutator, every event
    carries its own stack, and with both tools' flight recorders on (=all)
    the trace buffer holds WARNING records only, which read back as the live
    lines (the negative case of the panic tests: this state is not CRITICAL)."""
    if lab.kernel in PULL_DATA_PANICS:
        pytest.skip(PULL_DATA_PANICS[lab.kernel])
    lab.run("%s topo --gro-list on --router-egress-gso off && %s tc-attach --netns r --dev r-h1 "
            "--dir ingress --src tests/lab/progs/pull_data.c --fn pull_all && "
            "echo > /sys/kernel/tracing/trace" % (T, T), check=True)
    try:
        lab.start_tool(W + " --verbose --stack-trace --flight-recorder=all", name="w", wait=False)
        lab.start_tool("python3 skb_vxlan_source_detector.py --backend kprobe --no-static "
                       "--flight-recorder=all",
                       name="d", wait=False)
        lab.wait_tool("w")
        lab.wait_tool("d")
        sysctl_on = lab.run("cat /proc/sys/kernel/ftrace_dump_on_oops").out.strip()
        t = lab.run("%s udp-gso --count 10 --seconds 8" % T)
        r = lab.stop_tool(name="w", signal_name="INT")
        d = lab.stop_tool(name="d", signal_name="TERM")
        trace = lab.run("cat /sys/kernel/tracing/trace").out
        sysctl_after = lab.run("cat /proc/sys/kernel/ftrace_dump_on_oops").out.strip()
    finally:
        lab.run("%s cleanup" % T)
    assert r.rc == 0 and d.rc == 0, (r, d)
    # the kernel survived and delivered (stack walks slow the emulated guest down)
    assert re.search(r"udp-sink received [1-9]\d* bytes", t.out), t
    lines = r.out.splitlines()
    pull = [l for l in lines if " CLEAR " in l and "bpf_skb_pull_data" in l]
    assert pull and "[!!] [WARNING] reasons=NULL_FRAGLIST_GSO,FRAGLIST_NO_LIST" in pull[0]
    assert "type=0x60000(UDP_L4|FRAGLIST)" in pull[0]
    seg = [l for l in lines if " INCONSISTENT " in l and " skb_segment " in l]
    assert seg, r.out
    assert "[WARNING]" in seg[0] and "[CRITICAL]" not in r.out
    assert "last=bpf_skb_pull_data(+" in seg[0]
    # verbose: the flow line under the event
    i = lines.index(seg[0])
    assert lines[i + 1].startswith("  -> Flow: 198.18.1.1:") and "-> 198.18.2.1:9000 udp" in lines[i + 1]
    # stack trace: symbol names under the events
    stack = [l.strip() for l in lines[i + 2:i + 12] if l.startswith("        ")]
    assert stack and stack[0].startswith("skb_segment+0x"), lines[i:i + 12]
    assert any(s.startswith(("__udp_gso_segment", "udp4_ufo_fragment", "inet_gso_segment",
                             "skb_mac_gso_segment", "__skb_gso_segment")) for s in stack), stack
    # every event's stack starts at the hook that emitted it (the stack is
    # taken at the hook's entry, also for events sent at its return), or
    # the event says it has none; a shared stack map once left events bare
    # and a reader took the next event's stack for theirs
    syms = attached_symbols(r.out)
    blocks = stacks_by_event(lines)
    assert len(blocks) >= 30, r.out
    bare = [b for b in blocks if b[2] and b[2][0].startswith("[no stack: ")]
    for line, fn, stack in blocks:
        assert stack, line
        if not stack[0].startswith("[no stack: "):
            assert stack[0].startswith(syms[fn] + "+0x"), (line, stack[:3])
            assert not any(s.startswith("[no stack") for s in stack[1:]), stack
    assert re.search(r"^Stacks:\s+%d events without a stack" % len(bare), stats_block(r.out), re.M)
    assert not bare, bare[:3]
    n = len([l for l in lines if re.match(r"^\d.* INCONSISTENT ", l)])
    assert n >= 3 and re.search(r"^  INCONSISTENT: +%d$" % n, stats_block(r.out), re.M)
    assert re.search(r"^  Findings: +CRITICAL 0, WARNING [1-9]", stats_block(r.out), re.M)
    # the flight recorders: announced, on while tracing, restored by the last one out
    assert (sysctl_on, sysctl_after) == ("1", "0")
    for res in (r, d):
        assert "kernel.ftrace_dump_on_oops 0 -> 1 (restored at exit)" in res.err
        assert "[CRITICAL]" not in res.out
    recs = list(flightrec.parse(trace.splitlines()))
    assert recs and all(x.complete for x in recs), trace[-3000:]
    assert not [x for x in recs if x.severity == "CRITICAL"] and "CRITICAL" not in trace
    written = int(re.search(r"Flight recorder:\s+all: (\d+) records written", r.out).group(1))
    assert written == len([x for x in recs if x.tool == "skb_frag_list_watcher"]) > 0
    # a record reads back as the live line of the same skb and hook
    live = events(r.out)
    for x in [x for x in recs if x.tool == "skb_frag_list_watcher"][:4]:
        assert x.severity == "WARNING" and x.prefix == event.FR_PREFIX
        # the first line alone (`grep WARNING`) carries the hook and the skb
        assert [l for l in trace.splitlines() if "WARNING hook=%s skb=0x%x" % (
            x.field("hook"), x.int_field("skb")) in l], x.parts
        twin = [l for l in live if " %s " % x.field("event") in l and
                " %s " % x.field("hook") in l and "0x%016x" % x.int_field("skb") in l]
        assert twin, (x.parts, live[:10])
        assert "reasons=%s " % ",".join(event.reason_names(x.int_field("reasons"))) in twin[0]


def _json_events(out):
    objs = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return [o for o in objs if o["type"] == "event"], [o for o in objs if o["type"] == "statistics"]


BOTH_WAYS = ["%s udp-gso --count 5" % T,
             "%s udp-gso --count 5 --src-ns h2 --dst-ns h1 --dst 198.18.1.1" % T]


def test_interface_filter_in_a_namespace(topo):
    # --interface resolves in the tool's own network namespace
    r = topo.trace("ip netns exec r " + W + " --json --interface r-h2", traffic=BOTH_WAYS)
    assert r.rc == 0, r
    assert "note: mounted tracefs" in r.err      # ip netns exec remounts /sys
    evs, st = _json_events(r.out)
    idx = int(topo.run("ip netns exec r cat /sys/class/net/r-h2/ifindex").out)
    assert evs, r.out
    assert all(e["ifindex"] == idx or e["iif"] == idx for e in evs)
    # only the h2 -> h1 direction enters the router on r-h2
    assert any(e["flow"].startswith("198.18.2.1:") for e in evs)
    assert st[0]["filtered_out"] > 0
    bad = topo.run("python3 skb_frag_list_watcher.py --interface r-h2")   # not in this netns
    assert bad.rc == 2 and bad.err.count("\n") == 1 and "no interface named 'r-h2'" in bad.err


def test_filters_keep_exactly_the_matching_events(topo):
    """The cheap path (prefilter) and the full filter agree with the filter's
    meaning: four watchers on the same traffic, one unfiltered; each filtered
    run's events are exactly the unfiltered run's events that match its filter
    (an address in the outer or inner header; gso_size at the hook's entry).
    The cheap path reads the skb with bpf_probe_read() under kprobes and
    through the fentry hook's typed argument under fentry: both are here."""
    run = W + " --json --buffer-pages 256"
    runs = {"all": "", "src": " --backend fentry --src-ip 198.18.2.1",
            "dst": " --gso-only --dst-ip 198.18.1.1",
            "dst-fentry": " --backend fentry --gso-only --dst-ip 198.18.1.1"}
    for name, flags in runs.items():
        topo.start_tool(run + flags + " -o /tmp/%s.json" % name, name=name, wait=False)
    for name in runs:
        topo.wait_tool(name)
    t = [topo.run(cmd) for cmd in BOTH_WAYS]
    out = {}
    for name in runs:
        topo.stop_tool(name=name)
        out[name] = _json_events(topo.run("cat /tmp/%s.json" % name, check=True).out)
    assert all(x.rc == 0 for x in t), t
    for name, (_evs, st) in out.items():
        assert st[0]["lost_total"] == 0, (name, st)

    def key(e):
        return (e["event"], e["function"], e["skb"], e["len"], e["gso_size_after"])

    def has(e, addr, side):
        """addr is the flow's source or destination, outer or inner
        ('198.18.1.1:5000 -> 198.18.2.1:9000 udp', '198.18.1.1 -> ... icmp')."""
        for f in (e["flow"], e["inner_flow"]):
            if f:
                end = f.split(" -> ")[0 if side == "src" else 1].split()[0]
                if re.sub(r":\d+$", "", end) == addr:
                    return True
        return False
    want = {"src": lambda e: has(e, "198.18.2.1", "src"),
            "dst": lambda e: e["gso_size_before"] > 0 and has(e, "198.18.1.1", "dst")}
    want["dst-fentry"] = want["dst"]
    every = out["all"][0]
    for name, keep in want.items():
        expected = sorted(key(e) for e in every if keep(e))
        assert expected, (name, every[:5])
        assert sorted(key(e) for e in out[name][0]) == expected, name
        assert out[name][1][0]["filtered_out"] > 0
