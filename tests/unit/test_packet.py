"""skbtrace.kernel.packet: decode an skb's head by its offsets, write pcap.

The packet bytes are made by scapy (Debian python3-scapy) from the lab's real
flow (the watcher's JSON log of the Calico run: outer 198.18.1.1:40000 ->
198.18.2.1:6081 UDP, inner 198.18.1.1:57964 -> 198.18.2.1:9000 TCP) and laid
out as the real crash session's skb: inner offsets 268/268/288 and tail 320
from `struct sk_buff`, the linear length at validate_xmit_skb (len 2990 -
data_len 2896 = 94) from the console, so mac_header = 320 - 94 = 226. The
recorded session's `rd -8` covers only head..head+88 (see test_crashdump).
"""
import gzip
import json
import os
import random
import shutil
import struct
import subprocess

import pytest

from helpers import pcap_file
from skbtrace.kernel import packet

try:
    from scapy.all import Ether, IP, UDP, TCP, raw, rdpcap
except ImportError:     # Debian: python3-scapy
    Ether = None

try:
    from hypothesis import given, settings, HealthCheck, strategies as st
except ImportError:     # Debian: python3-hypothesis
    given = None

DATA = os.path.join(os.path.dirname(__file__), "data", "postmortem")
needs_scapy = pytest.mark.skipif(Ether is None, reason="scapy not installed (Debian python3-scapy)")

HEAD_SIZE = 704          # struct sk_buff end
TAIL = 320
MAC, NH, TH = 226, 240, 260
INNER = {"inner_mac_header": 268, "inner_network_header": 268, "inner_transport_header": 288}
LEN, DATA_LEN = 2990, 2896


def lab_flow():
    """(outer flow, inner flow) as the watcher logged them: ((src, sport),
    (dst, dport)) pairs."""
    with gzip.open(os.path.join(DATA, "6.1-calico-watcher.json.gz"), "rt") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("inner_flow") and rec["flow"].endswith(" udp"):
                return parse_flow(rec["flow"]), parse_flow(rec["inner_flow"])
    raise AssertionError("no encapsulated flow in the watcher's log")


def parse_flow(text):
    a, _arrow, b, _proto = text.split()
    (sa, sp), (da, dp) = a.rsplit(":", 1), b.rsplit(":", 1)
    return (sa, int(sp)), (da, int(dp))


