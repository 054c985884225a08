"""The two attach backends on one kernel, at the same time, on the same
traffic: each tool once with --backend kprobe and once with --backend fentry
(BPF trampolines), all four running together, must report the same events
with the same findings. Both see every call of the same kernel functions, so
any difference is the backend's doing (a missed hit, a wrong argument or
return slot, a scratch overwritten by a nested hook). The kprobe runs use
perf buffers, the fentry runs the default buffer, a BPF ring buffer on these
kernels: the comparison covers the two buffers too."""
import collections
import json
import os
import re

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.matrix]

T = "python3 tests/lab/guest/traffic.py"
TOOLS = {
    "w-kprobe": "python3 skb_frag_list_watcher.py --backend kprobe --stack-trace --buffer perf",
    "w-fentry": "python3 skb_frag_list_watcher.py --backend fentry --stack-trace",
    "d-kprobe": "python3 skb_vxlan_source_detector.py --no-static --backend kprobe --buffer perf",
    "d-fentry": "python3 skb_vxlan_source_detector.py --no-static --backend fentry",
}


def _records(out):
    objs = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return [o for o in objs if o["type"] == "event"], [o for o in objs if o["type"] == "statistics"]


def _key(e):
    """What a finding is made of; not what depends on the tool's own state
    (last=, origin, timestamps)."""
    return (e["event"], e["function"], e["skb"], e["len"], e["gso_type_before"],
            e["gso_type_after"], e["gso_size_after"], e["frag_list_before"],
            e["frag_list_after"], e["data_len_after"], e["nr_frags_after"],
            e["severity"], tuple(e["reasons"]), e["ret"])


# The comparison runs where CI can afford it: 6.1 and 6.12 (four compiles
# at once, ~4 minutes under TCG). LAB_BACKENDS_ALL=1 runs it on the other
# lab kernels too (bullseye's 5.10 with bcc 0.18).
BACKEND_KERNELS = ("6.1", "6.12")


def test_kprobe_and_fentry_report_the_same_findings(lab):
    if lab.kernel not in BACKEND_KERNELS and os.environ.get("LAB_BACKENDS_ALL") != "1":
        pytest.skip("backend comparison runs on %s in CI (LAB_BACKENDS_ALL=1 runs it on %s)"
                    % (" and ".join(BACKEND_KERNELS), lab.kernel))
    # UDP GSO is fraglist-GROed and segmented by the router (the watcher's
    # CREATE and CLEAR); then GSO TCP from h1 leaves through a tc program that
    # encapsulates it in UDP with bpf_skb_adjust_room (the detector's
    # BPF_HELPER finding, the crash's gso_type 0x403). In that order: the
    # sender's TSO, which the tc program needs to see GSO TCP, would carry
    # the UDP GSO to the router whole, with nothing to GRO.
    lab.run("%s topo --gro-list on" % T, check=True)
    try:
        for name, cmd in TOOLS.items():
            lab.start_tool("%s --json --buffer-pages 256 -o /tmp/%s.json" % (cmd, name),
                           name=name, wait=False)
        for name in TOOLS:
            lab.wait_tool(name)
        t = [lab.run("%s udp-gso --count 10" % T),
             lab.run("ip netns exec h1 ethtool -K eth0 tso on && %s tc-attach --netns h1 "
                     "--dev eth0 --dir egress --src tests/lab/progs/udp_encap.c "
                     "--fn udp_encap" % T),
             lab.run("%s tcp-bulk --seconds 2" % T)]
        res, out = {}, {}
        for name in TOOLS:
            res[name] = lab.stop_tool(name=name)
            out[name] = _records(lab.run("cat /tmp/%s.json" % name, check=True).out)
    finally:
        lab.run("%s cleanup" % T)
    assert all(x.rc == 0 for x in t), t
    for name, r in res.items():
        assert r.rc == 0, (name, r)
        evs, st = out[name]
        assert len(st) == 1 and st[0]["lost_total"] == 0, (name, st)
        assert st[0]["nested_too_deep"] == 0, (name, st)
        backend = name.split("-")[1]
        assert "backend %s (--backend %s): " % (backend, backend) in r.err, r.err
        buf = "perf" if backend == "kprobe" else "ring"
        assert st[0]["buffer"] == buf, (name, st[0]["buffer"], r.err)
        assert "event buffer: %s, " % buf in r.err, r.err
        hooks = dict((h["name"], h) for h in st[0]["hooks"] if h["symbol"])
        if backend == "kprobe":
            assert set(h["backend"] for h in hooks.values()) == {"kprobe"}, hooks
        else:
            # vmlinux functions in BTF take trampolines; module functions
            # (virtio_net's receive_buf) keep kprobes and say why
            assert hooks["skb_segment"]["backend"] == "fentry", hooks
            for h in hooks.values():
                assert h["backend"] == "fentry" or h["backend_why"], h

    for tool in ("w", "d"):
        kp, fe = out[tool + "-kprobe"][0], out[tool + "-fentry"][0]
        assert kp and fe, (tool, res[tool + "-kprobe"].err, out[tool + "-kprobe"][1],
                           res[tool + "-fentry"].err, out[tool + "-fentry"][1], t)
        a = collections.Counter(_key(e) for e in kp)
        b = collections.Counter(_key(e) for e in fe)
        assert a == b, (tool, sorted((a - b).items())[:5], sorted((b - a).items())[:5])

    w = out["w-fentry"][0]
    assert [e for e in w if e["event"] == "CREATE" and e["function"] == "skb_gro_receive_list"]
    assert [e for e in w if e["event"] == "CLEAR" and e["function"] == "skb_segment_list"]
    d = out["d-fentry"][0]
    enc = [e for e in d if e["function"] == "bpf_skb_adjust_room" and e["gso_type_after"] == 0x403]
    assert enc, d[:5]

    # both backends' stacks start at the hooked function (fentry: the program
    # and its trampoline are skipped)
    for name in ("w-kprobe", "w-fentry"):
        syms = dict((h["name"], h["symbol"]) for h in out[name][1][0]["hooks"] if h["symbol"])
        for e in out[name][0]:
            assert e["stack"], (name, e)
            assert re.match(r"%s\+0x[0-9a-f]+$" % re.escape(syms[e["function"]]),
                            e["stack"][0]), (name, e["function"], e["stack"][:3])
