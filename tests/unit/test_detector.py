"""Detector formatting, virtio header decoding, origin and verdict table."""
import json
import re

from skbtrace.kernel import decoder, event, gso, hooks
from skbtrace import detector
from skbtrace.kernel import udp_tunnel
from skbtrace.output import detector_formatter
from skbtrace.live.stats import Stats

from helpers import FixedClock, ip4, make_event, to_bytes

HOOKS = hooks.detector_hooks()
ID = dict((h.name, h.hook_id) for h in HOOKS)
T = 0x400


def rec(**kw):
    return decoder.Decoder(HOOKS).decode(to_bytes(make_event(**kw)))


def fmt(**kw):
    return detector_formatter.DetectorFormatter(FixedClock(), gso.DEFAULT, tool="skb_vxlan_source_detector",
                                      **kw)


def test_hook_table():
    names = [h.name for h in HOOKS]
    for n in ("receive_buf", "udp4_gro_complete", "udp6_gro_complete", "udp_gro_complete",
              "inet_gro_complete", "iptunnel_handle_offloads", "udp_tunnel_xmit_skb",
              "bpf_skb_adjust_room", "bpf_skb_net_grow", "bpf_skb_net_shrink",
              "bpf_skb_change_proto", "skb_udp_tunnel_segment", "__skb_gso_segment",
              "skb_segment"):
        assert n in names
    lines = dict((h.name, h.c_line()) for h in HOOKS)
    args = ("(KPROBE, bpf_skb_adjust_room, %d, PT_REGS_PARM1(ctx), PT_REGS_PARM4(ctx), "
            "PT_REGS_PARM3(ctx), %d, PT_REGS_RC(ctx))" % (ID["bpf_skb_adjust_room"],
                                                         event.EV_BPF_HELPER))
    assert lines["bpf_skb_adjust_room"] == "HOOK_GSO_CHANGE%s\nHOOK_GSO_CHANGE_RET%s" % (args, args)
    assert lines["udp_tunnel_xmit_skb"].startswith(
        "HOOK_OBSERVE(KPROBE, udp_tunnel_xmit_skb, %d, PT_REGS_PARM3(ctx)" % ID["udp_tunnel_xmit_skb"])
    assert [h.module for h in HOOKS if h.name == "receive_buf"] == ["virtio_net"]


def test_virtio_rx_line_decodes_header():
    r = rec(event=event.EV_VIRTIO_RX, hook_id=ID["receive_buf"], gso_type_after=0x3,
            gso_size_after=1448, flags=event.F_VNET_VALID, vnet_gso_type=1, vnet_gso_size=1448,
            vnet_hdr_len=66, vnet_csum_start=34, vnet_csum_offset=16, vnet_flags=1,
            last_hook=0, ts_ns=5000)
    s = fmt().lines(r)[0]
    assert " VIRTIO_RX    receive_buf " in s
    assert "| 0x0(NONE) -> 0x3(TCPV4|DODGY) |" in s
    assert ("virtio_gso=TCPV4(0x1) virtio_gso_size=1448 hdr_len=66 csum_start=34 "
            "csum_offset=16 flags=NEEDS_CSUM") in s
    assert "[UDP_TUNNEL ADDED]" not in s
    assert udp_tunnel.vnet_gso_text(0x81) == "TCPV4|ECN"
    assert udp_tunnel.vnet_gso_text(5) == "UDP_L4"


def test_adjust_room_origin_here_and_later_origin():
    r = rec(event=event.EV_BPF_HELPER, hook_id=ID["bpf_skb_adjust_room"], gso_type_before=1,
            gso_type_after=0x403, aux=(1 << 0) | (1 << 1) | (1 << 4), aux2=1, ret=0,
            last_hook=ID["bpf_skb_adjust_room"] + 1, ts_ns=7000, last_ts_ns=7000,
            flags=event.F_ENCAP)
    s = fmt().lines(r)[0]
    assert "| 0x1(TCPV4) -> 0x403(TCPV4|DODGY|UDP_TUNNEL) |" in s
    assert "mode=MAC flags=FIXED_GSO|ENCAP_L3_IPV4|ENCAP_L4_UDP ret=0" in s
    assert "[UDP_TUNNEL ADDED]" in s and "origin=here" in s
    later = rec(event=event.EV_GSO_SET, hook_id=ID["skb_udp_tunnel_segment"],
                gso_type_before=0x403, gso_type_after=0x403,
                last_hook=ID["bpf_skb_adjust_room"] + 1, last_ts_ns=7000, ts_ns=27000)
    s2 = fmt().lines(later)[0]
    assert "origin=bpf_skb_adjust_room(+20us)" in s2 and "[UDP_TUNNEL ADDED]" not in s2


