"""Decode the packet in an skb's head buffer, and write it as a pcap.

Post-mortem helper: the bytes come from a vmcore (`crash> rd -8 HEAD N`), the
offsets from `struct sk_buff` (mac_header, network_header, transport_header,
inner_*: u16 offsets from skb->head, 0xffff = unset; tail: offset of the end
of the linear data on 64-bit kernels).

decode() follows the skb's own offsets, as the kernel does, rather than
guessing from ports: the lab's bpf_skb_adjust_room(BPF_ADJ_ROOM_ENCAP_L4_UDP)
sends to UDP port 6081 with no Geneve header at all, the inner IPv4 header
right after the UDP header, which inner_mac_header/inner_network_header say
and the port does not. A tunnel header is decoded when the gap between the
outer L4 header and inner_mac_header holds one; when the inner offsets are
unset, VXLAN (4789, 8472) and Geneve (6081) are decoded by port only when the
header checks out, and the layer says so.

Inside __skb_gso_segment() a tunnel GSO handler (__skb_udp_tunnel_segment,
gre_gso_segment) pulls the outer headers and moves mac/network/transport_header
to the inner packet; the outer headers stay in the head from
SKB_GSO_CB(skb)->mac_offset on (skb->cb + 32, the headroom at
__skb_gso_segment's entry), and skb_segment() copies them in front of every
segment. Given that offset (offsets["gso_mac_offset"]; a crash transcript's
skb->cb has it), decode() decodes them as the outer packet and the skb's
offsets as the inner one.

Nothing here reads past the bytes given (nor past `tail`, when given: bytes
after it in the head are not packet data). A header that does not fit becomes
a layer with "truncated": True and a note (with the fields of its fixed
part when that part is there). Every layer is a dict:
  {"name": "ipv4", "offset": 240, "length": 20, "inner": False,
   "fields": {...}, "notes": [...], "truncated": False}
offset is from skb->head. decode() returns a list of them (a Decoded, whose
.notes hold what concerns no single layer).

write_pcap() writes classic pcap (LINKTYPE_ETHERNET). skb_packet() cuts a
packet from mac_header (from gso_mac_offset when decode() used it) to tail;
when mac_header is unset or equals network_header (no link-layer header,
e.g. after the kernel's tunnel segmentation moved the offsets to the inner
packet, and no gso_mac_offset) it SYNTHESIZES an Ethernet header: both MACs
00:00:00:00:00:00, ethertype from the IP version; the packet's note says so.
orig_len is the length on the wire as the skb counts it: skb->len (which
counts from skb->data) plus the bytes between the packet's start and
skb->data (skb->data may be past mac_header, e.g. at tcp_gso_segment, or at
it after skb_segment's __skb_push); a caplen below it means the rest is in
page frags or the frag_list, not in the head.
"""
import socket
import struct


UNSET = 0xffff

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86dd
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88a8
ETH_P_TEB = 0x6558

IPPROTO_NAMES = {1: "icmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre",
                 58: "icmpv6", 132: "sctp"}
VXLAN_PORTS = (4789, 8472)
GENEVE_PORT = 6081
TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
IPV6_EXT = (0, 43, 60)   # hop-by-hop, routing, destination options: walked

LINKTYPE_ETHERNET = 1
PCAP_MAGIC = 0xa1b2c3d4
SNAPLEN = 262144


class PacketError(ValueError):
    """Arguments that are not bytes and offsets (never raised for the
    content of the bytes: that is reported in the layers)."""


class Decoded(list):
    """The layers, outermost first; .notes: what concerns no single layer;
    .gso_mac_offset: the offset the outer headers were decoded from when
    decode() used offsets["gso_mac_offset"], else None."""

    def __init__(self):
        list.__init__(self)
        self.notes = []
        self.gso_mac_offset = None

    @property
    def truncated(self):
        return any(layer.get("truncated") for layer in self)


def _is_set(v):
    return v is not None and v != UNSET


def _mac(b):
    return ":".join("%02x" % c for c in bytearray(b))


def _ipv6_text(b):
    try:
        return socket.inet_ntop(socket.AF_INET6, bytes(b))
    except (ValueError, OSError):
        return ":".join("%x" % w for w in struct.unpack("!8H", bytes(b)))


