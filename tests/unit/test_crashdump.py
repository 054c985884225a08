"""skbtrace.postmortem.crashdump on real `crash` output: the lab's 6.1 session (Debian
crash 8.0.2 over a QEMU dump of a guest that panicked in skb_segment+588,
with `rd -8` of the skb's whole head buffer), its console, and the blocks the
users quoted from their RHEL 8 vmcore (tests/unit/data/postmortem/seeds/,
verbatim)."""
import glob
import os
import random
import re
import time

import pytest

from helpers import pcap_file
from skbtrace.postmortem import crashdump
from skbtrace.kernel import event, flightrec, gso, rules

try:
    from hypothesis import given, settings, HealthCheck, strategies as st
except ImportError:     # Debian: python3-hypothesis
    given = None

try:
    from scapy.all import Ether, IP, UDP, TCP, raw, rdpcap
except ImportError:     # Debian: python3-scapy
    IP = None

HERE = os.path.dirname(__file__)
PM = os.path.join(HERE, "data", "postmortem")
SEEDS = os.path.join(PM, "seeds")
SKB = 0xffff888007ce9f00
HEAD = 0xffff88801b6d8c00
SHINFO = 0xffff88801b6d8ec0
END = 704                  # struct sk_buff end: the shared info is at head + 704
RD = re.compile(r"^(ffff88801b6d8[c-e][0-9a-f]0):  ")   # the session's `rd -8 HEAD 704`


def read(path):
    with open(path) as f:
        return f.read()


SESSION = read(os.path.join(PM, "6.1-crash-session.txt"))
CONSOLE = read(os.path.join(PM, "6.1-crash-console.log"))


def rd_cut(text, keep):
    """The real transcript with only the lines of its `rd -8` dump whose
    address keep(offset from head) accepts: a session that read less."""
    out = []
    for line in text.splitlines():
        m = RD.match(line)
        if m is None or keep(int(m.group(1), 16) - HEAD):
            out.append(line)
    return "\n".join(out) + "\n"


def seed(name):
    return read(os.path.join(SEEDS, name))


@pytest.fixture(scope="module")
def session():
    return crashdump.parse(SESSION)


# --- recognising crash output ---------------------------------------------------

def test_looks_like_crash_output_and_not_consoles():
    assert crashdump.looks_like(SESSION)
    assert crashdump.looks_like(SESSION.encode())
    assert crashdump.looks_like(SESSION.splitlines())
    for name in ("004_f1ae773d96008a84-bt.txt", "004_f1ae773d96008a84-shinfo.txt",
                 "003_c5bd4d674fe1dc3b-example-struct-sk_buff.txt",
                 "003_c5bd4d674fe1dc3b-example-p-skb.txt"):
        assert crashdump.looks_like(seed(name)), name
    consoles = glob.glob(os.path.join(HERE, "data", "consoles", "*.log"))
    assert len(consoles) >= 4
    for path in consoles + [os.path.join(PM, "6.1-crash-console.log")]:
        assert not crashdump.looks_like(read(path)), path     # oopses, not crash
    assert not crashdump.looks_like("")
    assert not crashdump.looks_like(b"\x00\xff" * 100)
    assert not crashdump.looks_like(42)


# --- the real 6.1 session --------------------------------------------------------

def test_session_skb_state(session):
    assert list(session.skbs) == [SKB]
    st = session.skbs[SKB]
    assert (st.len, st.data_len) == (2948, 2896)
    assert (st.head, st.data - st.head, st.tail, st.end) == (HEAD, 268, 320, 704)
    assert (st.mac_header, st.network_header, st.transport_header) == (268, 268, 288)
    assert (st.inner_mac_header, st.inner_network_header, st.inner_transport_header) == \
        (268, 268, 288)
    assert st.encapsulation == 0 and st.cloned == 0
    assert st.protocol == 0x0800          # crash prints the __be16 as stored: 8
    # the shared info at head + end (the session's own `eval` says where)
    assert st.shinfo_addr == SHINFO
    assert ("eval 0xffff88801b6d8c00 + 704", SHINFO) in session.values
    assert (st.nr_frags, st.frag_list, st.gso_size, st.gso_segs, st.gso_type) == \
        (0, 0, 1448, 0, 0x403)
    # frags[] keeps the two entries the fault injector orphaned (nr_frags 2 -> 0)
    assert st.frags == [1448, 1448] + [0] * 15
    assert st.frags_bytes == 0
    assert SHINFO in session.shinfos and session.orphans == []
    assert session.errors == []
    assert session.release == "6.1.0-57-amd64"


