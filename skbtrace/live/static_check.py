"""The detector's STATIC section: what in a network namespace can put
SKB_GSO_UDP_TUNNEL on a packet, read from netlink (pyroute2 as the transport)
and the ethtool ioctl, never from `ip` output. Needs no bcc, and no root for
the tool's own namespace; `--static-only` runs it alone.

API:
    collect(netns=None) -> StaticReport   (EnvError: no pyroute2, bad netns)
    render_lines(report, verbose=False)   -> ["STATIC: ...", ...], verdict last
    verdict(report)                        -> one line, "STATIC: ..."
    report.to_dict()                       -> the --json form below

Collection and decoding are two steps: gather() dumps the raw netlink messages
(RTM_NEWLINK, RTM_NEWQDISC, RTM_NEWTFILTER, FOU genl) and the ethtool/bpf
syscall answers into a plain dict, build_report() decodes it. The attribute
walk is done here on the raw bytes, not by pyroute2's decoders: pyroute2 0.7.2
does not decode TCA_BPF_ID (type 11 in a "bpf" filter's TCA_OPTIONS) nor the
IFLA_IPTUN_* data of ipip/sit links, and 0.5.x (RHEL 8) decodes less, so the
raw walk gives the same answer on every pyroute2. The unit tests feed recorded
messages (tests/unit/data/netlink) to build_report().

--json (report.to_dict()):
  {"netns": name|null,
   "links": [{"name", "index", "kind" (IFLA_INFO_KIND or null), "up": bool,
              "driver" (ethtool, or null), "features": {feature: "on"|"off"},
              "tunnel": null | {"type": "vxlan"|"geneve"|"ipip"|"sit"|"ip6tnl"|
                   "gre"|"gretap"|"ip6gre"|"ip6gretap"|"erspan"|"ip6erspan"|"bareudp",
                   "vni", "port", "local", "remote", "group", "dev",
                   "external" (collect_metadata), "udp_csum",
                   "udp_zero_csum6_tx", "udp_zero_csum6_rx", "remcsum_tx",
                   "remcsum_rx", "gbp", "gpe",
                   "encap": null | "fou"|"gue"|"mpls"|"typeN",
                   "encap_sport", "encap_dport",
                   "fallback": bool (tunl0, gre0...: made by the module; in the
                               verdict only when up)}   (keys present when known),
              "xdp": [{"mode": "drv"|"skb"|"hw", "id", "name", "prog_name"}],
              "tc": [{"direction": "ingress"|"egress"|"qdisc H:",
                      "attach": "clsact"|"ingress"|"tcx"|qdisc kind,
                      "name" (TCA_BPF_NAME, e.g. "prog.o:[tc]"; tcx: prog_name),
                      "id", "tag", "da": bool, "prio", "in_hw": bool,
                      "prog_name" (bpf_prog_info.name, root only, else null)}]}],
   "fou": {"checked": bool, "reason": str|null,
           "ports": [{"port", "family": 4|6, "ipproto", "type": "fou"|"gue"}]},
   "tcx": {"checked": bool, "reason": str|null}}
"""
import array
import ctypes
import errno
import fcntl
import os
import platform
import socket
import struct

from skbtrace.errors import EnvError

# --- constants (linux uapi) ---------------------------------------------------

NLMSG_HDRLEN, IFINFOMSG_LEN, TCMSG_LEN, GENLMSG_LEN = 16, 16, 20, 4

IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO, IFLA_XDP = 3, 5, 18, 43
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_XDP_ATTACHED, IFLA_XDP_PROG_ID = 2, 4
XDP_MODES = {5: "drv", 6: "skb", 7: "hw"}            # IFLA_XDP_{DRV,SKB,HW}_PROG_ID
XDP_ATTACHED = {1: "drv", 2: "skb", 3: "hw"}         # 4 = multi: per-mode ids
IFF_UP, IFF_LOOPBACK = 0x1, 0x8

TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_FLAGS, TCA_BPF_NAME, TCA_BPF_FLAGS_GEN, TCA_BPF_TAG, TCA_BPF_ID = 8, 7, 9, 10, 11
TCA_BPF_FLAG_ACT_DIRECT, TCA_CLS_FLAGS_IN_HW = 1, 4
TC_H_CLSACT_INGRESS, TC_H_CLSACT_EGRESS, TC_H_INGRESS_QDISC = 0xfffffff2, 0xfffffff3, 0xffff0000

ENCAP_TYPES = {0: None, 1: "fou", 2: "gue", 3: "mpls"}

