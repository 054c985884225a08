"""The detector's STATIC section: what on this host can put SKB_GSO_UDP_TUNNEL
on a packet, read from netlink (pyroute2) and the ethtool ioctl, never from
`ip` output. Needs no bcc; `--static-only` runs it alone. Covers the tool's
own network namespace.

collect() -> StaticReport; render_lines(report) -> lines; verdict(report) ->
one line; report.to_dict() -> the --json form: {"links": [{"name", "index",
"kind", "driver", "vxlan": {...} | null, "encap": "fou"|"gue"|null,
"xdp_prog_id", "tc": [{"direction", "name", "id"}], "features": {...}}]}.
"""
import array
import fcntl
import socket
import struct

from skbtrace.errors import EnvError

TUNNEL_KINDS = ("vxlan", "geneve", "ipip", "sit", "gre", "gretap", "ip6gre", "ip6gretap",
                "ip6tnl", "bareudp", "fou")
ENCAP_TYPES = {1: "fou", 2: "gue"}
TC_PARENTS = ((0xfffffff2, "ingress"), (0xfffffff3, "egress"))
TCA_OPTIONS, TCA_BPF_NAME, TCA_BPF_ID = 2, 7, 11
FEATURES = ("tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation", "rx-gro-list",
            "rx-udp-gro-forwarding", "tx-gso-list")


class StaticReport(object):
    def __init__(self, links):
        self.links = links

    def to_dict(self):
        return {"links": self.links}


# --- netlink decoding (also fed with recorded messages by the unit tests) ------

def _nlas(buf, off, end):
    while off + 4 <= end:
        ln, typ = struct.unpack_from("=HH", buf, off)
        if ln < 4:
            break
        yield typ & 0x3fff, buf[off + 4:off + ln]
        off += (ln + 3) & ~3


def bpf_filter_from_raw(raw):
    """(name, id) of a tc "bpf" filter from the raw RTM_NEWTFILTER message.
    pyroute2 0.7.2 does not decode TCA_BPF_ID (type 11) and keeps no value for
    it, so the attributes are walked here."""
    name, prog_id = None, None
    for typ, val in _nlas(raw, 16 + 20, len(raw)):     # nlmsghdr + struct tcmsg
        if typ != TCA_OPTIONS:
            continue
        for t2, v2 in _nlas(val, 0, len(val)):
            if t2 == TCA_BPF_NAME:
                name = v2.split(b"\0", 1)[0].decode("ascii", "replace")
            elif t2 == TCA_BPF_ID and len(v2) >= 4:
                prog_id = struct.unpack_from("=I", v2)[0]
    return name, prog_id


def link_from_msg(msg):
    """The parts of an RTM_NEWLINK message (pyroute2 ifinfmsg) we report."""
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info else None
    data = info.get_attr("IFLA_INFO_DATA") if info else None
    link = {"name": msg.get_attr("IFLA_IFNAME"), "index": msg["index"], "kind": kind,
            "driver": None, "vxlan": None, "encap": None, "xdp_prog_id": None, "tc": [],
            "features": {}}
    if kind == "vxlan" and data is not None:
        port = data.get_attr("IFLA_VXLAN_PORT")
        link["vxlan"] = {"vni": data.get_attr("IFLA_VXLAN_ID"), "port": port,
                         "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                         "remote": data.get_attr("IFLA_VXLAN_GROUP"),
                         "udpcsum": bool(data.get_attr("IFLA_VXLAN_UDP_CSUM"))}
    elif data is not None and kind in ("ipip", "sit", "gre", "gretap"):
        for attr in ("IFLA_IPTUN_ENCAP_TYPE", "IFLA_GRE_ENCAP_TYPE"):
            try:
                t = data.get_attr(attr)
            except Exception:
                t = None
            if t:
                link["encap"] = ENCAP_TYPES.get(t, "type%d" % t)
    xdp = msg.get_attr("IFLA_XDP")
    if xdp is not None:
        pid = xdp.get_attr("IFLA_XDP_PROG_ID")
        link["xdp_prog_id"] = pid or None
    return link


# --- ethtool ioctl (3.6-safe, no pyroute2.ethtool needed) -----------------------

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO, ETHTOOL_GSSET_INFO, ETHTOOL_GSTRINGS, ETHTOOL_GFEATURES = 3, 0x37, 0x1b, 0x3a
ETH_SS_FEATURES = 4


def _ethtool(sock, ifname, buf):
    ifr = struct.pack("16sP", ifname.encode()[:15], buf.buffer_info()[0])
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)