def test_session_p_value_agrees_with_struct(session):
    p = [v for c, v in session.values if c and c.startswith("p/x")]
    assert p == [session.skbs[SKB].gso_type] == [0x403]


def test_session_backtrace(session):
    bt = session.backtrace
    assert "[exception RIP: skb_segment+588]" in bt
    assert "#8 [ffffc900000d0940] skb_udp_tunnel_segment at ffffffff818be155" in bt
    assert bt.index("[exception RIP: skb_segment+588]") < \
        bt.index("#5 [ffffc900000d0870] tcp_gso_segment at ffffffff818b2fae")
    assert len(session.backtraces) == 1          # `bt -f` repeats `bt`: kept once
    assert session.crash_site() == ("skb_segment", "588", "bt")
    exc = [f for f in session.frames if f.exception][0]
    assert exc.regs["R12"] == SKB and exc.regs["RIP"] == 0xffffffff817c68dc
    assert exc.regs["RSI"] == SHINFO and exc.regs["R10"] == HEAD
    assert session.callers()[:4] == ["tcp_gso_segment", "inet_gso_segment",
                                     "skb_mac_gso_segment", "skb_udp_tunnel_segment"]
    assert [f.module for f in session.frames if f.module] == ["veth"]


def test_session_panic_lines_and_log_trace(session):
    assert "BUG: kernel NULL pointer dereference, address: 0000000000000070" in session.panic
    assert "Kernel panic - not syncing: Fatal exception in interrupt" in session.panic
    assert "RIP: 0010:skb_segment+0x24c/0xf40" in session.panic
    assert session.log_rip == ("skb_segment", "0x24c")
    assert int(session.log_rip[1], 16) == int(session.crash_site()[1])   # 0x24c == 588
    assert session.log_trace[:4] == session.callers()[:4]
    assert not any("0033" in p for p in session.panic)       # the user-space RIP


def test_session_memory(session):
    # rd -8 HEAD 704: the head buffer up to the shared info at head + end
    head = session.memory[HEAD]
    assert len(head) == END and session.read(HEAD + END, 1) is None
    # the headroom, zeros; the packet from head+226 (the outer Ethernet header,
    # 2 bytes into the line at head+224) to tail (320); zeros after it
    assert head[:226] == b"\0" * 226 and head[320:] == b"\0" * (END - 320)
    assert head[226:240] == bytes.fromhex("023f3c849fea" "9adb4acadeca" "0800")
    assert head[240:244] == bytes.fromhex("45000ba0")       # IPv4, total length 2976
    assert head[260:268] == bytes.fromhex("9c4017c10b8c0000")   # UDP 40000 -> 6081
    assert head[268:272] == bytes.fromhex("45000b84")       # IPv4, total length 2948 = len
    assert head[288:292] == bytes.fromhex("aaa82328")       # TCP 43688 -> 9000
    # skb->data (head+268, `data = 0xffff88801b6d8d0c "E"`) points at the inner IPv4
    st = session.skbs[SKB]
    assert head[st.data - st.head:st.data - st.head + 1] == b"E"
    # bt -f stack words, little endian, merged into one range
    stack = [a for a in session.memory if a != HEAD]
    assert stack == [0xffffc900000d05a0]
    assert session.read(0xffffc900000d05a0, 8) == (8).to_bytes(8, "little")
    assert session.read(0xffffc900000d06f8 + 8, 8) == SKB.to_bytes(8, "little")


def test_session_gso_cb(session):
    """skb->cb as gdb prints it (octal escapes, a UTF-8 character for bytes
    d8 9e): SKB_GSO_CB(skb)->mac_offset at cb + 32 is 226, the headroom at
    __skb_gso_segment's entry, where the outer Ethernet header is; encap_level
    next to it is 20, the inner IPv4 header inet_gso_segment added after
    __skb_udp_tunnel_segment reset it."""
    assert session.skbs[SKB].gso_mac_offset == 226
    cb = [l for l in SESSION.splitlines() if l.startswith("  cb = ")][0]
    b = crashdump._gdb_chars(cb.split(" = ", 1)[1].rstrip(","))
    assert len(b) == crashdump.CB_SIZE and b[24:28] == bytes.fromhex("d89effff")
    assert b[32:40] == (226).to_bytes(4, "little") + (20).to_bytes(4, "little")
    assert crashdump._gdb_chars('"ab", \'\\000\' <repeats 3 times>, "c\\377"') == \
        b"ab\0\0\0c\xff"
    assert crashdump._gdb_chars('"a\ufffd"') is None