# IFLA_INFO_DATA attribute numbers per kind: {type: (key, decoder)}
_U8, _U16, _U32, _BE16, _ADDR, _FLAG = "u8", "u16", "u32", "be16", "addr", "flag"
VXLAN_ATTRS = {1: ("vni", _U32), 2: ("remote", _ADDR), 3: ("dev", _U32), 4: ("local", _ADDR),
               15: ("port", _BE16), 16: ("remote", _ADDR), 17: ("local", _ADDR),
               18: ("udp_csum", _U8), 19: ("udp_zero_csum6_tx", _U8),
               20: ("udp_zero_csum6_rx", _U8), 21: ("remcsum_tx", _U8),
               22: ("remcsum_rx", _U8), 23: ("gbp", _FLAG), 25: ("external", _U8),
               27: ("gpe", _FLAG)}
GENEVE_ATTRS = {1: ("vni", _U32), 2: ("remote", _ADDR), 5: ("port", _BE16),
                6: ("external", _FLAG), 7: ("remote", _ADDR), 8: ("udp_csum", _U8),
                9: ("udp_zero_csum6_tx", _U8), 10: ("udp_zero_csum6_rx", _U8)}
IPTUN_ATTRS = {1: ("dev", _U32), 2: ("local", _ADDR), 3: ("remote", _ADDR),
               15: ("encap", _U16), 17: ("encap_sport", _BE16), 18: ("encap_dport", _BE16),
               19: ("external", _FLAG)}
GRE_ATTRS = {1: ("dev", _U32), 4: ("ikey", _U32), 5: ("okey", _U32), 6: ("local", _ADDR),
             7: ("remote", _ADDR), 14: ("encap", _U16), 16: ("encap_sport", _BE16),
             17: ("encap_dport", _BE16), 18: ("external", _FLAG)}
BAREUDP_ATTRS = {1: ("port", _BE16)}
KIND_ATTRS = {"vxlan": VXLAN_ATTRS, "geneve": GENEVE_ATTRS, "ipip": IPTUN_ATTRS,
              "sit": IPTUN_ATTRS, "ip6tnl": IPTUN_ATTRS, "gre": GRE_ATTRS, "gretap": GRE_ATTRS,
              "ip6gre": GRE_ATTRS, "ip6gretap": GRE_ATTRS, "erspan": GRE_ATTRS,
              "ip6erspan": GRE_ATTRS, "bareudp": BAREUDP_ATTRS}
TUNNEL_KINDS = tuple(sorted(KIND_ATTRS))
# created in every namespace once the module is loaded: not configuration by
# themselves (Calico IPIP brings tunl0 up, which makes it count)
FALLBACK_DEVICES = {"tunl0": "ipip", "gre0": "gre", "gretap0": "gretap", "erspan0": "erspan",
                    "sit0": "sit", "ip6tnl0": "ip6tnl", "ip6gre0": "ip6gre"}

# FOU generic netlink family (net/ipv4/fou*.c): ports are not links
FOU_CMD_GET = 3
FOU_ATTR_PORT, FOU_ATTR_AF, FOU_ATTR_IPPROTO, FOU_ATTR_TYPE = 1, 2, 3, 4
FOU_TYPES = {1: "fou", 2: "gue"}

FEATURES = ("tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation", "rx-gro-list",
            "rx-udp-gro-forwarding", "tx-gso-list", "tx-udp-segmentation")

BPF_ADVICE = "BPF can encapsulate in UDP without a device (bpf_skb_adjust_room ENCAP_L4_UDP " \
             "sets UDP_TUNNEL)"


# --- raw netlink decoding (also fed with recorded messages by the unit tests) ---

def nlas(buf, off=0, end=None):
    """[(type, payload bytes)] of the netlink attributes in buf[off:end]."""
    end = len(buf) if end is None else min(end, len(buf))
    out = []
    while off + 4 <= end:
        ln, typ = struct.unpack_from("=HH", buf, off)
        if ln < 4 or off + ln > end:
            break
        out.append((typ & 0x3fff, bytes(buf[off + 4:off + ln])))
        off += (ln + 3) & ~3
    return out


def _attrs(buf, off=0):
    d = {}
    for typ, val in nlas(buf, off):
        d.setdefault(typ, val)
    return d


def _asciiz(v):
    return v.split(b"\0", 1)[0].decode("ascii", "replace")


def _u(fmt, v):
    size = struct.calcsize(fmt)
    return struct.unpack_from(fmt, v)[0] if len(v) >= size else None


def _decode(dec, v):
    if dec == _U8:
        return _u("=B", v)
    if dec == _U16:
        return _u("=H", v)
    if dec == _U32:
        return _u("=I", v)
    if dec == _BE16:
        return _u("!H", v)               # ports travel in network byte order
    if dec == _FLAG:
        return True
    if dec == _ADDR:
        if len(v) == 4:
            return socket.inet_ntop(socket.AF_INET, v)
        if len(v) == 16:
            return socket.inet_ntop(socket.AF_INET6, v)
        return None
    return None


