"""SKB_GSO_* bits, named as the running kernel defines them.

The values come from BTF when /sys/kernel/btf/vmlinux exists; otherwise from
the table below (include/linux/skbuff.h of 6.1; 4.18 has the same values up to
UDP_L4 and no FRAGLIST). Old notes that put UDP_TUNNEL at 0x40 describe
kernels before 4.x: 0x403 is TCPV4|DODGY|UDP_TUNNEL here.

Kernel families, for a vmcore read without the kernel's BTF (FAMILIES):
- "6": 5.6 and later, checked against 6.1 (include/linux/skbuff.h lines
  645-685 of linux-source-6.1): bits 0-18, TCPV4 .. FRAGLIST.
- "4.18": RHEL 8, from upstream v4.18 include/linux/skbuff.h: bits 0-17,
  the same names and values as 6.1 up to UDP_L4 (1 << 17, new in 4.18 with
  UDP_SEGMENT); no FRAGLIST (upstream 5.6). SKB_GSO_UDP (1 << 16) is in both:
  UFO itself went away in 4.14 but the bit stayed. RHEL 8 backports much of
  the network stack, so bit 18 may exist on a given 4.18.0-*.el8 build: its
  BTF or `crash> p SKB_GSO_FRAGLIST` says.
Kernels 5.0-5.5 are "6" without bit 18; kernels after 6.1 may define bits
above 18. Only bit 18 is named in one family and not in the other
(family_dependent()).
"""
from skbtrace.kernel import btf

FALLBACK = [
    ("TCPV4", 1 << 0), ("DODGY", 1 << 1), ("TCP_ECN", 1 << 2), ("TCP_FIXEDID", 1 << 3),
    ("TCPV6", 1 << 4), ("FCOE", 1 << 5), ("GRE", 1 << 6), ("GRE_CSUM", 1 << 7),
    ("IPXIP4", 1 << 8), ("IPXIP6", 1 << 9), ("UDP_TUNNEL", 1 << 10),
    ("UDP_TUNNEL_CSUM", 1 << 11), ("PARTIAL", 1 << 12), ("TUNNEL_REMCSUM", 1 << 13),
    ("SCTP", 1 << 14), ("ESP", 1 << 15), ("UDP", 1 << 16), ("UDP_L4", 1 << 17),
    ("FRAGLIST", 1 << 18),
]

# upstream v4.18: everything up to UDP_L4, nothing after
FAMILY_4_18 = [(n, b) for n, b in FALLBACK if b <= 1 << 17]
FAMILIES = {"4.18": FAMILY_4_18, "6": FALLBACK}

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


FAMILY_TABLES = dict((name, GsoTable(bits, "built-in table (kernel family %s)" % name))
                     for name, bits in FAMILIES.items())


def for_family(family):
    """The GsoTable of a kernel family ("4.18" or "6"); ValueError otherwise."""
    try:
        return FAMILY_TABLES[family]
    except KeyError:
        raise ValueError("unknown kernel family %r (known: %s)"
                         % (family, ", ".join(sorted(FAMILY_TABLES))))


def family_of_release(release):
    """"4.18" for a 4.18.x kernel release string (RHEL 8's 4.18.0-*.el8*),
    "6" for 5.6 and later, None when the release says neither."""
    if not release:
        return None
    parts = str(release).split("-", 1)[0].split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None
    if (major, minor) == (4, 18):
        return "4.18"
    if (major, minor) >= (5, 6):
        return "6"
    return None


def family_dependent_bits(value):
    """The bits of value that one family names and another does not."""
    masks = [sum(b for _, b in bits) for bits in FAMILIES.values()]
    anyone = 0
    everyone = ~0
    for mask in masks:
        anyone |= mask
        everyone &= mask
    return value & anyone & ~everyone


def family_dependent(value):
    """True when the name of gso_type `value` depends on the kernel family
    (today: bit 18, FRAGLIST from 5.6 on, unnamed in upstream 4.18)."""
    return bool(family_dependent_bits(value))
