"""gso_type names per kernel family: "4.18" (RHEL 8) and "6" (5.6 and later)."""
import os
import re

import pytest

from skbtrace.kernel import gso

KSRC_61 = "/work/ksrc/x/usr/src/linux-source-6.1/include/linux/skbuff.h"
LOW_BITS = ["TCPV4", "DODGY", "TCP_ECN", "TCP_FIXEDID", "TCPV6", "FCOE", "GRE", "GRE_CSUM",
            "IPXIP4", "IPXIP6", "UDP_TUNNEL"]


def test_bits_0_to_10_agree_and_only_bit_18_differs():
    t418, t6 = gso.for_family("4.18"), gso.for_family("6")
    for i, name in enumerate(LOW_BITS):
        assert t418.bit(name) == t6.bit(name) == 1 << i
    assert t418.bits == t6.bits[:-1]
    assert (t418.bit("UDP"), t418.bit("UDP_L4")) == (1 << 16, 1 << 17)
    assert t418.bit("FRAGLIST") == 0 and t6.bit("FRAGLIST") == 1 << 18
    assert gso.family_dependent_bits(0xffffffff) == 1 << 18


def test_seed_value_0x403_in_both_families():
    for fam in ("4.18", "6"):
        assert gso.for_family(fam).names(0x403) == "TCPV4|DODGY|UDP_TUNNEL"
    assert not gso.family_dependent(0x403)
    assert gso.family_dependent(0x40403)
    assert gso.for_family("4.18").names(0x40403) == "TCPV4|DODGY|UDP_TUNNEL|0x40000"
    assert gso.for_family("6").names(0x40403) == "TCPV4|DODGY|UDP_TUNNEL|FRAGLIST"
    # seed 003's old table called 0x40 UDP_TUNNEL: it is GRE in both
    assert gso.for_family("4.18").names(0x41) == gso.for_family("6").names(0x41) == "TCPV4|GRE"


def test_family_of_release():
    assert gso.family_of_release("4.18.0-553.47.1.el8_10.x86_64") == "4.18"
    assert gso.family_of_release("6.1.0-57-amd64") == "6"
    assert gso.family_of_release("5.10.0-35-amd64") == "6"
    for other in ("5.4.0-150-generic", "3.10.0-1160.el7", "", None, "linux", "6"):
        assert gso.family_of_release(other) is None


def test_unknown_family_and_c_defines():
    with pytest.raises(ValueError):
        gso.for_family("5.4")
    assert "#define KGSO_FRAGLIST 0x0" in gso.for_family("4.18").c_defines()
    assert gso.for_family("6").c_defines() == gso.DEFAULT.c_defines()


@pytest.mark.skipif(not os.path.exists(KSRC_61), reason="6.1 kernel source not unpacked here")
def test_family_6_is_the_61_source():
    with open(KSRC_61) as f:
        text = f.read()
    enum = dict((n, 1 << int(b)) for n, b in re.findall(r"SKB_GSO_(\w+) = 1 << (\d+),", text))
    assert enum == dict(gso.FAMILIES["6"])
