"""Host-side injector: write Ethernet frames with a virtio_net_hdr in front
into the lab tap through an AF_PACKET socket with PACKET_VNET_HDR, so the
guest's virtio_net receive_buf sees the gso_type and gso_size we choose.
(QEMU owns the tap fd; a packet socket on the host side of the tap is the
other way in: the tap's vnet_hdr=on carries the header through to QEMU,
which hands it to the guest unchanged, except hdr_len, see docs/lab.md.)
Runs inside the lab's network namespace (Lab.host() / Lab.inject()).

    python3 tests/lab/inject.py [--gso tcpv4|tcpv6|udp|none] [--gso-size 1000]
                                [--segs 4] [--count 3] [--ecn] [--dev labtap0]

As a library:
    frames = [vnet_hdr("tcpv4", 1000, 54) + tcp4_frame(src_mac, 4000)]
    send("labtap0", frames)

QEMU 7.2 cannot carry VIRTIO_NET_HDR_GSO_UDP_L4 (5) to the guest (8.1+ can).
"""
import argparse
import socket
import struct
import sys

SOL_PACKET = 263
PACKET_VNET_HDR = 15
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_ECN = 0x80
GSO = {"none": 0, "tcpv4": 1, "udp": 3, "tcpv6": 4}

SRC, DST = "198.18.100.1", "198.18.100.2"
GUEST_MAC = "52:54:00:12:34:56"
ETH, IP4, TCP = 14, 20, 20


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def tcp4_frame(src_mac, payload_len, seq=1, sport=40000, dport=9999, src=SRC, dst=DST,
               dst_mac=GUEST_MAC):
    """Ethernet + IPv4 + TCP (PSH|ACK) + payload_len bytes, TCP checksum left
    partial (pseudo-header sum), as a NIC with NEEDS_CSUM expects."""
    payload = b"z" * payload_len
    tcp_len = TCP + payload_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, IP4 + tcp_len, 1, 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    pseudo = struct.pack("!4s4sBBH", socket.inet_aton(src), socket.inet_aton(dst), 0, 6, tcp_len)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535,
                      ~csum(pseudo) & 0xffff, 0)
    eth = bytes.fromhex(dst_mac.replace(":", "")) + src_mac + b"\x08\x00"
    return eth + ip + tcp + payload


frame = tcp4_frame      # older name


def vnet_hdr(gso, gso_size, hdr_len=ETH + IP4 + TCP, ecn=False, flags=VIRTIO_NET_HDR_F_NEEDS_CSUM,
             csum_start=ETH + IP4, csum_offset=16):
    """struct virtio_net_hdr: u8 flags, u8 gso_type, le16 hdr_len, gso_size,
    csum_start, csum_offset."""
    gso_type = GSO[gso] if isinstance(gso, str) else gso
    if ecn:
        gso_type |= VIRTIO_NET_HDR_GSO_ECN
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size if gso_type else 0,
                       csum_start, csum_offset)


def gso_tcp4(src_mac, gso_size=1000, segs=4, seq=1, ecn=False):
    """One TCP/IPv4 GSO super-frame (segs x gso_size payload) with its header."""
    return vnet_hdr("tcpv4", gso_size, ecn=ecn) + tcp4_frame(src_mac, gso_size * segs, seq=seq)


def open_tap(dev):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind((dev, 0))
    return s


def send(dev, frames):
    """Send frames (each already prefixed with a virtio_net_hdr) out of dev."""
    s = open_tap(dev)
    try:
        for f in frames:
            s.send(f)
    finally:
        s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", default="labtap0")
    p.add_argument("--gso", default="tcpv4", choices=sorted(GSO))
    p.add_argument("--gso-size", type=int, default=1000)
    p.add_argument("--segs", type=int, default=4)
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--ecn", action="store_true", help="set VIRTIO_NET_HDR_GSO_ECN")
    a = p.parse_args()
    s = open_tap(a.dev)
    src_mac = s.getsockname()[4]
    for i in range(a.count):
        f = tcp4_frame(src_mac, a.gso_size * a.segs, seq=1 + i * a.gso_size * a.segs)
        s.send(vnet_hdr(a.gso, a.gso_size, ecn=a.ecn) + f)
    print("injected %d frames: gso=%s%s gso_size=%d len=%d" % (
        a.count, a.gso, "|ecn" if a.ecn else "", a.gso_size, len(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
