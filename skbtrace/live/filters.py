"""Command-line filters, validated in Python and compiled into the BPF program
as #define lines, so that filtered events never leave the kernel."""
import os
import socket
import struct

from skbtrace.errors import UserError


def parse_ip(text, option):
    """-> (family 4|6, 16 bytes, canonical text)."""
    for family, af, size in ((4, socket.AF_INET, 4), (6, socket.AF_INET6, 16)):
        try:
            packed = socket.inet_pton(af, text)
        except (OSError, ValueError, socket.error):
            continue
        return family, packed + b"\0" * (16 - size), socket.inet_ntop(af, packed)
    raise UserError("%s: '%s' is not an IPv4 or IPv6 address" % (option, text))


def resolve_interface(name):
    if not name or len(name) >= 16 or "/" in name or " " in name:
        raise UserError("--interface: '%s' is not a valid interface name" % name)
    try:
        return socket.if_nametoindex(name)
    except (OSError, socket.error):
        raise UserError("--interface: no interface named '%s' in this network namespace" % name)


class Filters(object):
    """What the user asked to keep. `describe()` is shown at startup."""

    def __init__(self, gso_only=False, src=None, dst=None, interface=None, ifindex=0):
        self.gso_only = gso_only
        self.src = src          # (family, packed16, text) or None
        self.dst = dst
        self.interface = interface
        self.ifindex = ifindex
        self.netns_inum = 0     # the tool's network namespace, with --interface

    @classmethod
    def from_args(cls, args):
        src = parse_ip(args.src_ip, "--src-ip") if args.src_ip else None
        dst = parse_ip(args.dst_ip, "--dst-ip") if args.dst_ip else None
        ifindex = resolve_interface(args.interface) if args.interface else 0
        f = cls(args.gso_only, src, dst, args.interface, ifindex)
        if ifindex:
            f.netns_inum = os.stat("/proc/self/ns/net").st_ino
        return f

    def c_defines(self):
        lines = [
            "#define FILTER_GSO_ONLY %d" % (1 if self.gso_only else 0),
            "#define FILTER_IFINDEX %d" % self.ifindex,
        ]
        if self.ifindex:
            lines.append("#define FILTER_NETNS_INUM %dU" % self.netns_inum)
        for tag, addr in (("SRC", self.src), ("DST", self.dst)):
            if addr is None:
                lines.append("#define FILTER_%s 0" % tag)
                continue
            family, packed, _text = addr
            # words as the BPF program sees the bytes in memory (same host)
            words = struct.unpack("=4I", packed)
            lines.append("#define FILTER_%s 1" % tag)
            lines.append("#define FILTER_%s_FAMILY %d" % (tag, family))
            for i, w in enumerate(words):
                lines.append("#define FILTER_%s_W%d 0x%08xU" % (tag, i, w))
        return lines

    def describe(self):
        parts = []
        if self.gso_only:
            parts.append("gso_size>0")
        if self.src:
            parts.append("src=%s (outer or inner)" % self.src[2])
        if self.dst:
            parts.append("dst=%s (outer or inner)" % self.dst[2])
        if self.interface:
            parts.append("interface=%s (ifindex %d, this netns)" % (self.interface, self.ifindex))
        return ", ".join(parts) if parts else "none"