def test_session_findings(session):
    (f,) = crashdump.skb_findings(session)
    assert f.family == "6" and f.skb is session.skbs[SKB]
    assert f.checks == rules.CHECK_SEGMENT and f.in_tunnel_segment
    # the dump is after skb_segment's __skb_push(doffset): linear 52 = headers
    assert f.reasons == event.RSN_SEG_UNCOVERED and f.undecided == 0
    assert f.severity == event.SEV_CRITICAL
    assert f.gso_names == "TCPV4|DODGY|UDP_TUNNEL" and not f.gso_family_dependent
    assert "gso_type=0x403(TCPV4|DODGY|UDP_TUNNEL)" in "\n".join(f.text)
    # the packet from the real bytes: the skb's offsets name the inner packet
    # (skb_udp_tunnel_segment moved them), SKB_GSO_CB(skb)->mac_offset the
    # outer headers it pulled
    assert [(l["name"], l["inner"], l["offset"], l["length"]) for l in f.layers] == [
        ("ethernet", False, 226, 14), ("ipv4", False, 240, 20), ("udp", False, 260, 8),
        ("ipv4", True, 268, 20), ("tcp", True, 288, 32)]
    assert not f.layers.truncated and f.layers.gso_mac_offset == 226
    eth, oip, udp, iip, tcp = [l["fields"] for l in f.layers]
    assert (eth["dst"], eth["src"], eth["ethertype"]) == (
        "02:3f:3c:84:9f:ea", "9a:db:4a:ca:de:ca", "0x0800")
    assert (oip["src"], oip["dst"], oip["protocol"], oip["total_length"]) == (
        "198.18.1.1", "198.18.2.1", 17, 2976)
    assert (udp["sport"], udp["dport"], udp["length"]) == (40000, 6081, 2956)
    assert (iip["src"], iip["dst"], iip["protocol"], iip["total_length"]) == (
        "198.18.1.1", "198.18.2.1", 6, 2948)
    assert (tcp["sport"], tcp["dport"], tcp["header_length"], tcp["flags"]) == (
        43688, 9000, 32, "PSH|ACK")
    # 2976 - 28 = 2948 = skb->len (data at the inner IPv4 after __skb_push)
    assert oip["total_length"] - 28 == iip["total_length"] == f.skb.len
    notes = "\n".join(f.notes)
    assert "packet: UDP dport 6081 is Geneve's port, but there is no Geneve header" in notes
    assert "packet: mac_header == network_header: no inner Ethernet header" in notes
    assert "packet: outer headers head+226..head+268 from SKB_GSO_CB(skb)->mac_offset" in notes
    # TCP ends at tail: the head holds headers only (the SEG_NO_PAYLOAD of the
    # live tools at skb_segment's entry)
    assert "packet: 0 bytes of payload in the head after the last header" in notes
    assert "does not hold" not in notes
    # family/l4proto: what the live tools read at network_header (the inner IPv4)
    assert (f.skb.family, f.skb.l4proto) == (4, 6)
    p = f.packet
    assert p.data == session.memory[HEAD][226:320] and (len(p.data), p.orig_len) == (94, 2990)
    assert any("__skb_push(head_skb, doffset)" in n for n in f.notes)
    # the tunnel rules stay quiet inside skb_udp_tunnel_segment (encapsulation 0,
    # inner == outer are that function's doing), as in the live tools
    assert not f.reasons & event.RSN_TUNNEL_MASK
    out = rules.evaluate(session.skbs[SKB], rules.CHECK_SEGMENT, in_tnl_seg=False)
    assert out & event.RSN_TUNNEL_NO_ENCAP and out & event.RSN_TUNNEL_INNER_EQ_OUTER
    (f418,) = crashdump.skb_findings(session, "4.18")
    assert f418.reasons == f.reasons and f418.gso_names == f.gso_names