def test_mismatch_marker_and_json():
    r = rec(event=event.EV_GSO_SET, hook_id=ID["skb_segment"], gso_type_before=0x403,
            gso_type_after=0x403, severity=event.SEV_WARNING,
            reasons=event.RSN_TUNNEL_NO_ENCAP | event.RSN_TUNNEL_INNER_EQ_OUTER,
            last_hook=ID["skb_segment"] + 1, last_ts_ns=9, ts_ns=9,
            flags=event.F_ORIGIN_ON_ENTRY, family=4, l4proto=4, saddr=ip4("198.18.1.1"),
            daddr=ip4("198.18.2.1"))
    s = fmt().lines(r)[0]
    assert "[WARNING] reasons=TUNNEL_NO_ENCAP,TUNNEL_INNER_EQ_OUTER" in s
    assert "origin=here (already set on entry)" in s
    d = json.loads(fmt(json_mode=True).lines(r)[0])
    assert d["origin"] == {"function": "skb_segment", "age_us": 0.0, "here": True,
                           "on_entry": True, "other_head": False}
    assert d["tunnel_added"] is False and "last" not in d
    assert d["flow"] == "198.18.1.1 -> 198.18.2.1 ipip"


def test_verdict_patterns():
    v = udp_tunnel.Verdict()
    # B: udp_gro_complete sets it, the outer udp4_gro_complete return is not a new origin
    v.add(rec(event=event.EV_GRO_COMPLETE, hook_id=ID["udp_gro_complete"], gso_type_after=T,
              last_hook=ID["udp_gro_complete"] + 1, ts_ns=10, last_ts_ns=10))
    v.add(rec(event=event.EV_GRO_COMPLETE, hook_id=ID["udp4_gro_complete"], gso_type_after=T,
              last_hook=ID["udp_gro_complete"] + 1, ts_ns=11, last_ts_ns=10))
    # D twice, E once, C once
    for ts in (20, 30):
        v.add(rec(event=event.EV_BPF_HELPER, hook_id=ID["bpf_skb_adjust_room"],
                  gso_type_after=T | 3, last_hook=ID["bpf_skb_adjust_room"] + 1, ts_ns=ts,
                  last_ts_ns=ts))
    v.add(rec(event=event.EV_TUNNEL_XMIT, hook_id=ID["iptunnel_handle_offloads"],
              gso_type_after=T, last_hook=ID["iptunnel_handle_offloads"] + 1, ts_ns=40,
              last_ts_ns=40))
    v.add(rec(event=event.EV_GSO_SET, hook_id=ID["skb_segment"], gso_type_before=T,
              gso_type_after=T, last_hook=ID["skb_segment"] + 1, ts_ns=50, last_ts_ns=50,
              flags=event.F_ORIGIN_ON_ENTRY, reasons=event.RSN_TUNNEL_NO_ENCAP))
    rows = v.rows()
    assert rows[0][0] == "D" and rows[0][2] == "bpf_skb_adjust_room" and rows[0][3] == 2
    assert set((p, fn, n) for p, _c, fn, n in rows) == {
        ("D", "bpf_skb_adjust_room", 2), ("B", "udp_gro_complete", 1),
        ("E", "iptunnel_handle_offloads", 1), ("C", "skb_segment", 1)}
    text = "\n".join(v.render())
    assert "--- Verdict: who set UDP_TUNNEL ---" in text
    assert "D: bpf_skb_adjust_room(..., BPF_F_ADJ_ROOM_ENCAP_L4_UDP)" in text
    assert "Tunnel metadata mismatches (encapsulation 0, inner==outer, outer not UDP): 1" in text
    assert v.to_dict()["setters"][0] == {"pattern": "D", "class": "a BPF program encapsulated",
                                         "function": "bpf_skb_adjust_room", "skbs": 2}


def test_empty_verdict():
    assert "No skb gained SKB_GSO_UDP_TUNNEL(_CSUM) while tracing." in udp_tunnel.Verdict().render()


