"""skb_postmortem --vmcore: bad input is one line and a non-zero exit.

The vmcore checks read files we make here (empty, not a vmcore, an ELF cut
short); the crash binary's absence and a crash that never answers are ours
to handle, so a stand-in script plays crash there. What real crash says
about a real vmcore is tested in the lab (tests/lab/test_vmcore_lab.py)."""
import gzip
import os
import re
import stat
import struct
import subprocess
import sys
import time

import pytest

from skbtrace.postmortem import crashrun
from test_postmortem import one_line_error

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER = os.path.join(os.path.dirname(os.path.dirname(HERE)), "skb_postmortem.py")


def run(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen([sys.executable, LAUNCHER] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd="/", env=e)
    out, err = p.communicate(timeout=60)
    return p.returncode, out.decode(), err.decode()


def elf_core(path, filesz, written):
    """An ELF64 core header whose one PT_LOAD says filesz bytes, then
    `written` bytes of it."""
    eh = bytearray(64)
    eh[0:4] = b"\x7fELF"
    eh[4], eh[5], eh[6] = 2, 1, 1
    struct.pack_into("<HHIQQQIHHHHHH", eh, 16, 4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 7, 4096, 0xffffffff81000000, 0, filesz, filesz, 4096)
    with open(path, "wb") as f:
        f.write(bytes(eh) + ph + b"\0" * (4096 - 64 - len(ph)) + b"\0" * written)


@pytest.fixture
def vmlinux(tmp_path):
    p = tmp_path / "vmlinux"
    p.write_bytes(b"\x7fELF" + b"\0" * 60)
    return str(p)


def fake_crash(tmp_path, body):
    p = tmp_path / "crash"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_zero_length_vmcore(tmp_path, vmlinux):
    (tmp_path / "vmcore").write_bytes(b"")
    rc, out, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux])
    one_line_error(rc, err, 2, "empty file (0 bytes)")
    assert out == ""


def test_not_a_vmcore(tmp_path, vmlinux):
    (tmp_path / "vmcore").write_text("Linux version 6.1.0\n" * 10)
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux])
    one_line_error(rc, err, 2, "not a vmcore (no ELF, KDUMP or DISKDUMP header)")


def test_truncated_elf_vmcore(tmp_path, vmlinux):
    elf_core(str(tmp_path / "vmcore"), 1 << 20, 1000)
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux])
    one_line_error(rc, err, 2, "truncated: 5096 of the %d bytes" % (4096 + (1 << 20)))


def test_whole_elf_vmcore_passes_the_check(tmp_path):
    elf_core(str(tmp_path / "vmcore"), 8192, 8192)
    assert crashrun.vmcore_kind(str(tmp_path / "vmcore")) == "ELF"


def test_flattened_makedumpfile_output_says_what_to_do(tmp_path, vmlinux):
    (tmp_path / "vmcore").write_bytes(b"makedumpfile\0\0\0\0" + b"\0" * 4096)
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux])
    one_line_error(rc, err, 2, "makedumpfile -R")


def test_vmlinux_that_is_not_elf(tmp_path):
    elf_core(str(tmp_path / "vmcore"), 8192, 8192)
    (tmp_path / "vmlinux").write_text("not a kernel")
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux",
                      str(tmp_path / "vmlinux")])
    one_line_error(rc, err, 2, "not an ELF kernel image")


def test_no_crash_on_path(tmp_path, vmlinux):
    elf_core(str(tmp_path / "vmcore"), 8192, 8192)
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux],
                     env={"PATH": str(tmp_path / "empty")})
    one_line_error(rc, err, 2, "no `crash` on PATH")


def test_crash_option_not_executable(tmp_path, vmlinux):
    elf_core(str(tmp_path / "vmcore"), 8192, 8192)
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux,
                      "--crash", str(tmp_path / "nope")])
    one_line_error(rc, err, 2, "--crash %s: not an executable file" % (tmp_path / "nope"))


def test_crash_that_hangs_is_killed_with_its_children(tmp_path, vmlinux):
    elf_core(str(tmp_path / "vmcore"), 8192, 8192)
    pidfile = tmp_path / "child.pid"
    # crash's own children (its pager, gdb) must go too: a child that sleeps
    crash = fake_crash(tmp_path, "sleep 300 & echo $! > %s; wait" % pidfile)
    t0 = time.time()
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux,
                      "--crash", crash, "--crash-timeout", "2"])
    assert time.time() - t0 < 30
    one_line_error(rc, err, 2, "did not finish in 2 s (--crash-timeout): killed")
    child = int(pidfile.read_text())
    for _ in range(50):
        if not os.path.exists("/proc/%d" % child) or \
                open("/proc/%d/stat" % child).read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("crash's child %d still runs" % child)


def test_crash_that_answers_nothing_is_one_line(tmp_path, vmlinux):
    # what crash prints when it gives up before its prompt: its last word is kept
    elf_core(str(tmp_path / "vmcore"), 8192, 8192)
    crash = fake_crash(tmp_path, "cat >/dev/null; echo 'crash: cannot open it' ; exit 1")
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux,
                      "--crash", crash])
    one_line_error(rc, err, 2, "crash could not open")
    assert "(exit 1): crash: cannot open it" in err


@pytest.mark.parametrize("args, text", [
    (["--vmcore", "/x"], "--vmcore needs --vmlinux"),
    (["--vmlinux", "/x", "f"], "--vmlinux needs --vmcore"),
    (["--save-transcript", "/x", "f"], "--save-transcript needs --vmcore"),
    ([], "nothing to read"),
    (["--vmcore", "/x", "--vmlinux", "/y", "--crash-timeout", "0"], "is not positive"),
])
def test_option_errors(args, text):
    rc, _, err = run(args)
    assert rc == 2 and text in err and "Traceback" not in err, err


