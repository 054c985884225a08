"""deploy/: the DaemonSet against the Kubernetes schemas (kubernetes-validate,
which bundles them: offline), the systemd units' ExecStart lines against the
tools' own parsers, and the logrotate snippet run by the real logrotate
against a running tool (the fake bcc's run loop)."""
import configparser
import fnmatch
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from skbtrace import detector, watcher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(ROOT, "deploy")
DAEMONSET = os.path.join(DEPLOY, "daemonset.yaml")
UNITS = sorted(os.path.join(DEPLOY, "systemd", f) for f in os.listdir(os.path.join(DEPLOY, "systemd")))
LOGROTATE = os.path.join(DEPLOY, "logrotate", "skbtrace")
PARSERS = {"skb_frag_list_watcher": watcher.parse_args,
           "skb_vxlan_source_detector": detector.parse_args}
# the oldest and the newest Kubernetes the validator bundles
KUBE_VERSIONS = ("1.25.0", None)


def console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg.get("options.entry_points", "console_scripts").strip().splitlines()
    return dict((n.strip(), t.strip()) for n, t in (l.split("=", 1) for l in lines))


def validator():
    for path in (os.environ.get("SKBTRACE_KUBE_VALIDATE"),
                 os.path.join(ROOT, ".venv-tools", "bin", "kubernetes-validate"),
                 shutil.which("kubernetes-validate")):
        if path and os.access(path, os.X_OK):
            return path
    if os.environ.get("SKBTRACE_REQUIRE_VALIDATOR"):
        pytest.fail("kubernetes-validate is not installed: make check-deploy installs it "
                    "into .venv-tools", pytrace=False)
    pytest.skip("kubernetes-validate not installed (make check-deploy installs it)")


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_daemonset_against_kubernetes_schemas(version):
    cmd = [validator(), "--strict"] + (["-k", version] if version else []) + [DAEMONSET]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.communicate(timeout=120)[0].decode()
    assert p.returncode == 0, out
    assert "passed for resource daemonset/skbtrace" in out, out
    assert "passed for resource namespace/skbtrace" in out, out