def _is_multicast(addr):
    if ":" in addr:
        return addr.lower().startswith("ff")
    return 224 <= int(addr.split(".")[0]) <= 239


def _zero_addr(addr):
    return addr in ("0.0.0.0", "::")


def tunnel_from_info_data(kind, data):
    """The tunnel dict of a link of `kind` from its raw IFLA_INFO_DATA payload."""
    table = KIND_ATTRS.get(kind)
    if table is None:
        return None
    t = {"type": kind}
    for typ, val in nlas(data):
        if typ not in table:
            continue
        key, dec = table[typ]
        value = _decode(dec, val)
        if value is None or (dec == _ADDR and _zero_addr(value)):
            continue
        t[key] = value
    if t.get("external") and not t.get("vni"):
        t.pop("vni", None)                  # collect_metadata: the VNI comes per packet
    if kind in ("vxlan", "geneve") and "remote" in t and _is_multicast(t["remote"]):
        t["group"] = t.pop("remote")
    for key in ("external", "udp_csum", "udp_zero_csum6_tx", "udp_zero_csum6_rx",
                "remcsum_tx", "remcsum_rx", "gbp", "gpe"):
        if key in t:
            t[key] = bool(t[key])
    if "encap" in t:
        t["encap"] = ENCAP_TYPES.get(t["encap"], "type%d" % t["encap"])
        if t["encap"] is None:
            for key in ("encap", "encap_sport", "encap_dport"):
                t.pop(key, None)
    if kind == "vxlan" and "port" not in t:
        t["port"] = 8472        # kernel default when IFLA_VXLAN_PORT is absent (old iproute2)
    return t


def link_from_raw(raw):
    """The parts of one RTM_NEWLINK message (raw bytes, nlmsghdr included)."""
    _family, _type, index, flags = struct.unpack_from("=BxHiI", raw, NLMSG_HDRLEN)
    a = _attrs(raw, NLMSG_HDRLEN + IFINFOMSG_LEN)
    kind, data = None, None
    if IFLA_LINKINFO in a:
        info = _attrs(a[IFLA_LINKINFO])
        if IFLA_INFO_KIND in info:
            kind = _asciiz(info[IFLA_INFO_KIND])
        data = info.get(IFLA_INFO_DATA)
    link = {"name": _asciiz(a.get(IFLA_IFNAME, b"")), "index": index, "kind": kind,
            "up": bool(flags & IFF_UP), "loopback": bool(flags & IFF_LOOPBACK),
            "driver": None, "features": {}, "tunnel": None, "xdp": [], "tc": []}
    if kind in KIND_ATTRS:
        t = link["tunnel"] = tunnel_from_info_data(kind, data or b"")
        t["fallback"] = (FALLBACK_DEVICES.get(link["name"]) == kind and "local" not in t
                         and "remote" not in t)
    if IFLA_XDP in a:
        link["xdp"] = xdp_from_raw(a[IFLA_XDP])
    return link


def xdp_from_raw(payload):
    """[{"mode", "id"}] from the IFLA_XDP nest."""
    x = _attrs(payload)
    attached = _u("=B", x.get(IFLA_XDP_ATTACHED, b"\0")) or 0
    out = []
    if attached in XDP_ATTACHED and IFLA_XDP_PROG_ID in x:
        out.append({"mode": XDP_ATTACHED[attached], "id": _u("=I", x[IFLA_XDP_PROG_ID]),
                    "name": None})
    elif attached:                                   # XDP_ATTACHED_MULTI
        for typ in sorted(XDP_MODES):
            if typ in x and _u("=I", x[typ]):
                out.append({"mode": XDP_MODES[typ], "id": _u("=I", x[typ]), "name": None})
    return out


def tc_header(raw):
    """(ifindex, handle, parent, info) of a raw RTM_NEW{QDISC,TFILTER} message."""
    return struct.unpack_from("=xxxxiIII", raw, NLMSG_HDRLEN)


def qdisc_from_raw(raw):
    ifindex, handle, parent, _info = tc_header(raw)
    a = _attrs(raw, NLMSG_HDRLEN + TCMSG_LEN)
    return {"index": ifindex, "handle": handle, "parent": parent,
            "kind": _asciiz(a.get(TCA_KIND, b""))}