class _View(object):
    """Bytes at head+start .. head+limit, read by offsets from head."""

    def __init__(self, data, start, tail):
        self.data = bytes(data)
        self.start = start
        self.end = start + len(self.data)
        self.tail = tail
        self.limit = self.end if tail is None else min(self.end, tail)

    def get(self, off, n):
        """(bytes, None) or (None, why not)."""
        if off < 0 or n < 0:
            return None, "negative offset"
        if off < self.start:
            return None, ("head+%d is before the bytes given (they start at head+%d)"
                          % (off, self.start))
        if self.tail is not None and off + n > self.tail:
            return None, ("needs %d bytes at head+%d: past skb->tail (head+%d), "
                          "not linear data" % (n, off, self.tail))
        if off + n > self.end:
            return None, ("needs %d bytes at head+%d, %d given (the bytes end at head+%d)"
                          % (n, off, max(0, self.end - off), self.end))
        return self.data[off - self.start:off - self.start + n], None


def _layer(name, off, length, inner, fields=None, notes=None):
    return {"name": name, "offset": off, "length": length, "inner": inner,
            "fields": fields or {}, "notes": list(notes or []), "truncated": False}


def _truncated(name, off, inner, why):
    """A header that does not fit: its name and why, no fields."""
    layer = _layer(name, off, 0, inner, notes=[why])
    layer["truncated"] = True
    return layer


def _ethernet(view, off, inner, span=None):
    """Ethernet (and VLAN tags) at off. Returns (layer, ethertype, end)."""
    b, why = view.get(off, 14)
    if b is None:
        return _truncated("ethernet", off, inner, why), None, None
    ethertype = struct.unpack("!H", b[12:14])[0]
    fields = {"dst": _mac(b[0:6]), "src": _mac(b[6:12])}
    end = off + 14
    vlans = []
    while ethertype in (ETH_P_8021Q, ETH_P_8021AD) and len(vlans) < 4:
        t, why = view.get(end, 4)
        if t is None:
            break
        tci, ethertype = struct.unpack("!HH", t)
        vlans.append(tci & 0xfff)
        end += 4
    if vlans:
        fields["vlans"] = vlans
    fields["ethertype"] = "0x%04x" % ethertype
    layer = _layer("ethernet", off, end - off, inner, fields)
    if span is not None and span != end - off:
        layer["notes"].append("the offsets leave %d bytes for it, the header is %d"
                              % (span, end - off))
    return layer, ethertype, end


def _ipv4(view, off, inner):
    b, why = view.get(off, 20)
    if b is None:
        return _truncated("ipv4", off, inner, why), None, None
    vihl, tos, tot, ident, frag, ttl, proto, csum = struct.unpack("!BBHHHBBH", b[:12])
    ihl = vihl & 0xf
    flags = [n for bit, n in ((0x4000, "DF"), (0x2000, "MF")) if frag & bit]
    fields = {"version": vihl >> 4, "ihl": ihl, "tos": tos, "total_length": tot,
              "id": ident, "flags": "|".join(flags), "frag_offset": (frag & 0x1fff) * 8,
              "ttl": ttl, "protocol": proto, "protocol_name": IPPROTO_NAMES.get(proto, ""),
              "checksum": "0x%04x" % csum,
              "src": socket.inet_ntoa(b[12:16]), "dst": socket.inet_ntoa(b[16:20])}
    layer = _layer("ipv4", off, max(ihl, 5) * 4, inner, fields)
    if ihl < 5:
        layer["notes"].append("ihl %d < 5: not a valid IPv4 header" % ihl)
        return layer, None, None
    if ihl > 5:
        opt, why = view.get(off + 20, ihl * 4 - 20)
        if opt is None:
            layer["notes"].append("options: " + why)
            layer["truncated"] = True
            return layer, None, None
        else:
            fields["options_length"] = len(opt)
    if frag & 0x1fff:
        layer["notes"].append("a non-first fragment: no L4 header here")
        return layer, None, None
    return layer, proto, off + ihl * 4