def test_flight_skbs_of_a_real_panic_name_the_broken_skb_first():
    # the console of the lab's injected panic: the skb the injector broke is
    # the one the CRITICAL records name
    with open(os.path.join(HERE, "data", "postmortem", "6.1-crash-console.log")) as f:
        text = f.read()
    broke = int(re.search(r"breaking skb ([0-9a-f]{16})", text).group(1), 16)
    crit, _ = crashrun.flight_skbs(text)
    assert crit == [broke]


# crash replayed from real sessions: what skb_postmortem --vmcore asked real
# crash on the lab's dumps and what it answered (--save-transcript), so the
# rounds, the redirection and the reading run here without a vmcore
REPLAY = r'''#!/usr/bin/python3
import re, sys
answers, cmd = {}, None
for line in open(sys.argv[-1].replace(".vmcore", ".txt")):
    if line.startswith("crash> "):
        cmd = line[7:].rstrip("\n")
        answers[cmd] = ""
    elif cmd is not None:
        answers[cmd] += line
for line in sys.stdin:
    m = re.match(r"^(.*) > (\S+)$", line.rstrip("\n"))
    if m:
        with open(m.group(2), "w") as f:
            f.write(answers.get(m.group(1), "%s: not in the recorded session\n" % m.group(1)))
'''


@pytest.mark.parametrize("session, skb, flow", [
    ("6.1-vmcore-session.txt", "0xffff88800521c300", "inner tcp 34214 > 9000"),
    ("5.10-vmcore-session.txt", "0xffff88807d948a00", "inner tcp 58780 > 9000"),
    ("5.10-vmcore-session-crash7.txt", "0xffff88807d948a00", "inner tcp 58780 > 9000"),
    ("6.1-kdump-session.txt", "0xffff8880096cd800", "inner tcp 55654 > 9000"),
    ("5.10-kdump-session-crash7.txt", "0xffff888004c4eb00", "inner tcp 52260 > 9000"),
])
def test_replayed_sessions_tell_the_injected_skb(tmp_path, vmlinux, session, skb, flow):
    src = os.path.join(HERE, "data", "postmortem", session)
    vmcore = tmp_path / "dump.vmcore"
    elf_core(str(vmcore), 8192, 8192)
    with open(src) as f, open(str(tmp_path / "dump.txt"), "w") as g:
        g.write(f.read())
    crash = tmp_path / "crash"
    crash.write_text(REPLAY)
    crash.chmod(0o755)
    saved = tmp_path / "saved.txt"
    rc, out, err = run(["--vmcore", str(vmcore), "--vmlinux", vmlinux, "--crash", str(crash),
                        "--save-transcript", str(saved), "--pcap", str(tmp_path / "p.pcap")])
    assert rc == 0 and not err, err
    assert "=== skb %s" % skb in out and "picked: the oops's skb" in out
    assert "UDP_TUNNEL:  set by bpf_skb_adjust_room" in out
    assert "packet: ethernet | ipv4 198.18.1.1 > 198.18.2.1 | udp 40000 > 6081 |" in out
    assert flow in out and "pcap: 1 packet written" in out
    # the same commands, in the same order, as the real run asked
    with open(src) as f:
        asked = [l for l in f if l.startswith("crash> ")]
    assert [l for l in saved.read_text().splitlines(True) if l.startswith("crash> ")] == asked


def test_kdump_vmcore_dmesg_alone_tells_the_flight_records():
    # makedumpfile --dump-dmesg in the lab's capture kernel (kdump_lab.py --inject)
    path = os.path.join(HERE, "data", "postmortem", "6.1-kdump-vmcore-dmesg.txt")
    rc, out, err = run([path])
    assert rc == 0 and not err, err
    assert "=== skb 0xffff8880096cd800" in out and "picked: the oops's skb" in out
    assert "dumped this skb's CRITICAL flight record" in out
    assert "UDP_TUNNEL:  set by bpf_skb_adjust_room" in out
    assert "skb_segment: [CRITICAL] skb_segment at [175.389562]" in out


def test_kdump_compressed_vmcore_of_its_full_length_passes(tmp_path):
    # the lab kdump vmcore's real head, its pages' bytes zeros up to its length
    with gzip.open(os.path.join(HERE, "data", "postmortem", "6.1-kdump-vmcore-head.gz")) as f:
        head = f.read()
    with open(str(tmp_path / "v"), "wb") as f:
        f.write(head)
        f.truncate(45203061)
    assert crashrun.vmcore_kind(str(tmp_path / "v")) == "kdump-compressed"


def test_truncated_kdump_compressed_vmcore(tmp_path, vmlinux):
    # the first bytes of the lab's kdump vmcore (makedumpfile -l -d 31 in the
    # capture kernel): header, bitmaps and page descriptors, no page; crash
    # itself exits 1 on such a file without a word
    with gzip.open(os.path.join(HERE, "data", "postmortem", "6.1-kdump-vmcore-head.gz")) as f:
        (tmp_path / "vmcore").write_bytes(f.read())
    rc, _, err = run(["--vmcore", str(tmp_path / "vmcore"), "--vmlinux", vmlinux])
    one_line_error(rc, err, 2, "truncated kdump-compressed vmcore: its 43204 pages end at "
                               "byte 45203061")