def bpf_filter_from_raw(raw):
    """The tc "bpf" filter in one raw RTM_NEWTFILTER message, or None when the
    message is another classifier or a chain head without options. pyroute2
    0.7.2 does not decode TCA_BPF_ID (type 11) and keeps no value for it, so
    the attributes are walked here: {"name", "id", "tag", "da", "prio", "in_hw"}."""
    _ifindex, _handle, _parent, info = tc_header(raw)
    a = _attrs(raw, NLMSG_HDRLEN + TCMSG_LEN)
    if _asciiz(a.get(TCA_KIND, b"")) != "bpf" or TCA_OPTIONS not in a:
        return None
    o = _attrs(a[TCA_OPTIONS])
    if TCA_BPF_NAME not in o and TCA_BPF_ID not in o:
        return None
    flags = _u("=I", o.get(TCA_BPF_FLAGS, b"")) or 0
    gen = _u("=I", o.get(TCA_BPF_FLAGS_GEN, b"")) or 0
    tag = o.get(TCA_BPF_TAG)
    return {"name": _asciiz(o[TCA_BPF_NAME]) if TCA_BPF_NAME in o else None,
            "id": _u("=I", o.get(TCA_BPF_ID, b"")),
            "tag": tag.hex() if tag else None,
            "da": bool(flags & TCA_BPF_FLAG_ACT_DIRECT), "prio": info >> 16,
            "in_hw": bool(gen & TCA_CLS_FLAGS_IN_HW)}


def fou_from_raw(raw):
    """One FOU_CMD_GET reply (nlmsghdr + genlmsghdr + attrs) -> port dict."""
    a = _attrs(raw, NLMSG_HDRLEN + GENLMSG_LEN)
    af = _u("=B", a.get(FOU_ATTR_AF, b""))
    typ = _u("=B", a.get(FOU_ATTR_TYPE, b""))
    return {"port": _u("!H", a.get(FOU_ATTR_PORT, b"")),
            "family": {socket.AF_INET: 4, socket.AF_INET6: 6}.get(af, af),
            "ipproto": _u("=B", a.get(FOU_ATTR_IPPROTO, b"")),
            "type": FOU_TYPES.get(typ, typ)}


# --- the report -----------------------------------------------------------------

class StaticReport(object):
    def __init__(self, links, fou=None, tcx=None, netns=None):
        self.links = links
        self.fou = fou or {"checked": False, "reason": "not collected", "ports": []}
        self.tcx = tcx or {"checked": False, "reason": "not collected"}
        self.netns = netns

    def tunnels(self, *kinds):
        """Configured tunnels: not the fallback devices a module creates
        (tunl0, gre0...) unless they are up."""
        return [l for l in self.links if l["tunnel"] and (not kinds or l["kind"] in kinds)
                and (l["up"] or not l["tunnel"]["fallback"])]

    def idle_fallbacks(self):
        return [l for l in self.links if l["tunnel"] and l["tunnel"]["fallback"] and not l["up"]]

    def tc_programs(self):
        return [(l, t) for l in self.links for t in l["tc"]]

    def xdp_programs(self):
        return [(l, x) for l in self.links for x in l["xdp"]]

    def to_dict(self):
        links = []
        for l in self.links:
            d = dict(l)
            d.pop("loopback", None)
            links.append(d)
        return {"netns": self.netns, "links": links, "fou": self.fou, "tcx": self.tcx}


def build_report(raw, netns=None):
    """Decode what gather() collected (or a recording) into a StaticReport.

    raw = {"links": [bytes], "qdiscs": [bytes], "filters": [(ifindex, parent,
    bytes)], "fou": [bytes] | None, "fou_reason": str|None, "ethtool": {ifname:
    (driver, {feature: "on"|"off"})}, "tcx": [(ifindex, direction, id)] | None,
    "tcx_reason": str|None, "prog_names": {id: name}}"""
    links = [link_from_raw(r) for r in raw.get("links", [])]
    by_index = dict((l["index"], l) for l in links)
    qdisc_kind = {}
    for r in raw.get("qdiscs", []):
        q = qdisc_from_raw(r)
        qdisc_kind[(q["index"], q["handle"])] = q["kind"]
    seen = set()
    for ifindex, parent, r in raw.get("filters", []):
        f = bpf_filter_from_raw(r)
        link = by_index.get(ifindex)
        if f is None or link is None:
            continue
        if parent == TC_H_CLSACT_INGRESS:
            direction, attach = "ingress", qdisc_kind.get((ifindex, 0xffff0000), "clsact")
        elif parent == TC_H_CLSACT_EGRESS:
            direction, attach = "egress", "clsact"
        elif parent == TC_H_INGRESS_QDISC:
            direction, attach = "ingress", "ingress"
        else:
            direction = "qdisc %x:" % (parent >> 16)
            attach = qdisc_kind.get((ifindex, parent), "qdisc")
        key = (ifindex, direction, f["prio"], f["id"], f["name"])
        if key in seen:
            continue
        seen.add(key)
        f.update(direction=direction, attach=attach)
        link["tc"].append(f)
    for ifindex, direction, prog_id in raw.get("tcx") or []:
        if ifindex in by_index:
            by_index[ifindex]["tc"].append({"direction": direction, "attach": "tcx",
                                            "name": None, "id": prog_id, "tag": None,
                                            "da": True, "prio": None, "in_hw": False})
    names = raw.get("prog_names") or {}
    for l in links:
        for p in l["tc"] + l["xdp"]:
            p["prog_name"] = names.get(p["id"])
            if p["name"] is None:
                p["name"] = p["prog_name"]
        eth = (raw.get("ethtool") or {}).get(l["name"])
        if eth:
            l["driver"], l["features"] = eth[0], dict(eth[1])
    if raw.get("fou") is None:
        fou = {"checked": False, "reason": raw.get("fou_reason") or "not checked", "ports": []}
    else:
        fou = {"checked": True, "reason": raw.get("fou_reason"),
               "ports": [fou_from_raw(r) for r in raw["fou"]]}
    if raw.get("tcx") is None:
        tcx = {"checked": False, "reason": raw.get("tcx_reason") or "not checked"}
    else:
        tcx = {"checked": True, "reason": None}
    return StaticReport(links, fou=fou, tcx=tcx, netns=netns)