def _ipv6(view, off, inner):
    b, why = view.get(off, 40)
    if b is None:
        return _truncated("ipv6", off, inner, why), None, None
    vtf, plen, nxt, hop = struct.unpack("!IHBB", b[:8])
    fields = {"version": vtf >> 28, "traffic_class": (vtf >> 20) & 0xff,
              "flow_label": vtf & 0xfffff, "payload_length": plen, "next_header": nxt,
              "hop_limit": hop, "src": _ipv6_text(b[8:24]), "dst": _ipv6_text(b[24:40])}
    layer = _layer("ipv6", off, 40, inner, fields)
    end = off + 40
    walked = []
    while nxt in IPV6_EXT and len(walked) < 8:
        e, why = view.get(end, 2)
        if e is None:
            layer["notes"].append("extension header: " + why)
            layer["truncated"] = True
            return layer, None, None
        walked.append(nxt)
        nxt = bytearray(e)[0]
        end += (bytearray(e)[1] + 1) * 8
    if walked:
        fields["extension_headers"] = walked
        fields["protocol"] = nxt
    fields["protocol_name"] = IPPROTO_NAMES.get(nxt, "")
    return layer, nxt, end


def _l3(view, off, inner):
    """IPv4 or IPv6 by the version nibble. (layer, l4 proto, l4 offset)."""
    b, why = view.get(off, 1)
    if b is None:
        return _truncated("ip", off, inner, why), None, None
    version = bytearray(b)[0] >> 4
    if version == 4:
        return _ipv4(view, off, inner)
    if version == 6:
        return _ipv6(view, off, inner)
    return _layer("unknown_l3", off, 0, inner, {"first_byte": "0x%02x" % bytearray(b)[0]},
                  ["first byte 0x%02x: neither IPv4 nor IPv6" % bytearray(b)[0]]), None, None


def _tcp(view, off, inner):
    b, why = view.get(off, 20)
    if b is None:
        return _truncated("tcp", off, inner, why), None
    sport, dport, seq, ack, doff_flags, win, csum, urg = struct.unpack("!HHIIHHHH", b)
    doff = doff_flags >> 12
    flags = [n for i, n in enumerate(TCP_FLAGS) if doff_flags & (1 << i)]
    fields = {"sport": sport, "dport": dport, "seq": seq, "ack": ack,
              "header_length": doff * 4, "flags": "|".join(flags), "window": win,
              "checksum": "0x%04x" % csum, "urgent": urg}
    layer = _layer("tcp", off, max(doff, 5) * 4, inner, fields)
    if doff < 5:
        layer["notes"].append("data offset %d < 5: not a valid TCP header" % doff)
        return layer, None
    o, why = view.get(off + 20, doff * 4 - 20)
    if o is None:
        layer["notes"].append("options: " + why)
        layer["truncated"] = True
        return layer, None
    return layer, off + doff * 4


def _udp(view, off, inner):
    b, why = view.get(off, 8)
    if b is None:
        return _truncated("udp", off, inner, why), None
    sport, dport, length, csum = struct.unpack("!HHHH", b)
    return _layer("udp", off, 8, inner, {"sport": sport, "dport": dport, "length": length,
                                         "checksum": "0x%04x" % csum}), off + 8


def _ports_only(name, view, off, inner):
    b, why = view.get(off, 4)
    if b is None:
        return _truncated(name, off, inner, why), None
    sport, dport = struct.unpack("!HH", b)
    return _layer(name, off, 4, inner, {"sport": sport, "dport": dport}), None


def _icmp(name, view, off, inner):
    b, why = view.get(off, 4)
    if b is None:
        return _truncated(name, off, inner, why), None
    t, code, csum = struct.unpack("!BBH", b)
    return _layer(name, off, 4, inner, {"type": t, "code": code,
                                        "checksum": "0x%04x" % csum}), None


def _gre(view, off, inner):
    b, why = view.get(off, 4)
    if b is None:
        return _truncated("gre", off, inner, why), None, None
    flags, proto = struct.unpack("!HH", b)
    length = 4 + 4 * sum(1 for bit in (0x8000, 0x2000, 0x1000) if flags & bit)
    layer = _layer("gre", off, length, inner, {"flags": "0x%04x" % flags,
                                                "protocol": "0x%04x" % proto})
    return layer, proto, off + length


def _l4(view, proto, off, inner):
    """(layer, end of the header or None)."""
    if proto == 6:
        return _tcp(view, off, inner)
    if proto == 17:
        return _udp(view, off, inner)
    if proto == 132:
        return _ports_only("sctp", view, off, inner)
    if proto == 1:
        return _icmp("icmp", view, off, inner)
    if proto == 58:
        return _icmp("icmpv6", view, off, inner)
    return None, None


def _vxlan(view, off, inner):
    b, why = view.get(off, 8)
    if b is None:
        return _truncated("vxlan", off, inner, why), False
    flags, vni = struct.unpack("!B3xI", b)
    layer = _layer("vxlan", off, 8, inner, {"flags": "0x%02x" % flags, "vni": vni >> 8})
    return layer, bool(flags & 0x08)


