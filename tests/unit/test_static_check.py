"""STATIC section from recorded netlink messages (tests/unit/data/netlink/*.rec,
recorded by tests/unit/record_netlink.py in namespaces holding each setup:
plain, vxlan, tcbpf, xdp on this build host's 6.18 kernel; ipip, gre, fou,
geneve, all in the lab guest's Debian 6.1 kernel, which has those modules).
No root, no network changes: the recordings go through the same decoding as
collect() (build_report), and through pyroute2's own message classes."""
import json
import os
import struct
import sys

import pytest

pyroute2 = pytest.importorskip("pyroute2", reason="python3-pyroute2 (make deps)")
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # noqa: E402
from pyroute2.netlink.rtnl.tcmsg import tcmsg  # noqa: E402

import record_netlink  # noqa: E402
from skbtrace.live import static_check as sc  # noqa: E402
from skbtrace.errors import EnvError  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "netlink")
NO_VX = ("a missing VXLAN device does not rule out UDP_TUNNEL (GRO of UDP tunnel sockets, "
         "BPF encapsulation and the host side set it too)")


def raw(name):
    return record_netlink.load(os.path.join(DATA, name + ".rec"))


def report(name):
    return sc.build_report(raw(name))


def link(rep, name):
    return [l for l in rep.links if l["name"] == name][0]


def lines_of(name, verbose=False):
    return sc.render_lines(report(name), verbose=verbose)


# --- TCA_BPF_ID: the attribute pyroute2 0.7.2 does not decode ------------------

def test_tca_bpf_id_decoded_from_recorded_filter_bytes():
    r = raw("tcbpf")
    names = r["prog_names"]          # bpf_prog_info.name by id, recorded alongside
    got = {}
    for ifindex, parent, msg in r["filters"]:
        f = sc.bpf_filter_from_raw(msg)
        if f is None:
            continue                 # the per-prio chain head has no TCA_OPTIONS
        got[f["name"]] = f["id"]
        # the id is the u32 payload of attribute type 11 inside TCA_OPTIONS
        opts = dict(sc.nlas(dict(sc.nlas(msg, 36))[sc.TCA_OPTIONS]))
        assert struct.unpack("=I", opts[11])[0] == f["id"]
        assert names[f["id"]] == f["name"]
        assert f["da"] is True and f["prio"] > 0
        # pyroute2 decodes the message but has no value for TCA_BPF_ID
        m = tcmsg(msg)
        m.decode()
        assert m.get_attr("TCA_KIND") == "bpf"
        assert m.get_attr("TCA_OPTIONS").get_attr("TCA_BPF_NAME") == f["name"]
        assert m.get_attr("TCA_OPTIONS").get_attr("TCA_BPF_ID") in (None, f["id"])
    assert sorted(got) == ["stc_egress", "stc_ingress", "stc_old_ingress"]
    assert all(i > 0 for i in got.values())


def test_tca_bpf_id_handmade_message():
    def nla(typ, payload):
        ln = 4 + len(payload)
        return struct.pack("=HH", ln, typ) + payload + b"\0" * ((4 - ln % 4) % 4)
    opts = nla(7, b"enc.o:[tc]\0") + nla(8, struct.pack("=I", 1)) + \
        nla(10, bytes(range(8))) + nla(11, struct.pack("=I", 0xdeadbeef))
    body = struct.pack("=BxxxiIII", 0, 3, 1, 0xfffffff3, (49152 << 16) | 0x0300) + \
        nla(1, b"bpf\0") + nla(2 | 0x8000, opts)
    msg = struct.pack("=IHHII", 16 + len(body), 44, 2, 0, 0) + body
    f = sc.bpf_filter_from_raw(msg)
    assert f == {"name": "enc.o:[tc]", "id": 0xdeadbeef, "tag": "0001020304050607",
                 "da": True, "prio": 49152, "in_hw": False}
    # another classifier, or no options: not a bpf program
    assert sc.bpf_filter_from_raw(msg.replace(b"bpf\0", b"u32\0")) is None
    head = struct.pack("=IHHII", 16 + 20 + 8, 44, 2, 0, 0) + body[:20] + nla(1, b"bpf\0")
    assert sc.bpf_filter_from_raw(head) is None
    # a truncated message: the cut attribute is dropped, not misread
    assert sc.bpf_filter_from_raw(msg[:-6]) is None