@pytest.mark.parametrize("good,bad,error", [
    ("hostPID: true", "hostPid: true", "'hostPid' was unexpected"),
    ("privileged: true", "privileged: yes-please", "'yes-please' is not of type 'boolean'"),
])
def test_validator_rejects_a_broken_daemonset(tmp_path, good, bad, error):
    """The check can fail: a misspelt field, a wrong type."""
    with open(DAEMONSET) as f:
        text = f.read()
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(good, bad, 1))
    p = subprocess.Popen([validator(), "--strict", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = p.communicate(timeout=120)[0].decode()
    assert p.returncode != 0 and error in out, out


def daemonset():
    yaml = pytest.importorskip("yaml", reason="python3-yaml")
    with open(DAEMONSET) as f:
        docs = list(yaml.safe_load_all(f))
    return [d for d in docs if d["kind"] == "DaemonSet"][0]


def test_daemonset_runs_both_tools_as_bcc_needs():
    """What no schema knows: the commands exist, their arguments parse, and
    the pod has the kernel interfaces bcc reads."""
    pod = daemonset()["spec"]["template"]["spec"]
    assert pod["hostNetwork"] and pod["hostPID"] and pod["tolerations"]
    assert pod["nodeSelector"]["skbtrace.io/trace"] == "true"
    volumes = dict((v["name"], v["hostPath"]["path"]) for v in pod["volumes"])
    scripts = console_scripts()
    tools = []
    for c in pod["containers"]:
        (command,) = c["command"]
        assert command in scripts and command in PARSERS, command
        args = PARSERS[command](c["args"])
        assert args.json and not args.output     # records to stdout: the container log
        tools.append(command)
        assert c["securityContext"]["privileged"] is True
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}
        mounts = dict((m["mountPath"], volumes[m["name"]]) for m in c["volumeMounts"])
        for path in ("/sys/kernel/debug", "/sys/kernel/tracing", "/sys/kernel/btf",
                     "/lib/modules", "/usr/src", "/run/skbtrace"):
            assert mounts.get(path) == path, (command, path)
    assert sorted(tools) == sorted(PARSERS)


def unit(path):
    cfg = configparser.ConfigParser(interpolation=None, strict=True)
    cfg.optionxform = str
    cfg.read(path)
    return cfg


@pytest.mark.parametrize("path", UNITS)
def test_unit_exec_start_is_a_valid_invocation(path):
    svc = unit(path)["Service"]
    argv = shlex.split(svc["ExecStart"])
    command = os.path.basename(argv[0])
    assert argv[0] == "/usr/local/bin/" + command and command in console_scripts()
    assert os.path.basename(path) == command.replace("_", "-") + ".service"
    args = PARSERS[command](argv[1:])
    assert args.json and args.output == "/var/log/skbtrace/%s.json" % command
    assert os.path.dirname(args.output) == "/var/log/" + svc["LogsDirectory"]
    # SIGTERM: the tool drains and writes its statistics record
    assert svc["KillSignal"] == "SIGTERM" and svc["Restart"] == "on-failure"
    assert unit(path)["Unit"]["Documentation"] == "man:%s(8)" % command


def logrotate_config():
    with open(LOGROTATE) as f:
        text = f.read()
    m = re.search(r"^(\S+) \{\n(.*?)^\}", text, re.M | re.S)
    return m.group(1), m.group(2)


def test_logrotate_covers_the_units_and_signals_what_the_tool_handles():
    pattern, body = logrotate_config()
    for path in UNITS:
        out = PARSERS[os.path.basename(path)[:-8].replace("-", "_")](
            shlex.split(unit(path)["Service"]["ExecStart"])[1:]).output
        assert fnmatch.fnmatch(out, pattern), (out, pattern)
    post = re.search(r"postrotate\n(.*?)endscript", body, re.S).group(1)
    kills = re.findall(r"systemctl kill -s (\w+) --kill-who=main (\S+)", post)
    assert sorted(u for _s, u in kills) == sorted(os.path.basename(p) for p in UNITS)
    # the signal the run loop reopens -o FILE on (tests/unit/test_rotation.py)
    assert set(getattr(signal, "SIG" + s) for s, _u in kills) == {signal.SIGHUP}
    assert "copytruncate" not in body


@pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate not installed (make deps)")
def test_real_logrotate_against_a_running_tool(tmp_path):
    """deploy/logrotate/skbtrace, with its path moved into tmp_path and its
    postrotate aimed at one process, run twice by logrotate while the tool
    writes: every record is in one file, whole, in order, the first
    rotation is compressed at the second (delaycompress)."""
    logdir = tmp_path / "log"
    logdir.mkdir()
    log = logdir / "skb_frag_list_watcher.json"
    env = dict(os.environ, FAKE_POLL_S="0.002")
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_run.py"), "watcher", "20000",
                          "SIGTERM", "--json", "-o", str(log)], env=env, stderr=subprocess.PIPE)
    try:
        pattern, body = logrotate_config()
        body = re.sub(r"(postrotate\n).*?(\s*endscript)", r"\1        kill -s HUP %d\2" % p.pid,
                      body, flags=re.S)
        conf = tmp_path / "skbtrace.conf"
        conf.write_text("%s/%s {\n%s}\n" % (logdir, os.path.basename(pattern), body))
        deadline = time.time() + 30
        while not (log.exists() and log.stat().st_size) and time.time() < deadline:
            time.sleep(0.02)
        for _ in range(2):
            time.sleep(0.3)
            r = subprocess.Popen(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert r.communicate(timeout=60)[0] == b"" and r.returncode == 0
        time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=60)[1].decode()
    assert p.returncode == 0 and err.count("SIGHUP: reopened") == 2, err
    assert sorted(os.listdir(str(logdir))) == [log.name, log.name + ".1", log.name + ".2.gz"]
    with gzip.open(str(log) + ".2.gz", "rt") as f:
        texts = [f.read()]
    for name in (str(log) + ".1", str(log)):
        with open(name) as f:
            texts.append(f.read())
    objs = [[json.loads(l) for l in t.splitlines()] for t in texts]
    seq = [o["ts_ns"] // 1000 for part in objs for o in part if o["type"] == "event"]
    assert all(part and part[0]["type"] == "event" for part in objs[:2])
    assert seq == list(range(len(seq)))
    assert objs[-1][-1]["type"] == "statistics" and objs[-1][-1]["total_events"] == len(seq)