# --- gathering: pyroute2 (netlink), ethtool ioctl, bpf syscall ------------------

def raw_bytes(msg):
    """The message as the kernel sent it, from a pyroute2 message object."""
    data = getattr(msg, "data", None)
    if data is not None:
        off = getattr(msg, "offset", 0) or 0
        return bytes(data[off:off + msg["header"]["length"]])
    msg.encode()                                    # pragma: no cover (other pyroute2)
    return bytes(msg.data)


class _InNetns(object):
    """Switch this thread into a network namespace (a name under /var/run/netns
    or a path such as /proc/PID/ns/net) and back. Sockets opened inside stay in
    that namespace after the switch back."""

    CLONE_NEWNET = 0x40000000

    def __init__(self, netns):
        self.netns = netns
        self.old = None

    def _setns(self, fd):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, self.CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    def __enter__(self):
        if self.netns is None:
            return self
        path = self.netns if "/" in self.netns else os.path.join("/var/run/netns", self.netns)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise EnvError("network namespace %s: %s" % (self.netns, e.strerror))
        try:
            self.old = os.open("/proc/thread-self/ns/net" if os.path.exists(
                "/proc/thread-self") else "/proc/self/ns/net", os.O_RDONLY)
            try:
                self._setns(fd)
            except OSError as e:
                os.close(self.old)
                self.old = None
                hint = " (needs root)" if e.errno == errno.EPERM else ""
                raise EnvError("cannot enter network namespace %s: %s%s"
                               % (self.netns, e.strerror, hint))
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            try:
                self._setns(self.old)
            finally:
                os.close(self.old)
                self.old = None
        return False


def _ipr():
    try:
        # pyroute2 is optional: only the STATIC section needs it
        from pyroute2 import IPRoute
    except ImportError:
        raise EnvError("the STATIC check needs pyroute2: install python3-pyroute2 "
                       "(or run with --no-static)")
    try:
        return IPRoute()
    except Exception as e:                          # pragma: no cover
        raise EnvError("netlink (pyroute2 IPRoute): %s" % e)


def _dump_filters(ipr, index, parent):
    try:
        return [raw_bytes(m) for m in ipr.get_filters(index=index, parent=parent)]
    except Exception:
        return []       # no such block: the dump fails, nothing is attached there


def gather_tc(ipr, links):
    """(qdisc messages, [(ifindex, parent, filter message)]): filters of the
    clsact (ffff:fff2 ingress, ffff:fff3 egress) and old ingress (ffff:) qdiscs,
    and of every other qdisc with a handle (bpf classifiers under htb/prio...)."""
    try:
        qdiscs = [raw_bytes(m) for m in ipr.get_qdiscs()]
    except Exception as e:
        raise EnvError("netlink qdisc dump failed: %s" % e)
    filters = []
    for r in qdiscs:
        q = qdisc_from_raw(r)
        if q["index"] not in links:
            continue
        if q["kind"] == "clsact":
            parents = (TC_H_CLSACT_INGRESS, TC_H_CLSACT_EGRESS)
        elif q["kind"] == "ingress":
            parents = (TC_H_INGRESS_QDISC,)
        elif q["handle"] >> 16:
            parents = (q["handle"],)
        else:
            continue
        for parent in parents:
            filters.extend((q["index"], parent, m) for m in _dump_filters(ipr, q["index"], parent))
    return qdiscs, filters