def test_session_agrees_with_the_flight_record_on_the_console(session):
    """The live tools' record on the console was taken at skb_segment's
    entry (len before the push); with that len the mirror gives their bits."""
    recs = [r for r in flightrec.parse(CONSOLE.splitlines())
            if r.tool == "skb_frag_list_watcher"]
    assert len(recs) == 1 and recs[0].complete
    rec = dict((k, recs[0].int_field(k)) for k in ("skb", "len", "data_len", "nr_frags",
                                                   "gso_size", "gso_type", "reasons"))
    assert rec["reasons"] == 0x20 and rec["skb"] == SKB
    st = session.skbs[SKB]
    assert (rec["data_len"], rec["nr_frags"], rec["gso_size"], rec["gso_type"]) == \
        (st.data_len, st.nr_frags, st.gso_size, st.gso_type)
    entry = dict(st.as_dict(), len=rec["len"])
    assert rules.evaluate(entry, rules.CHECK_SEGMENT, in_tnl_seg=True) == rec["reasons"]
    # doffset pushed back by skb_segment = the head's linear part in the dump
    assert st.len - rec["len"] == st.tail - st.mac_header == 52


# --- the users' RHEL 8 blocks ------------------------------------------------------

def test_seed_004_backtrace():
    s = crashdump.parse(seed("004_f1ae773d96008a84-bt.txt"))
    assert s.crash_site() == ("skb_segment", "558", "bt")
    assert s.callers()[:4] == ["tcp_gso_segment", "inet_gso_segment", "skb_mac_gso_segment",
                               "skb_udp_tunnel_segment"]
    assert "#34 [ff3ca0584630fde8] ret_from_intr at ffffffffaa400b0f" in s.backtrace
    # the idle task's exception frame below the IRQ stack is not the crash
    assert s.backtrace.count("[exception RIP: native_safe_halt+14]") == 1
    exc = [f for f in s.frames if f.exception][0]
    assert exc.regs == {"RIP": 0xffffffffaa037f7e, "RSP": 0xff3ca05846b44708,
                        "RFLAGS": 0x10246, "RAX": 0, "RBX": 0, "RCX": 0, "RDX": 0,
                        "RSI": 0xff16ba3aa69472c0, "RDI": 0x544}
    assert [f.module for f in s.frames if f.module] == ["virtio_net", "virtio_net"]


def test_seed_004_shared_info_without_address():
    s = crashdump.parse(seed("004_f1ae773d96008a84-shinfo.txt"))
    assert s.skbs == {}
    (o,) = s.orphans
    assert (o.gso_size, o.gso_segs, o.frag_list, o.gso_type, o.nr_frags) == \
        (1348, 0, 0, 1027, 0)
    assert any("no address" in e for e in s.errors)


def test_seed_004_findings_with_family_418():
    text = seed("004_f1ae773d96008a84-bt.txt") + "\n" + seed("004_f1ae773d96008a84-shinfo.txt")
    (f,) = crashdump.skb_findings(crashdump.parse(text), "4.18")
    assert f.gso_names == "TCPV4|DODGY|UDP_TUNNEL"
    assert f.checks == rules.CHECK_SEGMENT and f.in_tunnel_segment
    # len/data_len were not quoted: the crash rule cannot be decided, and says so
    assert f.reasons == 0
    assert set(f.undecided_names) == {"NULL_FRAGLIST_GSO", "SEG_NO_PAYLOAD", "SEG_UNCOVERED"}
    assert "SEG_UNCOVERED undecided: the session lacks data_len, len" in f.notes


def test_seed_003_example_struct():
    s = crashdump.parse(seed("003_c5bd4d674fe1dc3b-example-struct-sk_buff.txt"))
    st = s.skbs[0xffff8880a1234567]
    assert (st.len, st.data_len, st.mac_header, st.network_header, st.transport_header) == \
        (9014, 0, 0, 14, 34)
    assert st.head == st.data == 0xffff8880b7654000 and st.encapsulation == 1
    assert (st.gso_size, st.gso_segs, st.gso_type) == (1448, 0, 65)
    assert any("gso_type printed inside struct sk_buff" in n for n in st.notes)
    # the note's comment calls 65 TCPV4|UDP_TUNNEL (an old bit table): it is not
    for fam in ("4.18", "6"):
        assert gso.for_family(fam).names(65) == "TCPV4|GRE"
    (f,) = crashdump.skb_findings(s, "4.18")
    assert f.gso_names == "TCPV4|GRE" and not f.reasons & event.RSN_TUNNEL_MASK


