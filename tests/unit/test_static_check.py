"""STATIC section from recorded netlink messages (tests/unit/data/netlink,
recorded with record_netlink.py in namespaces holding the setups)."""
import os

import pytest

pyroute2 = pytest.importorskip("pyroute2", reason="python3-pyroute2 (make deps)")
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # noqa: E402

from skbtrace import static_check  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "netlink")


def load(name):
    links = []
    with open(os.path.join(DATA, name + ".hex")) as f:
        for line in f:
            kind, hexdata = line.split()
            raw = bytes.fromhex(hexdata)
            if kind == "link":
                m = ifinfmsg(raw)
                m.decode()
                links.append(static_check.link_from_msg(m))
            else:
                name_, prog_id = static_check.bpf_filter_from_raw(raw)
                if name_ is None and prog_id is None:
                    continue
                links[-1]["tc"].append({"direction": "ingress", "name": name_, "id": prog_id})
    return static_check.StaticReport(links)


def test_tca_bpf_id_decoded_from_raw_attribute():
    # pyroute2 0.7.2 leaves TCA_BPF_ID (type 11) undecoded; we read it raw
    with open(os.path.join(DATA, "vxlan_tc.hex")) as f:
        filters = [bytes.fromhex(l.split()[1]) for l in f if l.startswith("filter")]
    decoded = [static_check.bpf_filter_from_raw(r) for r in filters]
    assert (None, None) in decoded                   # the chain head has no options
    named = [d for d in decoded if d[0]]
    assert named == [("pull_all", 398)]


def test_vxlan_and_tc_setup():
    rep = load("vxlan_tc")
    vx = [l for l in rep.links if l["kind"] == "vxlan"][0]
    assert vx["name"] == "vx0" and vx["vxlan"]["vni"] == 42 and vx["vxlan"]["port"] == 4789
    lines = static_check.render_lines(rep)
    assert "STATIC: tunnel devices: vx0 vxlan VNI 42 port 4789 local 198.18.0.1" in lines[0]
    assert lines[1] == "STATIC: tc BPF programs: va ingress pull_all id 398"
    v = static_check.verdict(rep)
    assert v.startswith("STATIC: VXLAN devices: vx0 (VNI 42, port 4789)")
    assert "1 tc BPF and 0 XDP programs attached: BPF can encapsulate in UDP" in v
    assert rep.to_dict()["links"][-1]["name"]


def test_plain_setup():
    rep = load("plain")
    assert [l["kind"] for l in rep.links] == [None, "veth", "veth"]
    v = static_check.verdict(rep)
    assert v.startswith("STATIC: No VXLAN devices, no tc/XDP BPF programs")
    assert "does not rule out UDP_TUNNEL" in v


def test_ipip_and_fou_verdict():
    links = [{"name": "tunl0", "kind": "ipip", "index": 2, "vxlan": None, "encap": None,
              "xdp_prog_id": None, "tc": [], "features": {}, "driver": None},
             {"name": "fou1", "kind": "ipip", "index": 3, "vxlan": None, "encap": "fou",
              "xdp_prog_id": 7, "tc": [], "features": {}, "driver": None}]
    v = static_check.verdict(static_check.StaticReport(links))
    assert v.startswith("STATIC: No VXLAN devices, IPIP configured (tunl0, fou1)")
    assert "UDP-encapsulated (FOU/GUE) tunnels: fou1" in v
    assert "0 tc BPF and 1 XDP programs attached" in v