def gather_fou():
    """(messages | None, reason). FOU ports are generic netlink state, not
    links. The family list is dumped first: asking for "fou" by name would
    autoload the module, and no family means no FOU ports."""
    try:
        # optional, as in _ipr()
        from pyroute2.netlink import (genlmsg, ctrlmsg, NLM_F_REQUEST, NLM_F_DUMP,
                                      GENL_ID_CTRL, CTRL_CMD_GETFAMILY)
        from pyroute2.netlink.generic import GenericNetlinkSocket
        from pyroute2.netlink.nlsocket import NetlinkSocket
    except ImportError as e:
        return None, "not checked (pyroute2 without generic netlink: %s)" % e

    class foumsg(genlmsg):
        nla_map = (("FOU_ATTR_UNSPEC", "none"), ("FOU_ATTR_PORT", "be16"),
                   ("FOU_ATTR_AF", "uint8"), ("FOU_ATTR_IPPROTO", "uint8"),
                   ("FOU_ATTR_TYPE", "uint8"))

    flags = NLM_F_REQUEST | NLM_F_DUMP
    try:
        sock = GenericNetlinkSocket()
    except Exception as e:
        return None, "not checked (generic netlink socket: %s)" % e
    try:
        NetlinkSocket.bind(sock)
        sock.marshal.msg_map[GENL_ID_CTRL] = ctrlmsg
        req = ctrlmsg()
        req["cmd"] = CTRL_CMD_GETFAMILY
        req["version"] = 1
        fam = None
        for m in sock.nlm_request(req, msg_type=GENL_ID_CTRL, msg_flags=flags):
            if m.get_attr("CTRL_ATTR_FAMILY_NAME") == "fou":
                fam = m.get_attr("CTRL_ATTR_FAMILY_ID")
        if fam is None:
            return [], "no fou genl family (module not loaded)"
        sock.marshal.msg_map[fam] = foumsg
        req = foumsg()
        req["cmd"] = FOU_CMD_GET
        req["version"] = 1
        return [raw_bytes(m) for m in sock.nlm_request(req, msg_type=fam, msg_flags=flags)], None
    except Exception as e:
        return None, "not checked (fou genl dump: %s)" % e
    finally:
        sock.close()


# ethtool ioctl (3.6-safe, no pyroute2.ethtool needed, same on 0.5 and 0.7)
SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO, ETHTOOL_GSSET_INFO, ETHTOOL_GSTRINGS, ETHTOOL_GFEATURES = 3, 0x37, 0x1b, 0x3a
ETH_SS_FEATURES = 4


def _ethtool(sock, ifname, buf):
    ifr = struct.pack("16sP", ifname.encode()[:15], buf.buffer_info()[0])
    ifr += b"\0" * (40 - len(ifr))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)