# --- setups ---------------------------------------------------------------------

def test_vxlan_setup():
    rep = report("vxlan")
    t = link(rep, "vx0")["tunnel"]
    assert t["vni"] == 42 and t["port"] == 4789            # be16 on the wire
    assert t["local"] == "198.18.0.1" and t["remote"] == "198.18.0.2" and t["udp_csum"]
    lines = sc.render_lines(rep)
    assert lines[0] == ("STATIC: tunnel devices: vx0 vxlan VNI 42 port 4789 local 198.18.0.1 "
                        "remote 198.18.0.2 udpcsum=on")
    assert lines[1] == "STATIC: tc BPF programs: none"
    assert lines[-1] == sc.verdict(rep) == \
        "STATIC: VXLAN devices: vx0 (VNI 42, port 4789), no tc/XDP BPF programs"


def test_vxlan_port_byte_order_matches_pyroute2():
    for msg in raw("vxlan")["links"]:
        m = ifinfmsg(msg)
        m.decode()
        if m.get_attr("IFLA_IFNAME") != "vx0":
            continue
        data = m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
        assert data.get_attr("IFLA_VXLAN_PORT") == 4789
        assert data.get_attr("IFLA_VXLAN_ID") == 42
        assert sc.link_from_raw(msg)["tunnel"]["port"] == 4789
        return
    pytest.fail("no vx0 in the recording")


def test_tcbpf_setup():
    rep = report("tcbpf")
    progs = dict((p["name"], p) for _l, p in rep.tc_programs())
    assert progs["stc_ingress"]["direction"] == "ingress"
    assert progs["stc_ingress"]["attach"] == "clsact"
    assert progs["stc_egress"]["direction"] == "egress"
    assert progs["stc_old_ingress"]["attach"] == "ingress"          # ingress qdisc ffff:
    assert progs["stc_old_ingress"]["prog_name"] == "stc_old_ingress"
    lines = sc.render_lines(rep)
    assert lines[1] == ("STATIC: tc BPF programs: vb ingress stc_old_ingress id %d (ingress); "
                        "va ingress stc_ingress id %d; va egress stc_egress id %d" % (
                            progs["stc_old_ingress"]["id"], progs["stc_ingress"]["id"],
                            progs["stc_egress"]["id"]))
    assert sc.verdict(rep) == (
        "STATIC: No VXLAN devices, 3 tc BPF and 0 XDP programs attached: BPF can encapsulate in "
        "UDP without a device (bpf_skb_adjust_room ENCAP_L4_UDP sets UDP_TUNNEL), " + NO_VX)


def test_xdp_setup():
    rep = report("xdp")
    (l, x), = rep.xdp_programs()
    assert l["name"] == "vb" and x["mode"] == "drv" and x["name"] == "stc_xdp" and x["id"] > 0
    assert "STATIC: XDP programs: vb drv stc_xdp id %d" % x["id"] in sc.render_lines(rep)
    assert "0 tc BPF and 1 XDP programs attached: XDP can encapsulate in UDP without a device " \
           "(bpf_xdp_adjust_head) but sets no gso_type" in sc.verdict(rep)