def test_seed_003_p_and_case_values():
    s = crashdump.parse(seed("003_c5bd4d674fe1dc3b-example-p-skb.txt"))
    assert s.values == [("p skb", 0xffff8880a1234567)]
    assert s.commands == ["frame 8", "p skb"]
    s = crashdump.parse(seed("003_c5bd4d674fe1dc3b-case-gso.txt"))
    (o,) = s.orphans
    assert (o.gso_type, o.gso_size, o.gso_segs) == (0x403, 1348, 0)
    assert gso.for_family("4.18").names(o.gso_type) == "TCPV4|DODGY|UDP_TUNNEL"


# --- order, prompts, other forms ------------------------------------------------

def blocks(text):
    out, cur = [], []
    for line in text.splitlines():
        if line.startswith("crash> ") and cur:
            out.append(cur)
            cur = []
        cur.append(line)
    out.append(cur)
    return out


def summary(s):
    return (dict((a, st.as_dict()) for a, st in s.skbs.items()), s.memory, s.backtrace,
            s.panic, sorted(s.values, key=repr))


def test_commands_in_any_order():
    want = summary(crashdump.parse(SESSION))   # not the fixture: skb_findings fills family
    rnd = random.Random(11)
    bl = blocks(SESSION)
    for _ in range(12):
        rnd.shuffle(bl)
        s = crashdump.parse([line for b in bl for line in b])
        assert summary(s) == want


def test_without_prompts_the_skb_has_no_address():
    text = "\n".join(l for l in SESSION.splitlines() if not l.startswith("crash> "))
    s = crashdump.parse(text)
    assert s.skbs == {}
    states = dict((o.shinfo_addr, o) for o in s.orphans)
    skb = [o for o in s.orphans if o.len is not None][0]
    assert (skb.len, skb.data_len, skb.head) == (2948, 2896, HEAD)
    assert skb.gso_type is None            # no address: no shared info attached
    assert any("no address" in e for e in s.errors)
    assert "[exception RIP: skb_segment+588]" in s.backtrace
    assert s.memory[HEAD] == crashdump.parse(SESSION).memory[HEAD] and \
        len(s.memory[HEAD]) == END
    assert states


def test_hex_values_member_form_and_p_deref():
    text = "\n".join([
        "crash> struct -x sk_buff.len,data_len,head,end ffff888007ce9f00",
        "  len = 0xb84,",
        "  data_len = 0xb50,",
        "  head = 0xffff88801b6d8c00 \"\",",
        "  end = 0x2c0,",
        "crash> p/x ((struct skb_shared_info *)0xffff88801b6d8ec0)->gso_type",
        "$1 = 0x403",
        "crash> p ((struct skb_shared_info *)0xffff88801b6d8ec0)->gso_size",
        "$2 = 1448",
    ])
    s = crashdump.parse(text)
    st = s.skbs[SKB]
    assert (st.len, st.data_len, st.end, st.gso_type, st.gso_size) == (2948, 2896, 704,
                                                                        0x403, 1448)


def render_rd8(addr, data):
    """`rd -8` output as crash 8.0.2 prints it (checked against the session)."""
    out = []
    for off in range(0, len(data), 16):
        chunk = bytearray(data[off:off + 16])
        hexes = " ".join("%02x" % c for c in chunk)
        text = "".join(chr(c) if 0x20 <= c < 0x7f else "." for c in chunk)
        out.append("%x:  %-47s   %s" % (addr + off, hexes, text))
    return out


def test_rd8_renderer_matches_crash(session):
    real = [l for l in SESSION.splitlines() if RD.match(l)]
    assert len(real) == END // 16
    assert render_rd8(HEAD, session.memory[HEAD]) == real


def test_conflicting_dumps_keep_the_later_and_say_so():
    text = ["crash> rd -8 %x 16" % HEAD] + render_rd8(HEAD, b"\1" * 16) + \
        ["crash> rd -8 %x 8" % (HEAD + 8)] + render_rd8(HEAD + 8, b"\2" * 8)
    s = crashdump.parse(text)
    assert s.memory == {HEAD: b"\1" * 8 + b"\2" * 8}
    assert any("disagree" in e for e in s.errors)


