"""The minimal BTF reader, on a BTF blob built here by hand."""
import struct

import pytest

from skbtrace.kernel import btf, gso

KIND_INT, KIND_PTR, KIND_STRUCT, KIND_ENUM, KIND_FUNC, KIND_FUNC_PROTO = 1, 2, 4, 6, 12, 13


class Blob(object):
    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.ntypes = 0

    def s(self, text):
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, name, kind, vlen, size_or_type, trailer=b""):
        self.types += struct.pack("<III", self.s(name) if name else 0,
                                  (kind << 24) | vlen, size_or_type) + trailer
        self.ntypes += 1
        return self.ntypes

    def data(self):
        hdr_len = 24
        return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(self.types),
                           len(self.types), len(self.strings)) + self.types + self.strings


def build():
    b = Blob()
    enum_members = [("SKB_GSO_TCPV4", 1), ("SKB_GSO_DODGY", 2), ("SKB_GSO_UDP_TUNNEL", 1 << 10),
                    ("SKB_GSO_FRAGLIST", 1 << 18)]
    trailer = b"".join(struct.pack("<Ii", b.s(n), v) for n, v in enum_members)
    b.add("", KIND_ENUM, len(enum_members), 4, trailer)                  # 1
    skb = b.add("sk_buff", KIND_STRUCT, 0, 0)                             # 2
    p1 = b.add("", KIND_PTR, 0, skb)                                      # 3
    p2 = b.add("", KIND_PTR, 0, p1)                                       # 4
    proto_new = b.add("", KIND_FUNC_PROTO, 2, 0, struct.pack("<II", b.s("p"), p1) +
                      struct.pack("<II", b.s("skb"), p1))                 # 5
    proto_old = b.add("", KIND_FUNC_PROTO, 2, 0, struct.pack("<II", b.s("head"), p2) +
                      struct.pack("<II", b.s("skb"), p1))                 # 6
    b.add("skb_gro_receive", KIND_FUNC, 0, proto_new)
    b.add("skb_gro_receive_old", KIND_FUNC, 0, proto_old)
    return b.data()


def test_enum_and_gso_table(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(build())
    k = btf.BTF.load(str(path))
    enum = k.enum_containing("SKB_GSO_TCPV4")
    assert enum["SKB_GSO_UDP_TUNNEL"] == 0x400
    table = gso.GsoTable.from_kernel(str(path))
    assert table.source == "kernel BTF"
    assert table.names(0x403) == "TCPV4|DODGY|UDP_TUNNEL"
    assert table.bit("PARTIAL") == 0


def test_first_param_depth(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(build())
    k = btf.BTF.load(str(path))
    assert k.func_first_param_ptr_depth("skb_gro_receive") == 1
    assert k.func_first_param_ptr_depth("skb_gro_receive_old") == 2
    assert k.func_first_param_ptr_depth("absent") is None


def test_missing_or_bad_btf(tmp_path):
    assert gso.GsoTable.from_kernel(str(tmp_path / "none")).source.startswith("built-in")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\0" * 40)
    with pytest.raises(btf.BTFError):
        btf.BTF.load(str(bad))


def test_func_proto_for_fexit(tmp_path):
    """fexit reads the return value after the arguments; a void function
    has no such slot."""
    b = Blob()
    int_t = b.add("int", KIND_INT, 0, 4, struct.pack("<I", 32))
    skb = b.add("sk_buff", KIND_STRUCT, 0, 0)
    p1 = b.add("", KIND_PTR, 0, skb)
    pull = b.add("", KIND_FUNC_PROTO, 2, p1, struct.pack("<II", b.s("skb"), p1) +
                 struct.pack("<II", b.s("delta"), int_t))
    void = b.add("", KIND_FUNC_PROTO, 1, 0, struct.pack("<II", b.s("skb"), p1))
    b.add("__pskb_pull_tail", KIND_FUNC, 0, pull)
    b.add("skb_condense", KIND_FUNC, 0, void)
    path = tmp_path / "vmlinux"
    path.write_bytes(b.data())
    k = btf.BTF.load(str(path))
    assert k.func_proto("__pskb_pull_tail") == (2, True)
    assert k.func_proto("skb_condense") == (1, False)
    assert k.func_proto("absent") is None
