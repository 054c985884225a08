"""-o FILE and logrotate: SIGHUP reopens the path between two lines, in the
run loop (the handler only takes note). Driven by the fake bcc; the lab runs
the systemd unit and logrotate for real."""
import json
import os
import signal
import subprocess
import sys
import time

from helpers import make_event, to_bytes
from skbtrace.kernel import event, hooks
from skbtrace.watcher import main

HERE = os.path.dirname(os.path.abspath(__file__))
SEG = dict((h.name, h.hook_id) for h in hooks.watcher_hooks())["skb_segment"]


def script(npolls, per_poll=10):
    return [[to_bytes(make_event(event=event.EV_ACCESS, hook_id=SEG, ts_ns=(i * per_poll + j) * 1000))
             for j in range(per_poll)] for i in range(npolls)]


def records(path):
    """Every line of a --json log must be one whole JSON object."""
    with open(path) as f:
        text = f.read()
    assert text.endswith("\n") or not text
    return [json.loads(l) for l in text.splitlines()]


def event_seq(objs):
    return [o["ts_ns"] // 1000 for o in objs if o["type"] == "event"]


def rotate(log, n, *signals):
    def act():
        os.rename(str(log), "%s.%d" % (log, n))
        for s in signals:
            os.kill(os.getpid(), s)
    return act


def test_sighup_reopens_between_lines(fake, tmp_path, capsys):
    log = tmp_path / "w.json"
    fake.BPF.script = script(8)
    fake.BPF.on_poll = {3: rotate(log, 1, signal.SIGHUP), 5: rotate(log, 2, signal.SIGHUP)}
    assert main(["--json", "-o", str(log)]) == 0
    first, second, last = (records("%s.1" % log), records("%s.2" % log), records(str(log)))
    # the lines of the poll that was running when the signal came still go to
    # the renamed file: the reopen waits for the loop
    assert event_seq(first) == list(range(40))
    assert event_seq(second) == list(range(40, 60))
    assert event_seq(last) == list(range(60, 80))
    assert last[-1]["type"] == "statistics" and last[-1]["total_events"] == 80
    err = capsys.readouterr().err
    assert err.count("SIGHUP: reopened %s\n" % log) == 2


def test_sigterm_during_rotation_loses_nothing(fake, tmp_path):
    log = tmp_path / "w.json"
    fake.BPF.script = script(6)
    # logrotate's HUP and a stop in the same poll: the loop reopens, drains
    # the buffers into the new file and writes the statistics there
    fake.BPF.on_poll = {2: rotate(log, 1, signal.SIGHUP, signal.SIGTERM)}
    assert main(["--json", "-o", str(log)]) == 0
    old, new = records("%s.1" % log), records(str(log))
    assert event_seq(old) == list(range(30))
    assert event_seq(new) == list(range(30, 40))        # the drain
    assert new[-1]["type"] == "statistics" and new[-1]["total_events"] == 40


def test_sighup_without_output_is_ignored(fake, capsys):
    fake.BPF.script = script(3)
    fake.BPF.on_poll = {1: lambda: os.kill(os.getpid(), signal.SIGHUP)}
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert "Total events:       30" in out and "SIGHUP" not in err


def test_reopen_failure_keeps_the_old_file(fake, tmp_path, capsys):
    log = tmp_path / "w.json"
    fake.BPF.script = script(4)

    def path_taken():
        os.rename(str(log), "%s.1" % log)
        os.mkdir(str(log))              # nothing can open this path as a file
        os.kill(os.getpid(), signal.SIGHUP)
    fake.BPF.on_poll = {1: path_taken}
    assert main(["--json", "-o", str(log)]) == 0
    old = records("%s.1" % log)
    assert event_seq(old) == list(range(40)) and old[-1]["type"] == "statistics"
    err = capsys.readouterr().err
    assert ("SIGHUP: not reopened: refusing %s: a directory, not a regular file (still writing "
            "to the old file)" % log) in err
    assert "Traceback" not in err


def test_logrotate_from_outside(tmp_path):
    """Another process renames and signals while the tool writes, as
    logrotate's postrotate does, and ends with SIGTERM right after a last
    rotation: every line is in exactly one file, whole, in order."""
    log = tmp_path / "w.json"
    env = dict(os.environ, FAKE_POLL_S="0.002")
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_run.py"), "watcher", "5000",
                          "SIGTERM", "--json", "-o", str(log)], env=env,
                         stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while not (log.exists() and log.stat().st_size) and time.time() < deadline:
        time.sleep(0.02)
    rotations = 5
    for n in range(1, rotations + 1):
        time.sleep(0.1)
        os.rename(str(log), "%s.%d" % (log, n))
        p.send_signal(signal.SIGHUP)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1].decode()
    assert p.returncode == 0, err
    files = ["%s.%d" % (log, n) for n in range(1, rotations + 1)] + [str(log)]
    objs = [records(f) for f in files]
    seq = [ts for o in objs for ts in event_seq(o)]
    assert seq == list(range(len(seq))) and len(seq) > 0
    assert objs[-1][-1]["type"] == "statistics" and objs[-1][-1]["total_events"] == len(seq)
    assert sum(1 for o in objs if event_seq(o)) >= 3, [len(event_seq(o)) for o in objs]
    assert err.count("SIGHUP: reopened") == rotations and "Traceback" not in err