def test_rd_word_and_halfword_dumps_little_endian():
    text = "\n".join([
        "crash> rd 0xffff88801b6d8c00 3",
        "ffff88801b6d8c00:  0807060504030201 100f0e0d0c0b0a09   ................",
        "ffff88801b6d8c10:  1817161514131211                    ........",
        "crash> rd -32 0xffff88801b6d8c18 2",
        "ffff88801b6d8c18:  1c1b1a19 201f1e1d                     ........",
        "crash> rd -16 0xffff88801b6d8c20 1",
        "ffff88801b6d8c20:  2221                                  !\"",
    ])
    s = crashdump.parse(text)
    assert s.memory == {HEAD: bytes(range(1, 0x23))}


@pytest.mark.skipif(IP is None, reason="scapy not installed (Debian python3-scapy)")
def test_packet_and_pcap_when_the_memory_holds_the_head(tmp_path):
    """The real session: its `rd -8` covers the head, the pcap holds the
    packet as __skb_gso_segment got it, read back by scapy."""
    (f,) = crashdump.skb_findings(crashdump.parse(SESSION))
    assert f.reasons == event.RSN_SEG_UNCOVERED
    # caplen: the head from the outer Ethernet header to tail; orig_len:
    # skb->len (from skb->data, head+268) + the 42 bytes of outer headers
    assert (len(f.packet.data), f.packet.orig_len) == (320 - 226, 2948 + 268 - 226)
    assert not any("synthesized" in n for n in f.packet.notes)
    # the rest would be in the frags or the frag_list: this skb has neither
    assert "captured 94 of 2990 bytes: the rest should be in page frags or the frag_list, " \
        "but the frags hold 0 of data_len 2896 and frag_list is NULL" in f.packet.notes
    from skbtrace.kernel import packet
    path = str(tmp_path / "crash.pcap")
    assert pcap_file(path, [f.packet]) == 1
    (p,) = rdpcap(path)
    assert (len(p), p.wirelen) == (94, 2990) and raw(p) == f.packet.data
    assert (p[Ether].src, p[Ether].dst) == ("9a:db:4a:ca:de:ca", "02:3f:3c:84:9f:ea")
    assert (p[IP].src, p[IP].dst, p[IP].proto, p[IP].len) == ("198.18.1.1", "198.18.2.1",
                                                              17, 2976)
    assert (p[UDP].sport, p[UDP].dport) == (40000, 6081)
    # scapy leaves port 6081 raw (no Geneve header here): the inner packet is
    # the UDP payload itself
    inner = IP(raw(p[UDP].payload))
    assert (inner.src, inner.dst, inner.len) == ("198.18.1.1", "198.18.2.1", 2948)
    assert (inner[TCP].sport, inner[TCP].dport, str(inner[TCP].flags)) == (43688, 9000, "PA")


def test_a_session_that_read_less_says_what_to_read():
    """The real transcript with part of its `rd -8` taken out."""
    # the headroom only (head..head+224): no packet, and the rd command to add it
    s = crashdump.parse(rd_cut(SESSION, lambda off: off < 224))
    assert s.memory[HEAD] == b"\0" * 224
    (f,) = crashdump.skb_findings(s)
    assert f.layers is None and f.packet is None
    assert "the memory does not hold the packet (head+226..head+320): `rd -8 " \
        "0xffff88801b6d8ce2 94` in crash adds it" in f.notes
    assert f.reasons == event.RSN_SEG_UNCOVERED           # the state alone decides it
    # from head+256: the inner packet, not the outer headers before it
    s = crashdump.parse(rd_cut(SESSION, lambda off: off >= 256))
    (f,) = crashdump.skb_findings(s)
    assert [(l["name"], l["inner"], l["offset"]) for l in f.layers] == [
        ("ipv4", False, 268), ("tcp", False, 288)]
    assert f.layers[1]["fields"]["sport"] == 43688 and f.layers.gso_mac_offset is None
    assert any(n.startswith("the memory holds the packet from head+256, not the outer headers")
               and "`rd -8 0xffff88801b6d8ce2 94`" in n for n in f.notes)
    assert f.packet.orig_len == 2948 + 14 and len(f.packet.data) == 14 + 52
    assert any("synthesized" in n for n in f.packet.notes)
    # without `bt` and `log` nothing says the skb is inside __skb_gso_segment:
    # its cb is then not taken for the GSO CB, the skb's offsets alone are used
    kept = [b for b in blocks(SESSION) if b[0] not in ("crash> bt", "crash> bt -f",
                                                       "crash> log")]
    s = crashdump.parse([line for b in kept for line in b])
    assert s.crash_site() is None and s.skbs[SKB].gso_mac_offset == 226
    (f,) = crashdump.skb_findings(s)
    assert [(l["name"], l["offset"]) for l in f.layers] == [("ipv4", 268), ("tcp", 288)]
    assert f.layers.gso_mac_offset is None and f.packet.orig_len == 2948 + 14