def ethtool_info(ifname):
    """(driver, {feature: on/off}) or (None, {}) when the device says nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        drv = array.array("B", struct.pack("I", ETHTOOL_GDRVINFO) + b"\0" * 196)
        try:
            _ethtool(sock, ifname, drv)
            driver = drv.tobytes()[4:36].split(b"\0", 1)[0].decode() or None
        except (IOError, OSError):
            driver = None
        sset = array.array("B", struct.pack("=IIQ", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES)
                           + b"\0" * 4)
        try:
            _ethtool(sock, ifname, sset)
        except (IOError, OSError):
            return driver, {}
        n = struct.unpack_from("=I", sset.tobytes(), 16)[0]
        strings = array.array("B", struct.pack("=III", ETHTOOL_GSTRINGS, ETH_SS_FEATURES, n)
                              + b"\0" * (32 * n))
        _ethtool(sock, ifname, strings)
        names = [strings.tobytes()[12 + 32 * i:12 + 32 * (i + 1)].split(b"\0", 1)[0].decode()
                 for i in range(n)]
        blocks = (n + 31) // 32
        feats = array.array("B", struct.pack("=II", ETHTOOL_GFEATURES, blocks) + b"\0" * (16 * blocks))
        _ethtool(sock, ifname, feats)
        raw = feats.tobytes()
        out = {}
        for i, name in enumerate(names):
            if name in FEATURES:
                active = struct.unpack_from("=I", raw, 8 + 16 * (i // 32) + 8)[0]
                out[name] = "on" if active & (1 << (i % 32)) else "off"
        return driver, out
    finally:
        sock.close()


# --- collection ---------------------------------------------------------------

def collect():
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise EnvError("the STATIC check needs pyroute2: install python3-pyroute2 "
                       "(or run with --no-static)")
    try:
        ipr = IPRoute()
    except Exception as e:
        raise EnvError("netlink: %s" % e)
    links = []
    try:
        for msg in ipr.get_links():
            link = link_from_msg(msg)
            for parent, direction in TC_PARENTS:
                try:
                    filters = ipr.get_filters(index=link["index"], parent=parent)
                except Exception:
                    continue
                for f in filters:
                    if f.get_attr("TCA_KIND") != "bpf":
                        continue
                    raw = bytes(f.data[f.offset:f.offset + f["header"]["length"]])
                    name, prog_id = bpf_filter_from_raw(raw)
                    if name is None and prog_id is None:
                        continue        # the chain head without options
                    link["tc"].append({"direction": direction, "name": name, "id": prog_id})
            if link["kind"] in (None, "veth") or link["name"].startswith(("eth", "en")):
                link["driver"], link["features"] = ethtool_info(link["name"])
            links.append(link)
    finally:
        ipr.close()
    return StaticReport(links)


# --- rendering ------------------------------------------------------------------

def _tunnel_text(l):
    if l["vxlan"]:
        v = l["vxlan"]
        return "%s vxlan VNI %s port %s%s%s udpcsum=%s" % (
            l["name"], v["vni"], v["port"], " local %s" % v["local"] if v["local"] else "",
            " remote %s" % v["remote"] if v["remote"] else "", "on" if v["udpcsum"] else "off")
    txt = "%s %s" % (l["name"], l["kind"])
    if l["encap"]:
        txt += " encap %s (UDP)" % l["encap"]
    return txt


def render_lines(report, verbose=False):
    out = []
    tunnels = [l for l in report.links if l["kind"] in TUNNEL_KINDS]
    out.append("STATIC: tunnel devices: %s" % ("; ".join(_tunnel_text(l) for l in tunnels)
                                                 or "none"))
    tc = ["%s %s %s id %s" % (l["name"], t["direction"], t["name"], t["id"])
          for l in report.links for t in l["tc"]]
    out.append("STATIC: tc BPF programs: %s" % ("; ".join(tc) or "none"))
    xdp = ["%s id %s" % (l["name"], l["xdp_prog_id"]) for l in report.links if l["xdp_prog_id"]]
    out.append("STATIC: XDP programs: %s" % ("; ".join(xdp) or "none"))
    for l in report.links:
        if l["features"] and (verbose or l["driver"] not in (None, "veth")):
            out.append("STATIC: offloads %s (%s): %s" % (l["name"], l["driver"], " ".join(
                "%s=%s" % kv for kv in sorted(l["features"].items()))))
    out.append(verdict(report))
    return out


def verdict(report):
    links = report.links
    vx = [l for l in links if l["kind"] == "vxlan"]
    parts = []
    if vx:
        parts.append("VXLAN devices: %s" % ", ".join(
            "%s (VNI %s, port %s)" % (l["name"], l["vxlan"]["vni"] if l["vxlan"] else "?",
                                      l["vxlan"]["port"] if l["vxlan"] else "?") for l in vx))
    else:
        parts.append("No VXLAN devices")
    ipip = [l["name"] for l in links if l["kind"] == "ipip"]
    if ipip:
        parts.append("IPIP configured (%s)" % ", ".join(ipip))
    for kind in ("geneve", "gre", "gretap", "sit", "bareudp"):
        names = [l["name"] for l in links if l["kind"] == kind]
        if names:
            parts.append("%s: %s" % (kind.upper(), ", ".join(names)))
    fou = [l["name"] for l in links if l["encap"]]
    if fou:
        parts.append("UDP-encapsulated (FOU/GUE) tunnels: %s" % ", ".join(fou))
    ntc = sum(len(l["tc"]) for l in links)
    nxdp = len([l for l in links if l["xdp_prog_id"]])
    if ntc or nxdp:
        parts.append("%d tc BPF and %d XDP programs attached: BPF can encapsulate in UDP "
                     "without a device (bpf_skb_adjust_room ENCAP_L4_UDP sets UDP_TUNNEL)"
                     % (ntc, nxdp))
    else:
        parts.append("no tc/XDP BPF programs")
    if not vx:
        parts.append("no VXLAN device alone does not rule out UDP_TUNNEL (GRO for UDP tunnel "
                     "sockets, BPF encap and the host side set it too)")
    return "STATIC: " + ", ".join(parts)
