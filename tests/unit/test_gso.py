from skbtrace.kernel import gso


def test_crash_gso_type_names():
    assert gso.DEFAULT.names(0x403) == "TCPV4|DODGY|UDP_TUNNEL"
    assert gso.DEFAULT.names(0) == "NONE"
    assert gso.DEFAULT.names(0x60000) == "UDP_L4|FRAGLIST"
    assert gso.DEFAULT.names(0x800000 | 1) == "TCPV4|0x800000"


def test_c_defines_cover_tunnel_bits():
    lines = gso.DEFAULT.c_defines()
    assert "#define KGSO_UDP_TUNNEL 0x400" in lines
    assert "#define KGSO_UDP_TUNNEL_CSUM 0x800" in lines
    assert "#define KGSO_FRAGLIST 0x40000" in lines
    assert gso.DEFAULT.tunnel_mask() == 0xc00


def test_kernel_without_bit_gets_zero():
    t = gso.GsoTable([("TCPV4", 1), ("UDP_TUNNEL", 0x400)], "test")
    assert "#define KGSO_FRAGLIST 0x0" in t.c_defines()