def test_plain_setup():
    rep = report("plain")
    assert [l["kind"] for l in rep.links if not l["loopback"]] == ["veth", "veth"]
    lines = sc.render_lines(rep)
    assert lines[:3] == ["STATIC: tunnel devices: none", "STATIC: tc BPF programs: none",
                         "STATIC: XDP programs: none"]
    assert sc.verdict(rep) == "STATIC: No VXLAN devices, no tc/XDP BPF programs, " + NO_VX
    # veth offloads only with --verbose
    assert not [x for x in lines if x.startswith("STATIC: offloads")]
    assert "STATIC: offloads va (veth): rx-gro-list=off rx-udp-gro-forwarding=off " \
           "tx-gso-list=on tx-udp-segmentation=on tx-udp_tnl-csum-segmentation=on " \
           "tx-udp_tnl-segmentation=on" in sc.render_lines(rep, verbose=True)


def test_ipip_setup_and_tunl0():
    rep = report("ipip")
    assert link(rep, "tunl0")["tunnel"]["fallback"] and not link(rep, "tunl0")["up"]
    lines = sc.render_lines(rep)
    assert lines[0].startswith("STATIC: tunnel devices: ipip1 ipip local 198.18.0.1 remote "
                               "198.18.0.2 (down); module fallback devices, down: tunl0")
    assert sc.verdict(rep).startswith("STATIC: No VXLAN devices, IPIP configured (ipip1), ")
    assert sc.verdict(rep).endswith(NO_VX)


def test_tunl0_up_counts_as_ipip_configured():
    # Calico IPIP: tunl0 up, no local/remote; the recorded message with IFF_UP set
    r = raw("ipip")
    msgs = []
    for msg in r["links"]:
        if sc.link_from_raw(msg)["name"] in ("tunl0", "ipip1"):
            if sc.link_from_raw(msg)["name"] == "ipip1":
                continue
            flags = struct.unpack_from("=I", msg, 24)[0] | sc.IFF_UP
            msg = msg[:24] + struct.pack("=I", flags) + msg[28:]
        msgs.append(msg)
    r["links"] = msgs
    rep = sc.build_report(r)
    assert sc.verdict(rep).startswith("STATIC: No VXLAN devices, IPIP configured (tunl0), ")
    assert sc.render_lines(rep)[0] == "STATIC: tunnel devices: tunl0 ipip"


def test_gre_setup():
    rep = report("gre")
    lines = sc.render_lines(rep)
    assert "gre1 gre local 198.18.0.1 remote 198.18.0.2 (down)" in lines[0]
    assert "gt1 gretap local 198.18.0.1 remote 198.18.0.2 (down)" in lines[0]
    assert "SIT: sit1, GRE: gre1, GRETAP: gt1" in sc.verdict(rep)
    assert "IPIP configured" not in sc.verdict(rep)        # only the idle tunl0


def test_fou_setup():
    rep = report("fou")
    t = link(rep, "ipfou")["tunnel"]
    assert t["encap"] == "fou" and t["encap_dport"] == 5555 and t["remote"] == "198.18.0.6"
    assert rep.fou["checked"]
    ports = sorted((p["port"], p["type"], p["ipproto"], p["family"]) for p in rep.fou["ports"])
    assert ports == [(5555, "fou", 4, 4), (5556, "gue", 0, 4)]
    lines = sc.render_lines(rep)
    assert "STATIC: FOU/GUE ports: 5555/udp fou ipproto 4 ipv4; 5556/udp gue ipv4" in lines
    assert "ipfou ipip local 198.18.0.1 remote 198.18.0.6 encap fou dport 5555 (UDP)" in lines[0]
    v = sc.verdict(rep)
    assert v.startswith("STATIC: No VXLAN devices, IPIP configured (ipfou), ")
    assert "UDP-encapsulated (FOU/GUE) tunnels: ipfou, FOU/GUE ports: 5555, 5556" in v


def test_geneve_setup():
    rep = report("geneve")
    t = link(rep, "gnv0")["tunnel"]
    assert (t["vni"], t["port"], t["remote"]) == (7, 6081, "198.18.0.2")
    assert sc.verdict(rep).startswith("STATIC: No VXLAN devices, GENEVE devices: gnv0 "
                                      "(VNI 7, port 6081), ")