def _geneve(view, off, inner):
    b, why = view.get(off, 8)
    if b is None:
        return _truncated("geneve", off, inner, why), False
    vo, oc, proto, vni = struct.unpack("!BBHI", b)
    opt_len = (vo & 0x3f) * 4
    layer = _layer("geneve", off, 8 + opt_len, inner, {
        "version": vo >> 6, "options_length": opt_len, "oam": bool(oc & 0x80),
        "critical": bool(oc & 0x40), "protocol": "0x%04x" % proto, "vni": vni >> 8})
    valid = (vo >> 6) == 0 and proto in (ETH_P_TEB, ETH_P_IP, ETH_P_IPV6)
    return layer, valid


def _ip_and_l4(out, view, nh, th, inner):
    """L3 at nh, then L4 at th (when set and past nh; else where the L3
    header ends). Returns (l3 layer, l4 layer or None, proto, l4 end)."""
    l3, proto, l4_off = _l3(view, nh, inner)
    out.append(l3)
    if proto is None:
        return l3, None, None, None
    if _is_set(th) and th > nh:
        if l4_off is not None and th != l4_off:
            l3["notes"].append("transport header at head+%d, the L3 header ends at head+%d: "
                               "following the skb's offset" % (th, l4_off))
        l4_off = th
    if proto in (4, 41, 47):
        return l3, None, proto, l4_off
    l4, end = _l4(view, proto, l4_off, inner)
    if l4 is not None:
        out.append(l4)
    return l3, l4, proto, end