def lab_head():
    """The head buffer of the encapsulated skb at validate_xmit_skb."""
    (osrc, dst), ((isrc, isport), (idst, idport)) = lab_flow()
    inner = IP(src=isrc, dst=idst, id=7, flags="DF") / TCP(
        sport=isport, dport=idport, flags="A", seq=1000, ack=2000,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    pkt = Ether(src="02:00:00:00:01:01", dst="02:00:00:00:02:01") / IP(
        src=osrc[0], dst=dst[0]) / UDP(sport=osrc[1], dport=dst[1]) / inner
    b = raw(pkt)
    assert len(b) == TAIL - MAC == LEN - DATA_LEN
    return b"\0" * MAC + b + b"\x5a" * (HEAD_SIZE - TAIL)


def offsets(**kw):
    o = {"mac_header": MAC, "network_header": NH, "transport_header": TH,
         "encapsulation": 1, "protocol": 0x0800, "tail": TAIL}
    o.update(INNER)
    o.update(kw)
    return o


@needs_scapy
def test_decode_follows_inner_offsets_past_port_6081():
    layers = packet.decode(lab_head(), offsets())
    names = [(l["name"], l["inner"], l["offset"]) for l in layers]
    assert names == [("ethernet", False, 226), ("ipv4", False, 240), ("udp", False, 260),
                     ("ipv4", True, 268), ("tcp", True, 288)]
    assert not layers.truncated
    udp, iip, tcp = layers[2]["fields"], layers[3]["fields"], layers[4]["fields"]
    assert (udp["sport"], udp["dport"]) == (40000, 6081)
    assert (iip["src"], iip["dst"], iip["protocol"]) == ("198.18.1.1", "198.18.2.1", 6)
    assert (tcp["sport"], tcp["dport"], tcp["header_length"], tcp["flags"]) == \
        (57964, 9000, 32, "ACK")
    assert any("no Geneve header" in n for n in layers.notes)
    assert any("no inner Ethernet" in n for n in layers.notes)
    assert "0 bytes of payload in the head after the last header" in layers.notes
    assert packet.summary(layers) == ("ethernet | ipv4 198.18.1.1 > 198.18.2.1 | udp 40000 > "
                                      "6081 | inner ipv4 198.18.1.1 > 198.18.2.1 | inner tcp "
                                      "57964 > 9000")


@needs_scapy
def test_offsets_after_tunnel_segmentation_show_the_inner_packet_only():
    """The real dump's offsets (skb_udp_tunnel_segment moved them)."""
    o = offsets(mac_header=268, network_header=268, transport_header=288, encapsulation=0)
    layers = packet.decode(lab_head(), o)
    assert [(l["name"], l["inner"]) for l in layers] == [("ipv4", False), ("tcp", False)]
    assert "mac_header == network_header: no link-layer header in the head" in layers.notes


@needs_scapy
def test_truncation_is_reported_never_read_past():
    head = lab_head()
    for cut in range(MAC, TAIL):
        layers = packet.decode(head[:cut], offsets())
        assert layers.truncated or cut >= TAIL, cut
        last = layers[-1]
        assert last["truncated"]
        assert any("given" in n for n in last["notes"])
    # bytes from head+250 on only: the Ethernet header is not there
    layers = packet.decode(head[250:], offsets(), start=250)
    assert layers[0]["truncated"] and "before the bytes given" in layers[0]["notes"][0]
    # tail inside the TCP header: the rest is not linear data
    layers = packet.decode(head, offsets(tail=300))
    assert layers[-1]["name"] == "tcp" and "past skb->tail" in layers[-1]["notes"][0]


@needs_scapy
def test_vxlan_header_in_the_gap_and_by_port():
    (osrc, dst), ((isrc, isport), (idst, idport)) = lab_flow()
    from scapy.layers.vxlan import VXLAN
    inner = Ether() / IP(src=isrc, dst=idst) / TCP(sport=isport, dport=idport)
    b = raw(Ether() / IP(src=osrc[0], dst=dst[0]) / UDP(sport=osrc[1], dport=4789) /
            VXLAN(vni=4096, flags=0x08) / inner)
    o = {"mac_header": 0, "network_header": 14, "transport_header": 34,
         "inner_mac_header": 50, "inner_network_header": 64, "inner_transport_header": 84,
         "encapsulation": 1, "tail": len(b)}
    layers = packet.decode(b, o)
    assert [l["name"] for l in layers] == ["ethernet", "ipv4", "udp", "vxlan", "ethernet",
                                           "ipv4", "tcp"]
    assert layers[3]["fields"]["vni"] == 4096
    # receive side: inner offsets unset, decoded by port and said so
    o2 = {"mac_header": 0, "network_header": 14, "transport_header": 34, "tail": len(b)}
    layers = packet.decode(b, o2)
    assert [l["name"] for l in layers][3:] == ["vxlan", "ethernet", "ipv4", "tcp"]
    assert "decoded by UDP port" in layers[3]["notes"][0]
    # the lab's headerless 6081 with inner offsets unset: not guessed
    head = lab_head()
    o3 = offsets(inner_mac_header=0xffff, inner_network_header=0xffff,
                 inner_transport_header=0xffff)
    layers = packet.decode(head, o3)
    assert [l["name"] for l in layers] == ["ethernet", "ipv4", "udp"]
    assert any("no valid Geneve header" in n for n in layers.notes)


@needs_scapy
def test_pcap_round_trip_with_scapy(tmp_path):
    head = lab_head()
    skb = {"mac_header": MAC, "network_header": NH, "data": MAC, "tail": TAIL, "len": LEN}
    pkt, notes = packet.skb_packet(head, skb)
    assert len(pkt.data) == 94 and pkt.orig_len == LEN
    assert any("captured 94 of 2990 bytes" in n for n in notes)
    path = str(tmp_path / "skb.pcap")
    assert pcap_file(path, [pkt]) == 1
    with open(path, "rb") as f:
        hdr = f.read(24 + 16)
    assert struct.unpack("<IHHiIII", hdr[:24])[6] == packet.LINKTYPE_ETHERNET
    assert struct.unpack("<IIII", hdr[24:])[2:] == (94, 2990)
    got = rdpcap(path)
    assert len(got) == 1
    p = got[0]
    assert p[IP].dst == "198.18.2.1" and p[UDP].sport == 40000 and p[UDP].dport == 6081
    # scapy does not know this headerless 6081: the inner IPv4 is the UDP payload
    inner = IP(bytes(p[UDP].payload))
    assert inner.src == "198.18.1.1" and inner[TCP].sport == 57964 and inner[TCP].dport == 9000
    assert p.wirelen == 2990


@needs_scapy
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_pcap_read_by_tshark(tmp_path):
    head = lab_head()
    pkt, _ = packet.skb_packet(head, {"mac_header": MAC, "network_header": NH, "data": MAC,
                                      "tail": TAIL, "len": LEN})
    path = str(tmp_path / "skb.pcap")
    pcap_file(path, [pkt])
    def fields(*extra):
        return subprocess.check_output(
            ["tshark", "-r", path] + list(extra) + [
                "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len", "-e", "udp.dstport",
                "-e", "ip.src", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "geneve.vni"],
            stderr=subprocess.DEVNULL).decode().rstrip("\n").split("\t")
    # by port, tshark takes the inner IPv4 header for a Geneve header ...
    out = fields()
    assert out[:4] == ["2990", "94", "6081", "198.18.1.1"] and out[6] and not out[4]
    # ... which the offsets say is not there: decoded as IP, the inner TCP shows
    out = fields("-d", "udp.port==6081,ip")
    assert out[:6] == ["2990", "94", "6081", "198.18.1.1,198.18.1.1", "57964", "9000"]


@needs_scapy
def test_pcap_synthesizes_ethernet_when_the_skb_has_none(tmp_path):
    head = lab_head()
    skb = {"mac_header": 268, "network_header": 268, "data": 268, "tail": TAIL, "len": 2948}
    pkt, notes = packet.skb_packet(head, skb)
    assert "Ethernet header synthesized" in notes[0]
    assert pkt.data[:14] == b"\0" * 12 + b"\x08\x00" and len(pkt.data) == 14 + 52
    assert pkt.orig_len == 2948 + 14
    path = str(tmp_path / "inner.pcap")
    pcap_file(path, [pkt])
    p = rdpcap(path)[0]
    assert p[TCP].sport == 57964 and p[IP].src == "198.18.1.1"
    # no IP at the packet start: skipped, not invented
    junk = b"\0" * HEAD_SIZE
    pkt, notes = packet.skb_packet(junk, skb)
    assert pkt is None and "no Ethernet header and no IP header" in notes[0]
    pkt, notes = packet.skb_packet(head[:300], skb)
    assert pkt is None and "not all in memory" in notes[0]


def test_write_pcap_header_and_bytes(tmp_path):
    path = str(tmp_path / "x.pcap")
    pcap_file(path, [b"\x01\x02\x03", packet.PcapPacket(b"ab", orig_len=100, ts=1.5)])
    with open(path, "rb") as f:
        b = f.read()
    assert struct.unpack("<IHHiIII", b[:24]) == (0xa1b2c3d4, 2, 4, 0, 0, packet.SNAPLEN, 1)
    assert struct.unpack("<IIII", b[24:40]) == (0, 0, 3, 3) and b[40:43] == b"\x01\x02\x03"
    assert struct.unpack("<IIII", b[43:59]) == (1, 500000, 2, 100) and b[59:] == b"ab"
    with pytest.raises(packet.PacketError):
        pcap_file(path, ["not bytes"])


def test_bad_arguments_raise_packet_error_only():
    for data, offs in (("text", {}), (None, {}), (b"", None), (b"", {"mac_header": "x"})):
        with pytest.raises(packet.PacketError):
            packet.decode(data, offs)


KEYS = ("mac_header", "network_header", "transport_header", "inner_mac_header",
        "inner_network_header", "inner_transport_header", "tail", "encapsulation",
        "protocol")


def check_never_raises(data, offs, start):
    layers = packet.decode(data, offs, start)
    end = start + len(data)
    for layer in layers:
        if not layer["truncated"] and layer["length"]:
            assert layer["offset"] >= start and layer["offset"] < end
    pkt, _notes = packet.skb_packet(data, dict(offs, data=offs.get("mac_header"),
                                               len=offs.get("tail")), start)
    if pkt is not None:
        assert len(pkt.data) <= len(data) + 14


def test_random_bytes_and_offsets_never_raise():
    rnd = random.Random(4)
    for _ in range(4000):
        n = rnd.choice((0, 1, 14, 60, 200, 400))
        data = bytes(rnd.getrandbits(8) for _ in range(n))
        if n and rnd.random() < 0.5:
            data = bytes([0x45]) + data[1:]
        offs = dict((k, rnd.choice((None, 0, 0xffff, rnd.randrange(0, 420))))
                    for k in KEYS)
        check_never_raises(data, offs, rnd.choice((0, 0, 10, 226)))


if given is not None:
    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=300),
           st.fixed_dictionaries(dict((k, st.one_of(st.none(), st.integers(0, 0xffff)))
                                      for k in KEYS)),
           st.integers(0, 300))
    def test_hypothesis_bytes_and_offsets_never_raise(data, offs, start):
        check_never_raises(data, offs, start)
