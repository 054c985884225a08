"""-o FILE and --pcap FILE as root writes them (skbtrace.output.sink.open_output):
a symbolic link, anything but a regular file, a file of another user and a
second name of a file are refused with one line, before any kernel, BTF or
bcc check, and left byte for byte as they were; new files are 0640."""
import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from helpers import make_event, to_bytes
from skbtrace.kernel import event, hooks
from skbtrace.output import sink
from skbtrace.output.sink import OutputError, open_output
from skbtrace.watcher import main as watcher_main

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WATCHER = os.path.join(ROOT, "skb_frag_list_watcher.py")
DETECTOR = os.path.join(ROOT, "skb_vxlan_source_detector.py")
POSTMORTEM = os.path.join(ROOT, "skb_postmortem.py")
CRASH_SESSION = os.path.join(HERE, "data", "postmortem", "6.1-crash-session.txt")
CONTENT = b"a log of someone else's\n"
NOBODY = 65534
SEG = dict((h.name, h.hook_id) for h in hooks.watcher_hooks())["skb_segment"]

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to uid 65534")


def run(launcher, args):
    p = subprocess.Popen([sys.executable, launcher] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd="/")
    out, err = p.communicate(timeout=60)
    return p.returncode, out.decode(), err.decode()


def snapshot(path):
    """What a refusal must leave as it was: the name, and what it points to."""
    st = os.lstat(path)
    shot = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_size,
            st.st_mtime_ns]
    if stat.S_ISLNK(st.st_mode):
        shot.append(os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            shot.append(f.read())
    return shot


def planted_target(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(CONTENT)
    return target


# Each plants something at tmp_path/"out.log"; returns (what the message
# says, the other paths that must not change).
def symlink_to_file(tmp_path, log):
    target = planted_target(tmp_path)
    os.symlink(str(target), str(log))
    return "a symbolic link (name the file itself)", [target]


def dangling_symlink(tmp_path, log):
    os.symlink(str(tmp_path / "not-there"), str(log))
    return "a symbolic link (name the file itself)", []


def other_users_file(tmp_path, log):
    log.write_bytes(CONTENT)
    os.chown(str(log), NOBODY, NOBODY)
    return "owned by uid 65534, neither root nor this user", []


def fifo(tmp_path, log):
    os.mkfifo(str(log))
    return "a FIFO, not a regular file", []


def directory(tmp_path, log):
    log.mkdir()
    return "a directory, not a regular file", []


def hard_link(tmp_path, log):
    target = planted_target(tmp_path)
    os.link(str(target), str(log))
    return "2 hard links (one file under another name)", [target]


PLANTS = [symlink_to_file, dangling_symlink, pytest.param(other_users_file, marks=as_root),
          fifo, directory, hard_link]


@pytest.mark.parametrize("plant", PLANTS)
@pytest.mark.parametrize("append", [True, False])
def test_open_output_refuses(tmp_path, plant, append):
    log = tmp_path / "out.log"
    text, others = plant(tmp_path, log)
    before = [snapshot(str(p)) for p in [log] + others]
    with pytest.raises(OutputError) as e:
        open_output(str(log), append=append)
    assert str(e.value) == "refusing %s: %s" % (log, text)
    assert [snapshot(str(p)) for p in [log] + others] == before
    assert not (tmp_path / "not-there").exists()


def test_swapped_after_the_check_is_refused_on_the_open_file(tmp_path, monkeypatch):
    """The name checked and the file opened may differ (a directory others
    can write to): what was opened is checked again."""
    log = tmp_path / "out.log"
    target = planted_target(tmp_path)
    os.symlink(str(target), str(log))
    monkeypatch.setattr(sink, "check_output", lambda path: None)
    with pytest.raises(OutputError) as e:
        open_output(str(log))
    assert str(e.value) == "refusing %s: a symbolic link (name the file itself)" % log
    os.unlink(str(log))
    os.mkfifo(str(log))
    with pytest.raises(OutputError) as e:      # and does not wait for a reader
        open_output(str(log))
    assert str(e.value) == "cannot open %s: No such device or address" % log
    assert target.read_bytes() == CONTENT


def test_new_file_is_0640_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        fd = open_output(str(tmp_path / "new.log"))
        os.close(fd)
        fd = open_output(str(tmp_path / "new.pcap"), append=False)
        os.close(fd)
    finally:
        os.umask(old)
    for n in ("new.log", "new.pcap"):
        assert stat.S_IMODE(os.stat(str(tmp_path / n)).st_mode) == 0o640


def test_own_file_is_appended_or_emptied_and_keeps_its_mode(tmp_path):
    log = tmp_path / "mine.log"
    log.write_bytes(b"one\n")
    os.chmod(str(log), 0o600)
    fd = open_output(str(log))
    os.write(fd, b"two\n")
    os.close(fd)
    assert log.read_bytes() == b"one\ntwo\n"
    fd = open_output(str(log), append=False)
    os.write(fd, b"new\n")
    os.close(fd)
    assert log.read_bytes() == b"new\n" and stat.S_IMODE(log.stat().st_mode) == 0o600


@pytest.mark.parametrize("plant", PLANTS)
def test_watcher_refuses_before_kernel_checks(tmp_path, plant):
    """On this host (no kprobes, no bcc that runs) the -o error is what
    comes out: it is checked with the arguments."""
    log = tmp_path / "out.log"
    text, others = plant(tmp_path, log)
    before = [snapshot(str(p)) for p in [log] + others]
    rc, out, err = run(WATCHER, ["--gso-only", "-o", str(log)])
    assert rc == 2, err
    assert err == "skb_frag_list_watcher.py: error: -o/--output: refusing %s: %s\n" % (
        log, text)
    assert out == ""
    assert [snapshot(str(p)) for p in [log] + others] == before


def test_detector_static_only_refuses(tmp_path):
    log = tmp_path / "out.log"
    symlink_to_file(tmp_path, log)
    rc, out, err = run(DETECTOR, ["--static-only", "-o", str(log)])
    assert rc == 2 and err.count("\n") == 1, err
    assert "-o/--output: refusing %s: a symbolic link" % log in err
    assert (tmp_path / "target").read_bytes() == CONTENT


@pytest.mark.parametrize("plant", PLANTS)
def test_postmortem_pcap_refused_before_reading(tmp_path, plant):
    """Refused at start: a missing input is not even looked at."""
    pcap = tmp_path / "out.log"
    text, others = plant(tmp_path, pcap)
    before = [snapshot(str(p)) for p in [pcap] + others]
    rc, out, err = run(POSTMORTEM, [str(tmp_path / "no-such-input"), "--pcap", str(pcap)])
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "--pcap: refusing %s: %s" % (pcap, text) in err
    assert [snapshot(str(p)) for p in [pcap] + others] == before


@pytest.mark.parametrize("plant", PLANTS)
def test_postmortem_save_transcript_refused_before_crash_runs(tmp_path, plant):
    """--save-transcript is written by root too: refused at start, before
    the vmcore is looked at or crash is started."""
    out_path = tmp_path / "crash.txt"
    text, others = plant(tmp_path, out_path)
    before = [snapshot(str(p)) for p in [out_path] + others]
    rc, out, err = run(POSTMORTEM, ["--vmcore", str(tmp_path / "no-such-vmcore"),
                                    "--vmlinux", str(tmp_path / "no-such-vmlinux"),
                                    "--save-transcript", str(out_path)])
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "--save-transcript: refusing %s: %s" % (out_path, text) in err
    assert [snapshot(str(p)) for p in [out_path] + others] == before


def test_postmortem_pcap_new_file_is_0640(tmp_path):
    pcap = tmp_path / "skb.pcap"
    old = os.umask(0)
    try:
        rc, out, err = run(POSTMORTEM, [CRASH_SESSION, "--pcap", str(pcap)])
    finally:
        os.umask(old)
    assert rc == 0, err
    assert "pcap: 1 packet written to %s" % pcap in out
    assert stat.S_IMODE(pcap.stat().st_mode) == 0o640


@pytest.mark.parametrize("plant", PLANTS)
def test_sighup_refuses_and_keeps_the_old_file(fake, tmp_path, capsys, plant):
    """logrotate renamed the log and someone planted something at its name
    before the signal: one line, no reopen, every line in the old file."""
    log = tmp_path / "out.log"
    fake.BPF.script = [[to_bytes(make_event(event=event.EV_ACCESS, hook_id=SEG,
                                            ts_ns=(i * 10 + j) * 1000)) for j in range(10)]
                       for i in range(4)]
    planted = []

    def rename_plant_hup():
        os.rename(str(log), "%s.1" % log)
        text, others = plant(tmp_path, log)
        planted.extend([text, [(p, snapshot(str(p))) for p in [log] + others]])
        os.kill(os.getpid(), signal.SIGHUP)
    fake.BPF.on_poll = {1: rename_plant_hup}
    assert watcher_main(["--json", "-o", str(log)]) == 0
    text, shots = planted
    with open("%s.1" % log) as f:
        old = [json.loads(line) for line in f]
    assert [o["ts_ns"] // 1000 for o in old if o["type"] == "event"] == list(range(40))
    assert old[-1]["type"] == "statistics"
    assert [(p, snapshot(str(p))) for p, _ in shots] == shots
    err = capsys.readouterr().err
    assert "SIGHUP: not reopened: refusing %s: %s (still writing to the old file)\n" % (
        log, text) in err
    assert "Traceback" not in err and "reopened %s" % log not in err
