#!/usr/bin/python3
"""Record (or check live) what skbtrace/live/static_check.py reads from netlink,
in a throw-away network namespace holding one setup. Needs root; uses only
198.18.0.0/15 addresses and sends no traffic; the namespace is deleted at the
end, also on errors.

    record_netlink.py --setup vxlan -o tests/unit/data/netlink/vxlan.rec
    record_netlink.py --setup tcbpf --live     # collect(netns=...) + render,
                                               # checked against EXPECT; rc 0/1
    record_netlink.py --setup all --live --keep   # leave the namespace

Setups: plain (veth pair va/vb), vxlan (vx0 VNI 42 port 4789 local 198.18.0.1,
udpcsum), tcbpf (clsact on va: ingress + egress bpf filters; old ingress qdisc
on vb with a bpf filter), xdp (XDP, driver mode, on veth vb), tcx (a tcx ingress link on va, kernel
6.6+), ipip (ipip1 + tunl0), gre
(gre1, gretap gt1, sit sit1), fou (FOU port 5555 ipproto 4, GUE port 5556, ipip
ipfou with encap fou dport 5555, remote 198.18.0.6), geneve (gnv0 VNI 7 port 6081), all. ipip,
gre, fou and geneve need those kernel modules (the lab guest has them; this
build host's kernel has none of them).

The BPF programs are two instructions (r0 = -1 / XDP_PASS; exit), loaded with
the bpf syscall through ctypes and attached with pyroute2: no clang, no bcc.

Recording format, one record per line ('#' lines are comments):
    link HEX                        RTM_NEWLINK, nlmsghdr included
    qdisc HEX                       RTM_NEWQDISC
    filter IFINDEX PARENT HEX       RTM_NEWTFILTER from a dump of that parent
    fou HEX | fou-none              FOU_CMD_GET replies / not checked
    fou-reason TEXT
    tcx IFINDEX DIRECTION ID | tcx-none
    tcx-reason TEXT
    ethtool IFNAME JSON             [driver, {feature: on/off}]
    prog ID NAME                    bpf_prog_info.name
"""
import argparse
import ctypes
import json
import os
import platform
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from skbtrace.live import static_check  # noqa: E402

SETUPS = ("plain", "vxlan", "tcbpf", "xdp", "tcx", "ipip", "gre", "fou", "geneve", "all")
_HOLD = []          # tcx link fds: the attachment lives as long as the fd

# what the live check expects in render_lines() of each setup
EXPECT = {
    "plain": ["STATIC: tunnel devices: none", "STATIC: tc BPF programs: none",
              "STATIC: No VXLAN devices, no tc/XDP BPF programs"],
    "vxlan": ["STATIC: tunnel devices: vx0 vxlan VNI 42 port 4789 local 198.18.0.1 "
              "remote 198.18.0.2",
              "STATIC: VXLAN devices: vx0 (VNI 42, port 4789), no tc/XDP BPF programs"],
    "tcbpf": ["va ingress stc_ingress id ", "va egress stc_egress id ",
              "vb ingress stc_old_ingress id ", "(ingress)",
              "STATIC: No VXLAN devices, 3 tc BPF and 0 XDP programs attached: BPF can "
              "encapsulate in UDP without a device"],
    "xdp": ["STATIC: XDP programs: vb drv stc_xdp id ",
            "0 tc BPF and 1 XDP programs attached"],
    "tcx": ["STATIC: tc BPF programs: va ingress stc_tcx id ", " (tcx)",
            "STATIC: No VXLAN devices, 1 tc BPF and 0 XDP programs attached"],
    "ipip": ["module fallback devices, down: tunl0", "ipip1 ipip local 198.18.0.1 remote 198.18.0.2",
             "STATIC: No VXLAN devices, IPIP configured (ipip1)"],
    "gre": ["gre1 gre local 198.18.0.1 remote 198.18.0.2", "SIT: sit1, GRE: gre1, GRETAP: gt1"],
    "fou": ["ipfou ipip local 198.18.0.1 remote 198.18.0.6 encap fou dport 5555 (UDP)",
            "5555/udp fou ipproto 4 ipv4", "5556/udp gue",
            "UDP-encapsulated (FOU/GUE) tunnels: ipfou", "FOU/GUE ports: 5555, 5556"],
    "geneve": ["gnv0 geneve VNI 7 port 6081 remote 198.18.0.2",
               "GENEVE devices: gnv0 (VNI 7, port 6081)"],
}
EXPECT["all"] = [e for s in ("vxlan", "ipip", "gre", "fou", "geneve", "xdp") for e in EXPECT[s]
                 if not e.startswith("STATIC: No VXLAN") and "0 tc BPF" not in e
                 and "no tc/XDP" not in e] + \
    ["STATIC: VXLAN devices: vx0 (VNI 42, port 4789)", "3 tc BPF and 1 XDP programs attached"]