def test_stats_carry_verdict():
    st = Stats(HOOKS, detector.DETECTOR_EVENTS)
    st.extra_lines = ["--- Verdict: who set UDP_TUNNEL ---"]
    st.extra_dict = {"verdict": {"setters": []}}
    out = st.render({}, 0, {})
    assert out[-1] == "--- Verdict: who set UDP_TUNNEL ---"
    assert st.to_dict({}, 0, {})["verdict"] == {"setters": []}


def test_detector_cli_errors(capsys):
    import pytest
    with pytest.raises(SystemExit) as e:
        detector.parse_args(["--no-static", "--static-only"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not allowed with argument" in err
    assert detector.main(["--src-ip", "300.1.1.1"]) == 2


SKB = 0xffff888abc123000
CSUM = 0x800        # SKB_GSO_UDP_TUNNEL_CSUM


def gro_tunnel_returns(t0):
    """The GRO_COMPLETE events of one vxlan GRO packet (UDP checksums on), as
    report() in bpf/skb_vxlan_source_detector.c sends them. The kernel calls
    inet_gro_complete -> udp4_gro_complete -> udp_gro_complete, which sets
    UDP_TUNNEL_CSUM and then calls the inner inet_gro_complete (which adds
    TCPV4); the kretprobes fire innermost first:
      inner inet_gro_complete: the bit was there at entry and another traced
        call is still running, so no origin is recorded ("leave it to the
        outer call");
      udp_gro_complete: 0 -> bit, no origin yet: it becomes the origin, stamped
        with this return's time;
      udp4_gro_complete, outer inet_gro_complete: 0 -> bit, but the origin was
        recorded after their entry (o->ts_ns >= since), so it is kept."""
    g = dict(event=event.EV_GRO_COMPLETE, skb=SKB, flags=event.F_ENCAP, gso_size_after=1398)
    udp = ID["udp_gro_complete"]
    return [
        make_event(hook_id=ID["inet_gro_complete"], gso_type_before=CSUM,
                   gso_type_after=CSUM | 1, ts_ns=t0, **g),
        make_event(hook_id=udp, gso_type_before=0, gso_type_after=CSUM | 1,
                   last_hook=udp + 1, last_ts_ns=t0 + 300000, ts_ns=t0 + 300000, **g),
        make_event(hook_id=ID["udp4_gro_complete"], gso_type_before=0, gso_type_after=CSUM | 1,
                   last_hook=udp + 1, last_ts_ns=t0 + 300000, ts_ns=t0 + 442000, **g),
        make_event(hook_id=ID["inet_gro_complete"], gso_type_before=0, gso_type_after=CSUM | 1,
                   last_hook=udp + 1, last_ts_ns=t0 + 300000, ts_ns=t0 + 494000, **g),
    ]


def run_detector(fake, args, script):
    from skbtrace.detector import main
    fake.BPF.available = [h.name for h in HOOKS]
    fake.BPF.script = [[to_bytes(e) for e in poll] for poll in script]
    return main(["--no-static"] + args)


def test_nested_gro_marks_only_the_setter(fake, capsys):
    assert run_detector(fake, ["--gso-changes-only"], [gro_tunnel_returns(10 ** 9)]) == 0
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if re.match(r"^\d\d:.* GRO_COMPLETE ", l)]
    assert [l.split()[3] for l in lines] == ["inet_gro_complete", "udp_gro_complete",
                                             "udp4_gro_complete", "inet_gro_complete"]
    assert [l for l in lines if "[UDP_TUNNEL ADDED]" in l] == [lines[1]]
    assert "[UDP_TUNNEL ADDED] origin=here" in lines[1]
    assert "| 0x800(UDP_TUNNEL_CSUM) -> 0x801(TCPV4|UDP_TUNNEL_CSUM) |" in lines[0]
    assert lines[0].endswith("(nested: already set by an enclosing call)")
    for l in lines[2:]:
        assert "| 0x0(NONE) -> 0x801(TCPV4|UDP_TUNNEL_CSUM) |" in l
        assert "(nested: set by udp_gro_complete) origin=udp_gro_complete(+" in l
    assert "(+142us)" in lines[2] and "(+194us)" in lines[3]
    # the verdict counts the packet once, for its setter
    verdict = out[out.index("--- Verdict: who set UDP_TUNNEL ---"):]
    assert re.search(r"\nB +GRO completion for a local UDP tunnel socket +udp_gro_complete +1\n",
                     verdict), verdict


def test_nested_gro_json(fake, capsys):
    assert run_detector(fake, ["--json"], [gro_tunnel_returns(10 ** 9)]) == 0
    objs = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    ev = [o for o in objs if o["type"] == "event"]
    assert [(o["function"], o["tunnel_change"], o["tunnel_added"]) for o in ev] == [
        ("inet_gro_complete", "set_by_enclosing", False),
        ("udp_gro_complete", "added", True),
        ("udp4_gro_complete", "added_nested", False),
        ("inet_gro_complete", "added_nested", False)]
    assert [o["origin"]["function"] for o in ev[1:]] == ["udp_gro_complete"] * 3
    assert ev[0]["origin"] is None
    assert objs[-1]["verdict"]["setters"] == [{"pattern": "B", "class": udp_tunnel.PATTERNS["B"][1],
                                               "function": "udp_gro_complete", "skbs": 1}]


def test_tunnel_change_cases():
    """A setter that is not nested (adjust_room), a bit removed, a bit kept."""
    f = fmt()
    here = rec(event=event.EV_BPF_HELPER, hook_id=ID["bpf_skb_adjust_room"], gso_type_before=1,
               gso_type_after=0x403, last_hook=ID["bpf_skb_adjust_room"] + 1, ts_ns=7, last_ts_ns=7)
    assert udp_tunnel.tunnel_change(gso.DEFAULT, here) == udp_tunnel.ADDED
    gone = rec(event=event.EV_BPF_HELPER, hook_id=ID["bpf_skb_adjust_room"], gso_type_before=0x403,
               gso_type_after=1, ts_ns=9)
    assert udp_tunnel.tunnel_change(gso.DEFAULT, gone) == udp_tunnel.REMOVED
    assert "[UDP_TUNNEL REMOVED]" in f.lines(gone)[0]
    kept = rec(event=event.EV_GSO_SET, hook_id=ID["skb_segment"], gso_type_before=0x403,
               gso_type_after=0x403, last_hook=ID["bpf_skb_adjust_room"] + 1, last_ts_ns=7,
               ts_ns=20)
    assert udp_tunnel.tunnel_change(gso.DEFAULT, kept) is None
    assert "nested" not in f.lines(kept)[0]


def test_unloaded_tunnel_module_at_start_and_later(fake, capsys, monkeypatch, tmp_path):
    from skbtrace.live import loader
    rel = tmp_path / "6.1.0-test"
    rel.mkdir()
    (rel / "modules.builtin").write_text("kernel/drivers/net/virtio_net.ko\n")
    (rel / "modules.dep").write_text("kernel/net/ipv4/udp_tunnel.ko: \n"
                                     "kernel/net/ipv6/ip6_udp_tunnel.ko: \n")
    monkeypatch.setattr(loader, "MODULES_DIR", str(tmp_path))
    monkeypatch.setattr(loader.platform, "release", lambda: "6.1.0-test")
    loaded = [set()]
    monkeypatch.setattr(loader, "loaded_modules", lambda: loaded[0])
    monkeypatch.setattr(loader.ModuleWatch, "INTERVAL_S", 0)
    # vxlan's first device loads udp_tunnel while the tool runs
    fake.BPF.on_poll = {1: lambda: loaded[0].add("udp_tunnel")}
    from skbtrace.detector import main
    fake.BPF.available = [h.name for h in HOOKS if not h.module]
    fake.BPF.script = [[], [], []]
    assert main(["--no-static"]) == 0
    out, err = capsys.readouterr()
    assert ("skipped hook udp_tunnel_xmit_skb: module udp_tunnel not loaded: restart the tool "
            "after `modprobe udp_tunnel` (or after the first vxlan, geneve or fou device is "
            "created)") in err
    assert "skipped hook udp_tunnel6_xmit_skb: module ip6_udp_tunnel not loaded" in err
    assert err.count("module udp_tunnel was loaded after the start: restart the tool to trace "
                     "udp_tunnel_xmit_skb\n") == 1
    assert "ip6_udp_tunnel was loaded" not in err
    # virtio_net is built in here: its missing symbol has the usual reason
    assert "skipped hook receive_buf: not in this kernel" in err
    assert "skipped: module udp_tunnel not loaded: restart the tool" in out
