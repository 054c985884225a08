"""SKB_GSO_* bits, named as the running kernel defines them.

The values come from BTF when /sys/kernel/btf/vmlinux exists; otherwise from
the table below (include/linux/skbuff.h of 6.1; 4.18 has the same values up to
UDP_L4 and no FRAGLIST). Old notes that put UDP_TUNNEL at 0x40 describe
kernels before 4.x: 0x403 is TCPV4|DODGY|UDP_TUNNEL here.
"""
from skbtrace import btf

FALLBACK = [
    ("TCPV4", 1 << 0), ("DODGY", 1 << 1), ("TCP_ECN", 1 << 2), ("TCP_FIXEDID", 1 << 3),
    ("TCPV6", 1 << 4), ("FCOE", 1 << 5), ("GRE", 1 << 6), ("GRE_CSUM", 1 << 7),
    ("IPXIP4", 1 << 8), ("IPXIP6", 1 << 9), ("UDP_TUNNEL", 1 << 10),
    ("UDP_TUNNEL_CSUM", 1 << 11), ("PARTIAL", 1 << 12), ("TUNNEL_REMCSUM", 1 << 13),
    ("SCTP", 1 << 14), ("ESP", 1 << 15), ("UDP", 1 << 16), ("UDP_L4", 1 << 17),
    ("FRAGLIST", 1 << 18),
]

# The bits the C code needs, as KGSO_<NAME> macros (0 when the kernel lacks one).
C_BITS = ("UDP_TUNNEL", "UDP_TUNNEL_CSUM", "FRAGLIST", "UDP_L4", "DODGY", "PARTIAL")
TUNNEL_BITS = ("UDP_TUNNEL", "UDP_TUNNEL_CSUM")


class GsoTable(object):
    """Maps gso_type values to names. `source` says where the values came from."""

    def __init__(self, bits, source):
        self.bits = sorted(bits, key=lambda kv: kv[1])
        self.by_name = dict(self.bits)
        self.source = source

    @classmethod
    def from_kernel(cls, path=btf.BTF_PATH):
        try:
            return cls.from_btf(btf.BTF.load(path))
        except btf.BTFError:
            return cls.from_btf(None)

    @classmethod
    def from_btf(cls, kernel_btf):
        enum = kernel_btf.enum_containing("SKB_GSO_TCPV4") if kernel_btf else None
        if not enum:
            return cls(FALLBACK, "built-in table (6.1 values; no BTF)")
        bits = [(name[len("SKB_GSO_"):], value) for name, value in enum.items()
                if name.startswith("SKB_GSO_") and value]
        return cls(bits, "kernel BTF")

    def bit(self, name):
        return self.by_name.get(name, 0)

    def tunnel_mask(self):
        return sum(self.bit(n) for n in TUNNEL_BITS)

    def names(self, value):
        """'TCPV4|DODGY|UDP_TUNNEL' for 0x403; unknown bits as hex; 'NONE' for 0."""
        if not value:
            return "NONE"
        out = []
        rest = value
        for name, bit in self.bits:
            if value & bit:
                out.append(name)
                rest &= ~bit
        if rest:
            out.append("0x%x" % rest)
        return "|".join(out)

    def c_defines(self):
        return ["#define KGSO_%s 0x%x" % (n, self.bit(n)) for n in C_BITS]


DEFAULT = GsoTable(FALLBACK, "built-in table (6.1 values)")