def sh(cmd, check=True):
    p = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    if check and p.returncode:
        raise RuntimeError("%s: rc %d: %s" % (cmd, p.returncode, err.decode().strip()))
    return p.returncode


# --- tiny BPF programs through the bpf syscall ---------------------------------

BPF_PROG_LOAD, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP = 5, 3, 6


def load_prog(prog_type, name, r0):
    """fd of a loaded program `r0 = imm; exit` named `name`."""
    insns = struct.pack("=BBhi", 0xb7, 0, 0, r0) + struct.pack("=BBhi", 0x95, 0, 0, 0)
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQIIQII16s", prog_type, 2, ctypes.addressof(insn_buf),
                       ctypes.addressof(lic), 0, 0, 0, 0, 0, name.encode()[:15])
    attr += b"\0" * (128 - len(attr))
    fd, _ = static_check._bpf(BPF_PROG_LOAD, attr)
    return fd


# --- setups -------------------------------------------------------------------

def _mod(name):
    return sh("modprobe %s" % name, check=False) == 0 or os.path.isdir("/sys/module/" + name)


def setup(ns, which):
    n = "ip -n %s " % ns
    sh("ip netns add %s" % ns)
    sh(n + "link add va type veth peer name vb")
    sh(n + "addr add 198.18.0.1/30 dev va")
    sh(n + "addr add 198.18.0.2/30 dev vb")
    sh(n + "link set va up && " + n + "link set vb up")
    every = which == "all"
    if which in ("vxlan",) or every:
        sh(n + "link add vx0 type vxlan id 42 dstport 4789 local 198.18.0.1 remote 198.18.0.2 "
           "dev va udpcsum")
        sh(n + "link set vx0 up")
    if which in ("ipip",) or every:
        _mod("ipip")
        sh(n + "link add ipip1 type ipip local 198.18.0.1 remote 198.18.0.2")
    if which in ("gre",) or every:
        _mod("ip_gre")
        _mod("sit")
        sh(n + "link add gre1 type gre local 198.18.0.1 remote 198.18.0.2")
        sh(n + "link add gt1 type gretap local 198.18.0.1 remote 198.18.0.2")
        sh(n + "link add sit1 type sit local 198.18.0.1 remote 198.18.0.2")
    if which in ("fou",) or every:
        _mod("fou")
        _mod("ipip")
        sh(n + "fou add port 5555 ipproto 4")
        sh(n + "fou add port 5556 gue")
        sh(n + "link add ipfou type ipip local 198.18.0.1 remote 198.18.0.6 "
           "encap fou encap-sport auto encap-dport 5555")
    if which in ("geneve",) or every:
        _mod("geneve")
        sh(n + "link add gnv0 type geneve id 7 remote 198.18.0.2 dstport 6081")
    if which == "tcx":
        attach_tcx(ns)
    if which in ("tcbpf", "xdp") or every:
        attach_bpf(ns, tc=which in ("tcbpf",) or every, xdp=which in ("xdp",) or every)


def attach_bpf(ns, tc, xdp):
    from pyroute2 import IPRoute
    with static_check._InNetns(ns):
        ipr = IPRoute()
    try:
        va = ipr.link_lookup(ifname="va")[0]
        vb = ipr.link_lookup(ifname="vb")[0]
        fds = []
        if tc:
            ipr.tc("add", "clsact", va)
            for name, parent in (("stc_ingress", "ffff:fff2"), ("stc_egress", "ffff:fff3")):
                fd = load_prog(BPF_PROG_TYPE_SCHED_CLS, name, -1)
                fds.append(fd)
                ipr.tc("add-filter", "bpf", va, ":1", fd=fd, name=name, parent=parent,
                       classid=1, direct_action=True)
            ipr.tc("add", "ingress", vb, "ffff:")
            fd = load_prog(BPF_PROG_TYPE_SCHED_CLS, "stc_old_ingress", -1)
            fds.append(fd)
            ipr.tc("add-filter", "bpf", vb, ":1", fd=fd, name="stc_old_ingress",
                   parent="ffff:", classid=1, direct_action=True)
        if xdp:
            fd = load_prog(BPF_PROG_TYPE_XDP, "stc_xdp", 2)          # XDP_PASS
            fds.append(fd)
            # no IFLA_XDP_FLAGS: pyroute2 0.7.2 encodes them as 2 bytes (ERANGE);
            # veth takes the program in driver mode
            ipr.link("set", index=vb, xdp={"attrs": [("IFLA_XDP_FD", fd)]})
        for fd in fds:
            os.close(fd)
    finally:
        ipr.close()