# --- bad input ------------------------------------------------------------------

def parse_or_error(x):
    try:
        s = crashdump.parse(x)
    except crashdump.CrashParseError:
        return None
    for fam in ("6", "4.18"):
        crashdump.skb_findings(s, fam)
    crashdump.skb_findings(s)
    return s


def test_not_text_or_nothing_is_the_one_error():
    for bad in (None, 42, [1, 2], [b"ok", 3], object()):
        with pytest.raises(crashdump.CrashParseError):
            crashdump.parse(bad)
    for empty in ("", b"", [], "\n\n", "WARNING: nothing\n", "hello world\n"):
        with pytest.raises(crashdump.CrashParseError):
            crashdump.parse(empty)


def test_truncated_at_every_line():
    lines = SESSION.splitlines()
    for i in range(len(lines) + 1):
        parse_or_error(lines[:i])
    for i in range(0, len(lines), 5):
        parse_or_error(lines[i:])
    # a struct cut in the middle keeps what was printed, and says so
    cut = lines[:lines.index("  len = 2948,") + 3]
    s = crashdump.parse(cut)
    assert s.skbs[SKB].len == 2948 and s.skbs[SKB].data_len == 2896
    assert any("truncated" in e for e in s.errors)


def test_mutated_transcripts():
    rnd = random.Random(5)
    lines = SESSION.splitlines()
    for _ in range(300):
        cur = list(lines)
        for _ in range(rnd.randint(1, 25)):
            j = rnd.randrange(len(cur))
            op = rnd.randrange(5)
            if op == 0:
                cur[j] = cur[j][:rnd.randrange(len(cur[j]) + 1)]
            elif op == 1:
                del cur[j]
            elif op == 2:
                cur.insert(j, cur[rnd.randrange(len(cur))])
            elif op == 3 and cur[j]:
                k = rnd.randrange(len(cur[j]))
                cur[j] = cur[j][:k] + rnd.choice("{}\"',=#x0 \\\x00\xff") + cur[j][k + 1:]
            else:
                cur[j] = "".join(chr(rnd.randrange(0, 0x3000)) for _ in range(rnd.randint(0, 40)))
            if not cur:
                break
        parse_or_error(cur)


def test_random_bytes():
    rnd = random.Random(6)
    for _ in range(200):
        parse_or_error(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 4000))))


def test_huge_and_deep_inputs():
    t0 = time.time()
    parse_or_error("struct sk_buff {\n" + "{" * 200000 + "\n")
    parse_or_error("crash> struct sk_buff 0xffff888007ce9f00\nstruct sk_buff {\n" +
                   "  a = {\n" * 20000 + "  len = 1,\n")
    parse_or_error(["x" * 2000000, "crash> bt"])
    rd = ["%x:  %s   ................" % (HEAD + 16 * i, " ".join(["ab"] * 16))
          for i in range(50000)]
    s = crashdump.parse(["crash> rd -8 %x 800000" % HEAD] + rd)
    assert s.memory == {HEAD: b"\xab" * 800000}
    assert time.time() - t0 < 60


if given is not None:
    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=2000))
    def test_hypothesis_bytes(data):
        parse_or_error(data)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(SESSION.splitlines()), max_size=120),
           st.lists(st.lists(st.integers(0, 0x3000).map(chr), max_size=60).map("".join),
                    max_size=5))
    def test_hypothesis_recombined_lines(picked, noise):
        parse_or_error(picked + noise)
