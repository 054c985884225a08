"""Host-side injector: write Ethernet frames with a virtio_net_hdr in front
into the lab tap through an AF_PACKET socket with PACKET_VNET_HDR, so the
guest's virtio_net receive_buf sees the gso_type and gso_size we choose.
(QEMU owns the tap fd; a packet socket on the host side of the tap is the
other way in.) Runs inside the lab's network namespace (Lab.host()).

    python3 tests/lab/inject.py [--gso tcpv4|none] [--gso-size 1000] [--segs 4] [--count 3]
"""
import argparse
import socket
import struct
import sys

SOL_PACKET = 263
PACKET_VNET_HDR = 15
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
GSO = {"none": 0, "tcpv4": 1, "udp": 3, "tcpv6": 4}

SRC, DST = "198.18.100.1", "198.18.100.2"
GUEST_MAC = "52:54:00:12:34:56"


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def frame(src_mac, payload_len, seq=1, sport=40000, dport=9999):
    payload = b"z" * payload_len
    tcp_len = 20 + payload_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, 1, 0x4000, 64, 6, 0,
                     socket.inet_aton(SRC), socket.inet_aton(DST))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    pseudo = struct.pack("!4s4sBBH", socket.inet_aton(SRC), socket.inet_aton(DST), 0, 6, tcp_len)
    # partial checksum (NEEDS_CSUM): the pseudo-header sum, as a NIC expects
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535,
                      ~csum(pseudo) & 0xffff, 0)
    eth = bytes.fromhex(GUEST_MAC.replace(":", "")) + src_mac + b"\x08\x00"
    return eth + ip + tcp + payload


def vnet_hdr(gso, gso_size, hdr_len):
    # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (LE)
    return struct.pack("<BBHHHH", VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO[gso], hdr_len,
                       gso_size if gso != "none" else 0, 14 + 20, 16)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dev", default="labtap0")
    p.add_argument("--gso", default="tcpv4", choices=sorted(GSO))
    p.add_argument("--gso-size", type=int, default=1000)
    p.add_argument("--segs", type=int, default=4)
    p.add_argument("--count", type=int, default=3)
    a = p.parse_args()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind((a.dev, 0))
    src_mac = s.getsockname()[4]
    for i in range(a.count):
        f = frame(src_mac, a.gso_size * a.segs, seq=1 + i * a.gso_size * a.segs)
        s.send(vnet_hdr(a.gso, a.gso_size, 14 + 20 + 20) + f)
    print("injected %d frames: gso=%s gso_size=%d len=%d" % (a.count, a.gso, a.gso_size, len(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
