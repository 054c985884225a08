import argparse
import os
import socket
import struct

import pytest

from skbtrace.live import filters
from skbtrace.errors import UserError


def args(**kw):
    d = dict(gso_only=False, src_ip=None, dst_ip=None, interface=None)
    d.update(kw)
    return argparse.Namespace(**d)


def test_no_filters():
    f = filters.Filters.from_args(args())
    assert f.c_defines() == ["#define FILTER_GSO_ONLY 0", "#define FILTER_IFINDEX 0",
                             "#define FILTER_SRC 0", "#define FILTER_DST 0"]
    assert f.describe() == "none"


def test_ipv4_words_as_memory():
    f = filters.Filters.from_args(args(src_ip="198.18.1.1", gso_only=True))
    lines = f.c_defines()
    assert "#define FILTER_GSO_ONLY 1" in lines
    assert "#define FILTER_SRC 1" in lines and "#define FILTER_SRC_FAMILY 4" in lines
    w0 = struct.unpack("=I", socket.inet_aton("198.18.1.1"))[0]
    assert "#define FILTER_SRC_W0 0x%08xU" % w0 in lines
    assert "#define FILTER_SRC_W1 0x00000000U" in lines
    assert "src=198.18.1.1" in f.describe()


def test_ipv6_canonical():
    f = filters.Filters.from_args(args(dst_ip="2001:DB8:0::2"))
    assert f.dst[0] == 6 and f.dst[2] == "2001:db8::2"
    lines = f.c_defines()
    assert "#define FILTER_DST_FAMILY 6" in lines
    words = struct.unpack("=4I", socket.inet_pton(socket.AF_INET6, "2001:db8::2"))
    assert "#define FILTER_DST_W3 0x%08xU" % words[3] in lines


@pytest.mark.parametrize("bad", ["1.2.3", "198.18.1.256", "fe80::1::2", "host.example", "", "1.2.3.4/24"])
def test_bad_ips(bad):
    with pytest.raises(UserError) as e:
        filters.parse_ip(bad, "--src-ip")
    assert "--src-ip" in str(e.value) and "\n" not in str(e.value)


def test_interface():
    f = filters.Filters.from_args(args(interface="lo"))
    assert f.ifindex == socket.if_nametoindex("lo")
    assert "#define FILTER_IFINDEX %d" % f.ifindex in f.c_defines()
    inum = os.stat("/proc/self/ns/net").st_ino
    assert "#define FILTER_NETNS_INUM %dU" % inum in f.c_defines()
    for bad in ("nosuchif0", "x" * 20, "a/b"):
        with pytest.raises(UserError):
            filters.resolve_interface(bad)
