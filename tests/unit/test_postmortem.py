"""skb_postmortem as users run it (the launcher, a subprocess) on real
inputs: both tools' logs of the Calico-pattern lab run, the flight records,
consoles and the crash session of real panics."""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from skbtrace import manpage
from skbtrace.postmortem import cli as postmortem

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PM = os.path.join(HERE, "data", "postmortem")
CONSOLES = os.path.join(HERE, "data", "consoles")
LAUNCHER = os.path.join(ROOT, "skb_postmortem.py")
TEXT = [os.path.join(PM, n) for n in ("6.1-calico-watcher.log.gz",
                                      "6.1-calico-detector.log.gz", "6.1-calico-trace.txt")]
JSONS = [os.path.join(PM, n) for n in ("6.1-calico-watcher.json.gz",
                                       "6.1-calico-detector.json.gz")]
CRASH_CONSOLE = os.path.join(PM, "6.1-crash-console.log")


def run(args, stdin=None):
    p = subprocess.Popen([sys.executable, LAUNCHER] + args, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    out, err = p.communicate(stdin, timeout=120)
    return p.returncode, out.decode(), err.decode()


def one_line_error(rc, err, code, text):
    assert rc == code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert text in err, err


def test_both_text_logs_and_the_trace_tell_the_pull_data_packet():
    rc, out, err = run(TEXT + ["--max", "2"])
    assert rc == 0 and err == "", err
    lines = out.splitlines()
    story = out.split("=== skb 0xffff88801e727400, packet 1 of 10 at this address")[1]
    story = story.split("\n\n")[0]
    assert "UDP_TUNNEL:  set by bpf_skb_adjust_room at 09:20:34.140575 (BPF_HELPER; pattern " \
           "D: a BPF program encapsulated) [2]" in story
    assert "cleared by __pskb_pull_tail in bpf_skb_pull_data at 09:20:34.140014 " \
           "(0xffff88801e71e400 -> NULL) [1]" in story
    assert "skb_segment: [WARNING] skb_segment at 09:20:34.140645 (inside " \
           "skb_udp_tunnel_segment): gso_type=0x403(TCPV4|DODGY|UDP_TUNNEL)" in story
    # the timeline merges both logs in time order, each line as its tool wrote it
    tl = [l for l in story.splitlines() if l.startswith("  [")]
    times = [l.split()[1] for l in tl]
    assert times == sorted(times) and len(tl) == 10
    with gzip.open(TEXT[0], "rt") as f:
        assert tl[0][6:] in f.read()
    assert any(l.startswith("clock: 12 flight records; 9 also in the logs") for l in lines)
    assert "--- Packets by (UDP_TUNNEL setter, frag_list clearer) ---" in lines
    assert "lost 2524 events" in lines[1]


def test_json_logs_tell_flows_and_the_node():
    rc, out, _err = run(JSONS + ["--max", "1"])
    assert rc == 0
    assert ", node lab (" in out
    assert "packet:      198.18.1.1:57964 -> 198.18.2.1:9000 tcp; then outer not parsed, " \
           "inner 198.18.1.1:57964 -> 198.18.2.1:9000 tcp; then 198.18.1.1:40000 -> " \
           "198.18.2.1:6081 udp, inner 198.18.1.1:57964 -> 198.18.2.1:9000 tcp" in out


def test_json_output_records_all_carry_host_and_boot_id():
    rc, out, _err = run(TEXT + ["--json", "--max", "1"])
    assert rc == 0
    recs = [json.loads(l) for l in out.splitlines()]
    assert [r["type"] for r in recs] == ["postmortem_input"] * 3 + [
        "postmortem_clock", "postmortem_skb", "postmortem_summary"]
    for r in recs:
        assert r["tool"] == "skb_postmortem" and "host" in r and "boot_id" in r
    skb = recs[4]
    assert skb["skb"] == "0xffff88801e727400" and skb["packet"] == 1
    assert skb["udp_tunnel"]["function"] == "bpf_skb_adjust_room"
    assert skb["frag_list"]["cleared_by"] == ["__pskb_pull_tail", "bpf_skb_pull_data"]
    assert skb["skb_segment"]["gso_type_names"] == "TCPV4|DODGY|UDP_TUNNEL"
    assert len(skb["timeline"]) == 10
    rows = recs[5]["rows"]
    assert sum(r["packets"] for r in rows) == recs[5]["packets"]


def test_the_oops_skb_from_a_console():
    rc, out, _err = run([CRASH_CONSOLE])
    assert rc == 0
    assert "picked: the oops's skb; telling 1" in out
    assert "=== skb 0xffff888007ce9f00, a packet known only from flight records" in out
    assert "skb_segment: [CRITICAL] skb_segment at [198.633882] (inside " \
           "skb_udp_tunnel_segment)" in out
    assert "SEG_NO_PAYLOAD: skb_segment: no payload in the head" in out
    assert "set by bpf_skb_adjust_room (named by skb_segment's origin=; pattern D" in out
    assert "the skb's address is in R12 at the oops" in out
    assert "last change before skb_segment: skb_gro_receive, 5529 us before" in out


@pytest.mark.parametrize("base", ["6.1-injected-encap", "5.10-injected-encap",
                                  "5.10-natural-pull-data"])
def test_both_record_versions_tell_the_same_story(base):
    """The same panic recorded as SKBFR1 and as SKBFR2 (two lab runs): one
    story but for the skb's address, the times, the ages and the CPU."""
    def story(name):
        rc, out, err = run([os.path.join(CONSOLES, name)])
        assert rc == 0, err
        out = out.replace(os.path.join(CONSOLES, name), "CONSOLE")
        out = re.sub(r"0xffff[0-9a-f]{12}", "SKB", out)
        out = re.sub(r"\[ *\d+\.\d{6}\]( \d )?", "[T] ", out)
        return re.sub(r"\+\d+us|\d+ us before", "AGE", out)
    old, new = story(base + ".log"), story(base + "-skbfr2.log")
    assert "=== skb SKB, a packet known only from flight records" in new
    assert "[CRITICAL] skb_segment" in new
    assert old == new


def test_natural_panic_names_the_clearer_from_last():
    rc, out, _err = run([os.path.join(CONSOLES, "5.10-natural-pull-data.log")])
    assert rc == 0
    assert "cleared by bpf_skb_pull_data, the last change before skb_segment_list" in out
    assert "FRAGLIST_NO_LIST" in out and "SEGLIST_NO_LIST" in out


def test_skb_picks_an_address_and_its_absence_is_one_line():
    rc, out, _err = run(TEXT[:2] + ["--skb", "ffff88801e727400", "--max", "0"])
    assert rc == 0
    assert out.count("=== skb 0xffff88801e727400, packet ") == 10
    assert "picked:      asked for (--skb)" in out
    rc, out, err = run(TEXT[:2] + ["--skb", "0xffff888000000000"])
    one_line_error(rc, err, 1, "--skb 0xffff888000000000: no packet of this address")
    rc, out, err = run(TEXT[:2] + ["--skb", "nothex"])
    one_line_error(rc, err, 2, "'nothex' is not an skb address")


def test_node_filter():
    rc, out, _err = run(JSONS + ["--node", "lab", "--max", "1"])
    assert rc == 0 and ", node lab (" in out
    rc, _out, err = run(JSONS + ["--node", "worker-3"])
    one_line_error(rc, err, 1, "--node worker-3: no record of this host in the inputs "
                               "(hosts: lab)")


def test_stdin_gzip_and_a_reader_that_goes_away():
    with open(JSONS[0], "rb") as f:
        data = f.read()
    rc, out, err = run(["-", JSONS[1], "--max", "1"], stdin=data)
    assert rc == 0 and "[1] stdin: skb_frag_list_watcher JSON" in out, err
    p = subprocess.Popen("%s %s %s | head -1" % (sys.executable, LAUNCHER, " ".join(TEXT)),
                         shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and len(out.splitlines()) == 1 and err == b"", err


@pytest.mark.parametrize("content,text", [
    (b"", "empty file: no skbtrace records, flight records or crash output found in"),
    (gzip.compress(b""), "empty after gunzip"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8, "binary data"),
    (b"just some text\nthat is not ours\n",
     "no skbtrace records, flight records or crash output found in"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt"),
])
def test_bad_input_is_one_line(tmp_path, content, text):
    p = tmp_path / "input"
    p.write_bytes(content)
    rc, _out, err = run([str(p)])
    one_line_error(rc, err, 2, text)


def test_unreadable_and_missing_files(tmp_path):
    rc, _out, err = run([str(tmp_path / "missing.log")])
    one_line_error(rc, err, 2, "cannot read")
    rc, _out, err = run([str(tmp_path)])
    one_line_error(rc, err, 2, "cannot read")


def test_help_version_and_manual_page():
    rc, out, _err = run(["--help"])
    assert rc == 0 and "examples:" in out and "--pcap FILE" in out
    rc, out, _err = run(["--version"])
    assert rc == 0 and out.startswith("skb_postmortem.py (skbtrace) ")
    assert ("skb_postmortem", "skbtrace.postmortem.cli") in manpage.COMMANDS
    roff = manpage.render("skb_postmortem", postmortem.make_parser("skb_postmortem"))
    assert ".SH EXAMPLES" in roff and "\\fIFILE\\fR ..." in roff
    if shutil.which("man"):
        p = subprocess.Popen(["man", "-l", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=dict(os.environ, MANWIDTH="100"))
        out, err = p.communicate(roff.encode(), timeout=60)
        assert p.returncode == 0 and b"warning" not in err.lower(), err


CRASH_SESSION = os.path.join(PM, "6.1-crash-session.txt")


def test_console_and_crash_session_tell_one_skb():
    rc, out, _err = run([CRASH_CONSOLE, CRASH_SESSION])
    assert rc == 0
    assert out.count("=== skb 0xffff888007ce9f00") == 1
    assert "crash [2]: panic at skb_segment+588 (from bt) <- tcp_gso_segment" in out
    assert "picked:      the crash transcript [2] shows struct sk_buff 0xffff888007ce9f00 " \
           "(panic in skb_segment)" in out
    # the same records in the console and in crash> log are told once
    assert out.count("(flight record, in the oops's ftrace dump)") == 2
    tl = out.split("timeline:\n")[1].split("\n\n")[0].splitlines()
    assert tl[-1].startswith("  [2] crash> struct sk_buff 0xffff888007ce9f00 (panic in "
                             "skb_segment): [CRITICAL] reasons=SEG_UNCOVERED")
    # the session's `rd -8` of the head: the packet as __skb_gso_segment got it
    assert "crash:       packet: ethernet | ipv4 198.18.1.1 > 198.18.2.1 | udp 40000 > 6081 " \
           "| inner ipv4 198.18.1.1 > 198.18.2.1 | inner tcp 43688 > 9000\n" in out
    assert "packet: UDP dport 6081 is Geneve's port, but there is no Geneve header" in out
    assert "does not hold" not in out


def test_crash_json_record():
    rc, out, _err = run([CRASH_SESSION, "--json"])
    assert rc == 0
    recs = [json.loads(l) for l in out.splitlines()]
    crash = [r for r in recs if r["type"] == "postmortem_crash"][0]
    assert crash["crash_site"] == "skb_segment+588" and crash["release"] == "6.1.0-57-amd64"
    assert crash["skbs"] == ["0xffff888007ce9f00"]
    skb = [r for r in recs if r["type"] == "postmortem_skb"][0]
    assert skb["crash"]["reason_names"] == ["SEG_UNCOVERED"]


def test_seed_blocks_pasted_from_crash():
    seeds = os.path.join(PM, "seeds")
    rc, out, _err = run([os.path.join(seeds, "004_f1ae773d96008a84-bt.txt"),
                         "--kernel", "4.18.0-553.47.1.el8_10"])
    assert rc == 0
    assert "crash [1]: panic at skb_segment+558 (from bt) <- tcp_gso_segment" in out
    assert "no struct sk_buff with its address" in out
    assert "gso_type names: built-in table (kernel family 4.18), kernel 4.18.0-553" in out
    rc, out, _err = run([os.path.join(seeds, "004_f1ae773d96008a84-shinfo.txt")])
    assert rc == 0 and "gso_type=0x403(TCPV4|DODGY|UDP_TUNNEL)" in out


HEAD = 0xffff88801b6d8c00


def test_pcap_of_the_crashed_skb(tmp_path):
    """The real session: its `rd -8` of the head holds the packet."""
    scapy = pytest.importorskip("scapy.all", reason="python3-scapy")
    pcap = tmp_path / "skb.pcap"
    rc, out, _err = run([CRASH_SESSION, "--pcap", str(pcap)])
    assert rc == 0
    assert "pcap: 1 packet written to %s" % pcap in out
    assert "pcap: 94 bytes from the head (from head+226 (SKB_GSO_CB(skb)->mac_offset): the " \
           "outer headers a tunnel GSO handler pulled included" in out
    assert "captured 94 of 2990 bytes: the rest should be in page frags or the frag_list, " \
           "but the frags hold 0 of data_len 2896 and frag_list is NULL)" in out
    pkts = scapy.rdpcap(str(pcap))
    assert len(pkts) == 1
    p = pkts[0]
    assert (len(p), p.wirelen) == (94, 2990)
    with open(CRASH_SESSION) as f:
        head = bytes.fromhex(" ".join(l[19:66] for l in f.read().splitlines()
                                     if l.startswith("ffff88801b6d8") and l[16:18] == ": "))
    assert scapy.raw(p) == head[226:320]
    assert (p[scapy.IP].src, p[scapy.IP].dst, p[scapy.UDP].sport, p[scapy.UDP].dport) == (
        "198.18.1.1", "198.18.2.1", 40000, 6081)
    inner = scapy.IP(scapy.raw(p[scapy.UDP].payload))      # no Geneve header
    assert (inner.src, inner.dst, inner[scapy.TCP].sport, inner[scapy.TCP].dport) == (
        "198.18.1.1", "198.18.2.1", 43688, 9000)
    if shutil.which("tshark"):
        p = subprocess.Popen(["tshark", "-r", str(pcap), "-d", "udp.port==6081,ip", "-T",
                              "fields", "-e", "frame.len", "-e", "frame.cap_len", "-e",
                              "udp.dstport", "-e", "tcp.srcport", "-e", "tcp.dstport"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tout, terr = p.communicate(timeout=60)
        assert p.returncode == 0, terr
        assert tout.decode().split() == ["2990", "94", "6081", "43688", "9000"], tout


def session_without_packet_bytes(path):
    """The real transcript with its `rd -8` cut after the headroom (the
    lines from head+224 on, where the packet starts, taken out)."""
    with open(CRASH_SESSION) as f:
        lines = f.read().splitlines()
    rd = [i for i, l in enumerate(lines) if l.startswith("ffff88801b6d8") and l[16:18] == ": "]
    assert len(rd) == 44
    cut = [i for i in rd if int(lines[i][:16], 16) >= HEAD + 224]
    assert len(cut) == 30 and all(lines[i].endswith("................") for i in rd
                                  if i not in cut)
    path.write_text("\n".join(l for i, l in enumerate(lines) if i not in set(cut)) + "\n")
    return str(path)


def test_pcap_without_bytes_says_why(tmp_path):
    scapy = pytest.importorskip("scapy.all", reason="python3-scapy")
    pcap = tmp_path / "none.pcap"
    session = session_without_packet_bytes(tmp_path / "headroom-only.txt")
    rc, out, _err = run([session, "--pcap", str(pcap)])
    assert rc == 0 and "pcap: no packet could be rebuilt (the crash output does not hold " \
                       "the packet bytes" in out
    assert "the memory does not hold the packet (head+226..head+320): `rd -8 " \
           "0xffff88801b6d8ce2 94` in crash adds it" in out
    assert len(scapy.rdpcap(str(pcap))) == 0