def attach_tcx(ns):
    """A tcx (bpf_mprog, 6.6+) ingress program on va through BPF_LINK_CREATE:
    invisible to tc netlink dumps, found by BPF_PROG_QUERY."""
    import socket
    with static_check._InNetns(ns):
        fd = load_prog(BPF_PROG_TYPE_SCHED_CLS, "stc_tcx", -1)
        attr = struct.pack("=IIII", fd, socket.if_nametoindex("va"),
                           static_check.BPF_TCX_INGRESS, 0) + b"\0" * 48
        link_fd, _ = static_check._bpf(28, attr)             # BPF_LINK_CREATE
        os.close(fd)
        _HOLD.append(link_fd)


def teardown(ns):
    while _HOLD:
        os.close(_HOLD.pop())
    sh("ip netns del %s" % ns, check=False)


# --- recording format ---------------------------------------------------------

def dumps(raw, comment=""):
    out = ["# " + l for l in comment.splitlines()]
    out += ["link " + r.hex() for r in raw["links"]]
    out += ["qdisc " + r.hex() for r in raw["qdiscs"]]
    out += ["filter %d %x %s" % (i, p, r.hex()) for i, p, r in raw["filters"]]
    if raw["fou"] is None:
        out.append("fou-none")
    else:
        out += ["fou " + r.hex() for r in raw["fou"]]
    if raw.get("fou_reason"):
        out.append("fou-reason " + raw["fou_reason"])
    if raw["tcx"] is None:
        out.append("tcx-none")
    else:
        out += ["tcx %d %s %d" % t for t in raw["tcx"]]
    if raw.get("tcx_reason"):
        out.append("tcx-reason " + raw["tcx_reason"])
    out += ["ethtool %s %s" % (k, json.dumps(v, sort_keys=True))
            for k, v in sorted(raw["ethtool"].items())]
    out += ["prog %d %s" % kv for kv in sorted(raw["prog_names"].items())]
    return "\n".join(out) + "\n"


def loads(text):
    raw = {"links": [], "qdiscs": [], "filters": [], "fou": [], "fou_reason": None,
           "tcx": [], "tcx_reason": None, "ethtool": {}, "prog_names": {}}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tag, _, rest = line.partition(" ")
        if tag == "link":
            raw["links"].append(bytes.fromhex(rest))
        elif tag == "qdisc":
            raw["qdiscs"].append(bytes.fromhex(rest))
        elif tag == "filter":
            i, p, h = rest.split()
            raw["filters"].append((int(i), int(p, 16), bytes.fromhex(h)))
        elif tag == "fou":
            raw["fou"].append(bytes.fromhex(rest))
        elif tag == "fou-none":
            raw["fou"] = None
        elif tag == "fou-reason":
            raw["fou_reason"] = rest
        elif tag == "tcx":
            i, d, p = rest.split()
            raw["tcx"].append((int(i), d, int(p)))
        elif tag == "tcx-none":
            raw["tcx"] = None
        elif tag == "tcx-reason":
            raw["tcx_reason"] = rest
        elif tag == "ethtool":
            name, js = rest.split(" ", 1)
            drv, feats = json.loads(js)
            raw["ethtool"][name] = (drv, feats)
        elif tag == "prog":
            i, name = rest.split(" ", 1)
            raw["prog_names"][int(i)] = name
        else:
            raise ValueError("unknown record: %s" % line[:40])
    return raw


def load(path):
    with open(path) as f:
        return loads(f.read())


# --- live check -----------------------------------------------------------------

def live(which, keep=False, verbose=True):
    """Create the setup's namespace, run collect(netns=...), check EXPECT.
    Returns (missing expectations, lines, report)."""
    ns = "stc-%s-%d" % (which, os.getpid())
    try:
        setup(ns, which)
        report = static_check.collect(netns=ns)
        lines = static_check.render_lines(report, verbose=verbose)
        text = "\n".join(lines)
        missing = [e for e in EXPECT[which] if e not in text]
        return missing, lines, report
    finally:
        if not keep:
            teardown(ns)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", choices=SETUPS, required=True)
    ap.add_argument("-o", "--output", help="recording file (default: stdout)")
    ap.add_argument("--live", action="store_true",
                    help="check collect(netns=...) against EXPECT instead of recording")
    ap.add_argument("--keep", action="store_true", help="keep the namespace")
    a = ap.parse_args(argv)
    if a.live:
        missing, lines, _ = live(a.setup, keep=a.keep)
        print("\n".join(lines))
        for m in missing:
            print("MISSING: %s" % m, file=sys.stderr)
        return 1 if missing else 0
    ns = "stc-%s-%d" % (a.setup, os.getpid())
    try:
        setup(ns, a.setup)
        raw = static_check.gather(netns=ns)
    finally:
        if not a.keep:
            teardown(ns)
    try:
        import pyroute2
        version = getattr(pyroute2, "__version__", "?")
    except Exception:
        version = "?"
    comment = "setup %s, kernel %s, pyroute2 %s, recorded by tests/unit/record_netlink.py" % (
        a.setup, platform.release(), version)
    text = dumps(raw, comment)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