def ethtool_info(ifname, sock=None):
    """(driver, {feature: "on"/"off"}) for FEATURES; (None, {}) when the
    device answers nothing."""
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    driver = None
    try:
        drv = array.array("B", struct.pack("I", ETHTOOL_GDRVINFO) + b"\0" * 196)
        try:
            _ethtool(sock, ifname, drv)
            driver = _asciiz(drv.tobytes()[4:36]) or None
        except (IOError, OSError):
            pass
        try:
            sset = array.array("B", struct.pack("=IIQ", ETHTOOL_GSSET_INFO, 0,
                                                1 << ETH_SS_FEATURES) + b"\0" * 4)
            _ethtool(sock, ifname, sset)
            n = struct.unpack_from("=I", sset.tobytes(), 16)[0]
            strings = array.array("B", struct.pack("=III", ETHTOOL_GSTRINGS, ETH_SS_FEATURES, n)
                                  + b"\0" * (32 * n))
            _ethtool(sock, ifname, strings)
            sb = strings.tobytes()
            names = [_asciiz(sb[12 + 32 * i:12 + 32 * (i + 1)]) for i in range(n)]
            blocks = (n + 31) // 32
            feats = array.array("B", struct.pack("=II", ETHTOOL_GFEATURES, blocks)
                                + b"\0" * (16 * blocks))
            _ethtool(sock, ifname, feats)
        except (IOError, OSError):
            return driver, {}
        raw = feats.tobytes()
        out = {}
        for i, name in enumerate(names):
            if name in FEATURES:
                active = struct.unpack_from("=I", raw, 8 + 16 * (i // 32) + 8)[0]
                out[name] = "on" if active & (1 << (i % 32)) else "off"
        return driver, out
    finally:
        if own:
            sock.close()


# bpf syscall: tcx attachments (6.6+, invisible to tc netlink) and program names
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "ppc64": 361, "s390x": 351,
               "armv7l": 386, "riscv64": 280}.get(platform.machine())
BPF_PROG_QUERY, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 16, 13, 15
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47


def _bpf(cmd, attr):
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    ret = libc.syscall(ctypes.c_long(BPF_SYSCALL), ctypes.c_int(cmd), buf,
                       ctypes.c_uint(len(attr)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret, buf.raw


def tcx_query(ifindex, attach_type):
    """Program ids attached through tcx (bpf_mprog) on ifindex."""
    ids = (ctypes.c_uint32 * 64)()
    attr = struct.pack("=IIIIQI", ifindex, attach_type, 0, 0, ctypes.addressof(ids), 64)
    attr += b"\0" * (72 - len(attr))
    _ret, out = _bpf(BPF_PROG_QUERY, attr)
    cnt = struct.unpack_from("=I", out, 24)[0]
    return [ids[i] for i in range(min(cnt, 64))]


def gather_tcx(indexes):
    """([(ifindex, direction, id)] | None, reason)."""
    if BPF_SYSCALL is None:
        return None, "tcx: not checked (bpf syscall number unknown here)"
    out = []
    for index in indexes:
        for attach_type, direction in ((BPF_TCX_INGRESS, "ingress"), (BPF_TCX_EGRESS, "egress")):
            try:
                out.extend((index, direction, i) for i in tcx_query(index, attach_type))
            except OSError as e:
                if e.errno == errno.EINVAL:
                    return None, "tcx: kernel without tcx (before 6.6)"
                if e.errno in (errno.EPERM, errno.EACCES):
                    return None, "tcx: not checked (needs root)"
                if e.errno == errno.ENOSYS:
                    return None, "tcx: not checked (no bpf syscall)"
                # ENODEV etc.: the link went away, ignore
    return out, None


def prog_name(prog_id):
    """The program's own name (bpf_prog_info.name) or None (needs root)."""
    if BPF_SYSCALL is None or not prog_id:
        return None
    try:
        fd, _ = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("=III", prog_id, 0, 0) + b"\0" * 4)
    except OSError:
        return None
    try:
        info = ctypes.create_string_buffer(96)
        attr = struct.pack("=IIQ", fd, 96, ctypes.addressof(info))
        try:
            _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        except OSError:
            return None
        return _asciiz(info.raw[64:80]) or None
    finally:
        os.close(fd)


def gather(netns=None):
    """Everything build_report() needs, as raw bytes and plain values."""
    with _InNetns(netns):
        ipr = _ipr()
        try:
            try:
                links = [raw_bytes(m) for m in ipr.get_links()]
            except Exception as e:
                raise EnvError("netlink link dump failed: %s" % e)
            decoded = [link_from_raw(r) for r in links]
            qdiscs, filters = gather_tc(ipr, set(l["index"] for l in decoded))
        finally:
            ipr.close()
        fou, fou_reason = gather_fou()
        tcx, tcx_reason = gather_tcx([l["index"] for l in decoded if not l["loopback"]])
        ethtool = {}
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for l in decoded:
                if l["loopback"] or l["kind"] not in (None, "veth"):
                    continue
                ethtool[l["name"]] = ethtool_info(l["name"], sock)
        finally:
            sock.close()
        ids = set()
        for r in filters:
            f = bpf_filter_from_raw(r[2])
            if f and f["id"]:
                ids.add(f["id"])
        for l in decoded:
            ids.update(x["id"] for x in l["xdp"] if x["id"])
        ids.update(t[2] for t in tcx or [])
        names = {}
        for i in ids:
            n = prog_name(i)
            if n:
                names[i] = n
    return {"links": links, "qdiscs": qdiscs, "filters": filters, "fou": fou,
            "fou_reason": fou_reason, "ethtool": ethtool, "tcx": tcx, "tcx_reason": tcx_reason,
            "prog_names": names}


def collect(netns=None):
    """The STATIC report of the tool's network namespace, or of `netns` (a
    name from `ip netns` or a /proc/PID/ns/net path; needs root)."""
    return build_report(gather(netns), netns=netns)


# --- rendering ------------------------------------------------------------------

def _tunnel_text(l):
    t = l["tunnel"]
    txt = "%s %s" % (l["name"], l["kind"])
    if l["kind"] in ("vxlan", "geneve"):
        if t.get("external"):
            txt += " external"
        if "vni" in t:
            txt += " VNI %s" % t["vni"]
    if "port" in t:
        txt += " port %s" % t["port"]
    for key in ("local", "remote", "group"):
        if key in t:
            txt += " %s %s" % (key, t[key])
    if l["kind"] not in ("vxlan", "geneve") and t.get("external"):
        txt += " external"
    if t.get("encap"):
        txt += " encap %s dport %s (UDP)" % (t["encap"], t.get("encap_dport", "?"))
    if "udp_csum" in t:
        txt += " udpcsum=%s" % ("on" if t["udp_csum"] else "off")
    for key in ("udp_zero_csum6_tx", "udp_zero_csum6_rx", "remcsum_tx", "remcsum_rx",
                "gbp", "gpe"):
        if t.get(key):
            txt += " " + key
    if not l["up"]:
        txt += " (down)"
    return txt


def _prog_text(l, p):
    txt = "%s %s %s id %s" % (l["name"], p["direction"], p["name"], p["id"])
    if p.get("attach") not in ("clsact", None):
        txt += " (%s)" % p["attach"]
    if p.get("in_hw"):
        txt += " in_hw"
    return txt


def _sorted_ports(ports):
    return sorted(ports, key=lambda p: (p["port"] or 0, p["family"] or 0))


def render_lines(report, verbose=False):
    out = []
    texts = [_tunnel_text(l) for l in report.tunnels()] or ["none"]
    idle = report.idle_fallbacks()
    if idle:
        texts.append("module fallback devices, down: %s" % " ".join(l["name"] for l in idle))
    out.append("STATIC: tunnel devices: %s" % "; ".join(texts))
    out.append("STATIC: tc BPF programs: %s" % ("; ".join(
        _prog_text(l, p) for l, p in report.tc_programs()) or "none"))
    if verbose and not report.tcx["checked"]:
        out.append("STATIC: %s" % report.tcx["reason"])
    out.append("STATIC: XDP programs: %s" % ("; ".join(
        "%s %s%s id %s" % (l["name"], x["mode"], " " + x["name"] if x["name"] else "", x["id"])
        for l, x in report.xdp_programs()) or "none"))
    fou = report.fou
    if fou["checked"]:
        out.append("STATIC: FOU/GUE ports: %s" % ("; ".join(
            "%s/udp %s%s ipv%s" % (p["port"], p["type"], " ipproto %s" % p["ipproto"]
                                   if p["type"] == "fou" else "", p["family"])
            for p in _sorted_ports(fou["ports"])) or "none") + (" (%s)" % fou["reason"] if fou["reason"]
                                                  and verbose else ""))
    else:
        out.append("STATIC: FOU/GUE ports: %s" % fou["reason"])    # "not checked (...)"
    for l in report.links:
        if l["features"] and (verbose or l["driver"] not in (None, "veth")):
            out.append("STATIC: offloads %s (%s): %s" % (l["name"], l["driver"], " ".join(
                "%s=%s" % kv for kv in sorted(l["features"].items()))))
    out.append(verdict(report))
    return out


def _vni_list(links):
    """`vx0 (VNI 42, port 4789)`; collect-metadata devices say `external`."""
    return ", ".join(
        "%s (%sport %s)" % (l["name"], "VNI %s, " % l["tunnel"]["vni"] if "vni" in l["tunnel"]
                            else "external, ", l["tunnel"].get("port"))
        for l in links)


def verdict(report):
    parts = []
    vx = report.tunnels("vxlan")
    if vx:
        parts.append("VXLAN devices: %s" % _vni_list(vx))
    else:
        parts.append("No VXLAN devices")
    gen = report.tunnels("geneve")
    if gen:
        parts.append("GENEVE devices: %s" % _vni_list(gen))
    ipip = [l["name"] for l in report.tunnels("ipip")]
    if ipip:
        parts.append("IPIP configured (%s)" % ", ".join(ipip))
    for kind in ("sit", "ip6tnl", "gre", "gretap", "ip6gre", "ip6gretap", "erspan",
                 "ip6erspan", "bareudp"):
        names = [l["name"] for l in report.tunnels(kind)]
        if names:
            parts.append("%s: %s" % (kind.upper(), ", ".join(names)))
    udp = [l["name"] for l in report.tunnels() if l["tunnel"].get("encap") in ("fou", "gue")]
    if udp:
        parts.append("UDP-encapsulated (FOU/GUE) tunnels: %s" % ", ".join(udp))
    if report.fou["ports"]:
        parts.append("FOU/GUE ports: %s" % ", ".join(
            str(p["port"]) for p in _sorted_ports(report.fou["ports"])))
    ntc = len(report.tc_programs())
    nxdp = len(report.xdp_programs())
    if ntc:
        parts.append("%d tc BPF and %d XDP programs attached: %s" % (ntc, nxdp, BPF_ADVICE))
    elif nxdp:
        parts.append("0 tc BPF and %d XDP programs attached: XDP can encapsulate in UDP "
                     "without a device (bpf_xdp_adjust_head) but sets no gso_type" % nxdp)
    else:
        parts.append("no tc/XDP BPF programs")
    if not vx:
        parts.append("a missing VXLAN device does not rule out UDP_TUNNEL (GRO of UDP "
                     "tunnel sockets, BPF encapsulation and the host side set it too)")
    return "STATIC: " + ", ".join(parts)