def decode(data, offsets, start=0):
    """The layers of the packet in `data`, the bytes of an skb's head buffer
    from head+start on. offsets: mac_header, network_header, transport_header,
    inner_mac_header, inner_network_header, inner_transport_header (from
    head; 0xffff or None: unset), and optionally encapsulation (0/1),
    protocol (skb->protocol, host order), tail (end of the linear data),
    gso_mac_offset (SKB_GSO_CB(skb)->mac_offset, only for an skb inside
    __skb_gso_segment: see _pulled)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError("data must be bytes, not %s" % type(data).__name__)
    if not isinstance(offsets, dict):
        raise PacketError("offsets must be a dict")
    try:
        o = dict((k, None if v is None else int(v)) for k, v in offsets.items())
        start = int(start)
    except (TypeError, ValueError):
        raise PacketError("offsets must be integers")
    out = Decoded()
    view = _View(data, start, o.get("tail"))
    mac, nh, th = o.get("mac_header"), o.get("network_header"), o.get("transport_header")
    imac, inh, ith = (o.get("inner_mac_header"), o.get("inner_network_header"),
                      o.get("inner_transport_header"))
    gso_mac = o.get("gso_mac_offset")
    if gso_mac is not None and _is_set(mac) and _is_set(nh) and 0 <= gso_mac < mac:
        pulled = _pulled(view, gso_mac, mac, nh, th, o.get("protocol"))
        if isinstance(pulled, Decoded):
            _payload_note(pulled, view)
            return pulled
        out.notes.append(pulled)
    ethertype = None
    if _is_set(mac) and _is_set(nh) and nh > mac:
        layer, ethertype, end = _ethernet(view, mac, False, nh - mac)
        out.append(layer)
    elif _is_set(mac) and mac == nh:
        out.notes.append("mac_header == network_header: no link-layer header in the head")
    elif not _is_set(mac):
        out.notes.append("mac_header unset")
        if not _is_set(nh):
            out.notes.append("network_header unset: nothing to decode")
            return out
    elif _is_set(nh):
        out.notes.append("mac_header (%d) after network_header (%d)" % (mac, nh))
    if not _is_set(nh):
        if ethertype in (ETH_P_IP, ETH_P_IPV6):
            nh = mac + out[-1]["length"]
            out.notes.append("network_header unset: IP after the Ethernet header")
        else:
            out.notes.append("network_header unset: nothing more to decode")
            return out
    protocol = o.get("protocol")
    l3, l4, proto, l4_end = _ip_and_l4(out, view, nh, th, False)
    want = {4: ETH_P_IP, 6: ETH_P_IPV6}.get(l3["fields"].get("version"))
    for what, value in (("ethertype", ethertype), ("skb->protocol", protocol)):
        if want and value is not None and value not in (want, ETH_P_8021Q, ETH_P_8021AD):
            l3["notes"].append("%s 0x%04x does not say IPv%d" % (what, value,
                                                                  l3["fields"]["version"]))
    if proto is None:
        return out
    inner_set = _is_set(inh) and inh != 0 and inh != nh
    encap = o.get("encapsulation")
    if inner_set:
        if encap == 0:
            out.notes.append("skb->encapsulation is 0: the kernel does not use the inner "
                             "offsets; decoded as they stand")
        _inner_by_offsets(out, view, proto, l4, l4_end, imac, inh, ith)
    elif proto in (4, 41):
        out.notes.append("IP-in-IP: the inner header follows the outer one")
        _ip_and_l4(out, view, l4_end if l4_end is not None else th, UNSET, True)
    elif proto == 47:
        _gre_by_header(out, view, l4_end if l4_end is not None else th)
    elif l4 is not None and l4["name"] == "udp" and l4_end is not None:
        _tunnel_by_port(out, view, l4, l4_end)
    _payload_note(out, view)
    return out


def _pulled(view, gso_mac, mac, nh, th, protocol):
    """The packet of an skb inside __skb_gso_segment() whose tunnel headers a
    GSO handler has pulled: __skb_gso_segment() saved the headroom at its
    entry, where the outermost MAC header was, in SKB_GSO_CB(skb)->mac_offset
    (net/core/dev.c); __skb_udp_tunnel_segment() (net/ipv4/udp_offload.c) and
    gre_gso_segment() then __skb_pull() the tunnel headers and
    skb_reset_mac_header(), so mac/network/transport_header name the inner
    packet only, while head+mac_offset..head+mac_header still hold the outer
    headers: skb_segment() copies them in front of every segment
    (skb_tnl_header_len() = mac_header - mac_offset). Decodes Ethernet at
    gso_mac, IP by its ethertype, the L4 (or GRE) header, then the inner
    packet at mac_header/network_header/transport_header. Returns a Decoded,
    or the text of why the bytes at gso_mac are not such outer headers."""
    out = Decoded()
    where = "SKB_GSO_CB(skb)->mac_offset head+%d" % gso_mac
    eth, ethertype, end = _ethernet(view, gso_mac, False)
    if eth["truncated"]:
        return "%s: %s; decoded from the skb's offsets" % (where, eth["notes"][0])
    if ethertype not in (ETH_P_IP, ETH_P_IPV6):
        return ("%s: ethertype %s there, not IP: decoded from the skb's offsets"
                % (where, eth["fields"]["ethertype"]))
    out.append(eth)
    l3, l4, proto, l4_end = _ip_and_l4(out, view, end, UNSET, False)
    if l3["truncated"] or proto is None:
        return "%s: no outer IP header to follow there: decoded from the skb's offsets" % where
    want = {4: ETH_P_IP, 6: ETH_P_IPV6}.get(l3["fields"].get("version"))
    if want != ethertype:
        return ("%s: ethertype %s but an IPv%s header: decoded from the skb's offsets"
                % (where, eth["fields"]["ethertype"], l3["fields"].get("version")))
    if proto not in (4, 41, 47) and (l4 is None or l4["truncated"] or l4_end is None):
        return ("%s: outer protocol %d is not a tunnel's: decoded from the skb's offsets"
                % (where, proto))
    if l4_end is None or l4_end > mac:
        return ("%s: the outer headers end at head+%s, past mac_header (head+%d): decoded "
                "from the skb's offsets" % (where, l4_end, mac))
    out.gso_mac_offset = gso_mac
    out.notes.append("outer headers head+%d..head+%d from SKB_GSO_CB(skb)->mac_offset (the "
                     "headroom at __skb_gso_segment's entry): the tunnel GSO handler pulled "
                     "them and moved mac/network/transport_header to the inner packet; "
                     "skb_segment copies them in front of every segment "
                     "(skb_tnl_header_len %d)" % (gso_mac, mac, mac - gso_mac))
    inner_l3 = _inner_by_offsets(out, view, proto, l4, l4_end, mac, nh, th, pulled=True)
    iwant = {4: ETH_P_IP, 6: ETH_P_IPV6}.get(inner_l3["fields"].get("version"))
    if iwant and protocol is not None and protocol != iwant:
        inner_l3["notes"].append("skb->protocol 0x%04x does not say IPv%d"
                                 % (protocol, inner_l3["fields"]["version"]))
    return out


def _inner_by_offsets(out, view, proto, l4, l4_end, imac, inh, ith, pulled=False):
    """The tunnel header and the inner packet; returns the inner L3 layer.
    pulled: the inner packet is at mac/network/transport_header (_pulled)."""
    names = ("mac_header", "network_header") if pulled else \
        ("inner_mac_header", "inner_network_header")
    first = imac if _is_set(imac) and imac != 0 and imac <= inh else inh
    if l4 is not None and l4["name"] == "udp" and l4_end is not None:
        gap = first - l4_end
        dport = l4["fields"].get("dport")
        usual = ("VXLAN" if dport in VXLAN_PORTS else
                 "Geneve" if dport == GENEVE_PORT else None)
        if gap == 0:
            if usual:
                out.notes.append("UDP dport %d is %s's port, but there is no %s header: the "
                                 "inner packet starts right after the UDP header (%s)"
                                 % (dport, usual, usual, "at mac_header" if pulled else
                                    "inner offsets"))
        elif gap > 0:
            if dport in VXLAN_PORTS:
                layer, _ok = _vxlan(view, l4_end, False)
            elif dport == GENEVE_PORT:
                layer, _ok = _geneve(view, l4_end, False)
            else:
                layer = _layer("tunnel", l4_end, gap, False, {},
                               ["%d bytes between the UDP header and the inner packet, "
                                "UDP dport %d: unknown tunnel header" % (gap, dport)])
            if layer.get("length") and layer["length"] != gap and not layer["truncated"]:
                layer["notes"].append("the offsets leave %d bytes for it" % gap)
            out.append(layer)
        else:
            out.notes.append("the inner packet (head+%d) starts inside the outer UDP header"
                             % first)
    elif proto == 47 and l4_end is not None:
        _gre_by_header(out, view, l4_end, follow=False)
    if _is_set(imac) and imac != 0 and imac < inh:
        layer, _et, _end = _ethernet(view, imac, True, inh - imac)
        out.append(layer)
    elif _is_set(imac) and imac == inh:
        out.notes.append("%s == %s: no inner Ethernet header" % names)
    return _ip_and_l4(out, view, inh, ith, True)[0]


def _gre_by_header(out, view, off, follow=True):
    layer, proto, end = _gre(view, off, False)
    out.append(layer)
    if follow and end is not None and _follow(out, view, proto, end):
        out.notes.append("GRE: inner packet decoded from the GRE header (inner offsets unset)")


def _follow(out, view, proto, off):
    """The inner packet of ethertype proto at off (Ethernet for TEB, then
    IP). False when proto names neither."""
    if proto == ETH_P_TEB:
        eth, proto, off = _ethernet(view, off, True)
        out.append(eth)
    if proto not in (ETH_P_IP, ETH_P_IPV6):
        return False
    _ip_and_l4(out, view, off, UNSET, True)
    return True


def _tunnel_by_port(out, view, udp, off):
    dport = udp["fields"].get("dport")
    if dport in VXLAN_PORTS:
        layer, valid = _vxlan(view, off, False)
        proto_next = ETH_P_TEB
    elif dport == GENEVE_PORT:
        layer, valid = _geneve(view, off, False)
        proto_next = layer["fields"].get("protocol")
        proto_next = int(proto_next, 16) if proto_next else None
    else:
        return
    if not valid:
        out.notes.append("UDP dport %d: no valid %s header after the UDP header (inner "
                         "offsets unset): not decoded further"
                         % (dport, "VXLAN" if dport in VXLAN_PORTS else "Geneve"))
        return
    layer["notes"].append("decoded by UDP port: the skb's inner offsets are unset")
    out.append(layer)
    _follow(out, view, proto_next, off + layer["length"])


def _payload_note(out, view):
    last = out[-1] if out else None
    if last is None or last["truncated"]:
        return
    end = last["offset"] + last["length"]
    if view.tail is not None and end <= view.tail:
        out.notes.append("%d bytes of payload in the head after the last header"
                         % (view.tail - end))


# ---------------------------------------------------------------------------
# pcap

class PcapPacket(object):
    """One pcap record: data (bytes from the Ethernet header), orig_len,
    ts (seconds), notes (what was synthesized or left out)."""

    def __init__(self, data, orig_len=None, ts=0.0, notes=None):
        self.data = bytes(data)
        self.orig_len = max(len(self.data), orig_len or 0)
        self.ts = ts
        self.notes = list(notes or [])


def skb_packet(data, skb, start=0):
    """(PcapPacket or None, notes) for an skb whose head bytes from head+start
    are `data`; skb: dict with mac_header, network_header, data (skb->data -
    skb->head), tail, len, and optionally gso_mac_offset (the offset
    decode() took the outer headers from, Decoded.gso_mac_offset). The packet
    runs from gso_mac_offset when given (the outer headers a tunnel GSO
    handler pulled, as the packet entered __skb_gso_segment), else from
    mac_header (or a synthesized Ethernet header), to tail."""
    notes = []
    try:
        mac, nh = skb.get("mac_header"), skb.get("network_header")
        tail, length, dataoff = skb.get("tail"), skb.get("len"), skb.get("data")
        gso_mac = skb.get("gso_mac_offset")
        gso_mac = None if gso_mac is None else int(gso_mac)
        start = int(start)
    except (AttributeError, TypeError, ValueError):
        raise PacketError("skb must be a dict of offsets")
    if tail is None:
        return None, ["skb->tail unknown: where the linear data ends is not known"]
    synth = not _is_set(mac) or (_is_set(nh) and mac == nh)
    first = nh if synth else mac
    if gso_mac is not None and _is_set(mac) and 0 <= gso_mac < mac:
        first, synth = gso_mac, False
        notes.append("from head+%d (SKB_GSO_CB(skb)->mac_offset): the outer headers a tunnel "
                     "GSO handler pulled included, as the packet entered __skb_gso_segment"
                     % first)
    if not _is_set(first):
        return None, ["neither mac_header nor network_header is set: no packet start"]
    view = _View(data, start, tail)
    body, why = view.get(first, tail - first)
    if body is None:
        return None, ["packet bytes head+%d..head+%d not all in memory: %s" % (first, tail, why)]
    prefix = b""
    if synth:
        version = bytearray(body[:1])[0] >> 4 if body else 0
        ethertype = {4: ETH_P_IP, 6: ETH_P_IPV6}.get(version)
        if ethertype is None:
            return None, ["no Ethernet header and no IP header at head+%d: no packet" % first]
        prefix = b"\0" * 12 + struct.pack("!H", ethertype)
        notes.append("Ethernet header synthesized (00:00:00:00:00:00 both ways, ethertype "
                     "0x%04x): the skb has none at mac_header" % ethertype)
    wire = None
    if length is not None and dataoff is not None:
        wire = int(length) + (int(dataoff) - first) + len(prefix)
    pkt = PcapPacket(prefix + body, wire, notes=notes)
    if wire is not None and wire > len(pkt.data):
        pkt.notes.append("captured %d of %d bytes: the rest is in page frags or the "
                         "frag_list, not in the head" % (len(pkt.data), wire))
    return pkt, pkt.notes


def write_pcap(f, packets, snaplen=SNAPLEN):
    """Classic pcap (microsecond timestamps, LINKTYPE_ETHERNET) into the
    binary file f (the caller opens it: which files root may write is the
    output wing's rule). packets: PcapPacket or plain bytes. Returns the
    number of records written."""
    n = 0
    f.write(struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
    for p in packets:
        if not isinstance(p, PcapPacket):
            if not isinstance(p, (bytes, bytearray)):
                raise PacketError("a packet must be PcapPacket or bytes")
            p = PcapPacket(p)
        data = p.data[:snaplen]
        sec = int(p.ts)
        usec = int(round((p.ts - sec) * 1e6)) % 1000000
        orig = min(p.orig_len, 0xffffffff)
        f.write(struct.pack("<IIII", sec & 0xffffffff, usec, len(data), orig))
        f.write(data)
        n += 1
    return n


def summary(layers):
    """One line: 'ipv4 198.18.1.1 > 198.18.2.1 | udp 40000 > 6081 | ...'."""
    parts = []
    for layer in layers:
        f = layer["fields"]
        name = ("inner " if layer.get("inner") else "") + layer["name"]
        if layer.get("truncated"):
            parts.append(name + " (truncated)")
        elif "src" in f and "dst" in f and layer["name"] != "ethernet":
            parts.append("%s %s > %s" % (name, f["src"], f["dst"]))
        elif "sport" in f:
            parts.append("%s %d > %d" % (name, f["sport"], f["dport"]))
        elif "vni" in f:
            parts.append("%s vni %d" % (name, f["vni"]))
        else:
            parts.append(name)
    return " | ".join(parts)