def test_all_setup():
    rep = report("all")
    text = "\n".join(sc.render_lines(rep, verbose=True))
    missing = [e for e in record_netlink.EXPECT["all"] if e not in text]
    assert not missing, text


def test_recorded_fou_and_tcx_state():
    # on the 6.18 host: no fou module, tcx queried; on 6.1: fou dumped, no tcx
    assert report("plain").fou == {"checked": True, "ports": [],
                                   "reason": "no fou genl family (module not loaded)"}
    assert report("plain").tcx["checked"]
    g = report("geneve")
    assert g.tcx == {"checked": False, "reason": "tcx: kernel without tcx (before 6.6)"}
    assert "STATIC: tcx: kernel without tcx (before 6.6)" in sc.render_lines(g, verbose=True)


# --- decoding path and API ----------------------------------------------------------

def test_pyroute2_messages_give_back_the_recorded_bytes():
    # collect() takes the bytes from pyroute2 message objects with raw_bytes()
    for msg in raw("vxlan")["links"]:
        m = ifinfmsg(msg)
        m.decode()
        assert sc.raw_bytes(m) == msg
        assert sc.link_from_raw(msg)["name"] == m.get_attr("IFLA_IFNAME")
        kind = m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        assert sc.link_from_raw(msg)["kind"] == kind


def test_to_dict_is_json():
    rep = report("all")
    d = json.loads(json.dumps(rep.to_dict()))
    assert sorted(d) == ["fou", "links", "netns", "tcx"]
    vx = [l for l in d["links"] if l["name"] == "vx0"][0]
    assert vx["tunnel"]["vni"] == 42 and vx["tunnel"]["port"] == 4789
    assert set(vx) == {"name", "index", "kind", "up", "driver", "features", "tunnel", "xdp",
                       "tc"}
    assert '"vni": 42' in json.dumps(d)


def test_recording_roundtrip():
    r = raw("tcbpf")
    assert record_netlink.loads(record_netlink.dumps(r)) == r


def test_missing_pyroute2_is_env_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyroute2", None)
    with pytest.raises(EnvError) as e:
        sc.collect()
    assert "install python3-pyroute2" in str(e.value)


def test_unknown_netns_is_env_error():
    with pytest.raises(EnvError) as e:
        sc.collect(netns="stc-no-such-namespace")
    assert str(e.value).startswith("network namespace stc-no-such-namespace: ")


def test_ethtool_on_loopback_answers_or_is_empty():
    driver, feats = sc.ethtool_info("lo")
    assert set(feats) <= set(sc.FEATURES)
    assert sc.ethtool_info("stc-no-such-if") == (None, {})


def test_idle_tunl0_alone_is_not_configuration():
    # the ipip module makes a down tunl0 in every namespace: not an IPIP setup
    r = raw("ipip")
    r["links"] = [m for m in r["links"] if sc.link_from_raw(m)["name"] != "ipip1"]
    rep = sc.build_report(r)
    lines = sc.render_lines(rep)
    assert lines[0] == "STATIC: tunnel devices: none; module fallback devices, down: tunl0"
    assert lines[-1] == "STATIC: No VXLAN devices, no tc/XDP BPF programs, " + NO_VX


def test_tcx_program_found_by_prog_query():
    # 6.18 host: a tcx link is not in any tc dump, BPF_PROG_QUERY finds it
    rep = report("tcx")
    assert not raw("tcx")["filters"]
    (l, p), = rep.tc_programs()
    assert (l["name"], p["direction"], p["attach"], p["name"]) == ("va", "ingress", "tcx",
                                                                   "stc_tcx")
    assert sc.render_lines(rep)[1] == "STATIC: tc BPF programs: va ingress stc_tcx id %d (tcx)" \
        % p["id"]
    assert "1 tc BPF and 0 XDP programs attached: BPF can encapsulate" in sc.verdict(rep)
