"""The package as users install and run it: `pip install .` for the system
python in the guest, the installed commands (not the clone) against real
traffic, their man pages, the JSON they write checked against the schema,
and the systemd unit's command with a logrotate-style rotation (SIGHUP)
and a stop (SIGTERM): nothing lost, no line split."""
import json
import os
import re

import pytest

pytestmark = pytest.mark.lab

T = "python3 tests/lab/guest/traffic.py"
# the lab's init does not put /usr/local/bin on PATH; a login shell would
LOCAL = "export PATH=/usr/local/bin:$PATH; "
# a command run from / (nothing of the clone on sys.path) with that PATH
INSTALLED = "env -C / PATH=/usr/local/bin:/usr/bin:/bin "
HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "schema",
                      "skbtrace-record.schema.json")
UNIT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "deploy", "systemd",
                    "skb-frag-list-watcher.service")


def validate_all(lines):
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA) as f:
        v = jsonschema.Draft202012Validator(json.load(f))
    objs = [json.loads(l) for l in lines if l.strip()]
    for o in objs:
        errors = sorted(v.iter_errors(o), key=str)
        assert not errors, (o, [e.message for e in errors[:3]])
    return objs


@pytest.fixture(scope="module")
def installed(lab):
    """The package installed from a copy of the clone (the share is read-only,
    and pip writes build files next to the sources), for the system python as
    a user would: root's pip on Debian installs under /usr/local (with
    --prefix /usr/local it would add another local/)."""
    r = lab.run("rm -rf /tmp/src && mkdir /tmp/src && cd /project && "
                "tar --exclude=.git --exclude=.venv-tools -cf - . | tar -xf - -C /tmp/src && "
                "python3 -m pip install -q --no-deps --no-build-isolation --break-system-packages "
                "/tmp/src", timeout=600)
    assert r.rc == 0, r
    yield lab
    lab.run("python3 -m pip uninstall -y --break-system-packages skbtrace; rm -rf /tmp/src")


def test_installed_commands_run_from_site_packages(installed):
    lab = installed
    r = lab.run(LOCAL + "cd / && for c in skb_frag_list_watcher skb_vxlan_source_detector "
                "skb_postmortem; do "
                "command -v $c && $c --version; done; "
                "python3 -c 'import skbtrace, sys; print(skbtrace.__file__)'; "
                "ls /usr/local/share/man/man8/")
    assert r.rc == 0, r
    assert "/usr/local/bin/skb_frag_list_watcher" in r.out
    assert "/usr/local/bin/skb_vxlan_source_detector" in r.out
    assert "/usr/local/bin/skb_postmortem" in r.out
    # the installed command names itself as it was called, not as the clone's launcher
    assert re.search(r"^skb_frag_list_watcher \(skbtrace\) \d+\.\d+", r.out, re.M), r.out
    assert "dist-packages/skbtrace/__init__.py" in r.out, r.out
    for page in ("skb_frag_list_watcher.8", "skb_vxlan_source_detector.8", "skb_postmortem.8"):
        assert page in r.out, r.out
    lab.run("%s topo --gro-list on" % T, check=True)
    try:
        w = lab.trace(INSTALLED + "skb_frag_list_watcher --json",
                      traffic=["%s udp-gso --count 5" % T])
        d = lab.trace(INSTALLED + "skb_vxlan_source_detector --json",
                      traffic=["%s udp-gso --count 5" % T])
    finally:
        lab.run("%s cleanup" % T)
    assert w.rc == 0 and d.rc == 0, (w, d)
    # the default backend: fentry where the kernel has trampolines (every lab
    # kernel does), the module function receive_buf on its kprobe
    assert "backend fentry (--backend auto): " in w.err, w.err
    assert re.search(r"^  not fentry: receive_buf: function of module virtio_net", d.err,
                     re.M), d.err
    wo = validate_all(w.out.splitlines())
    do = validate_all(d.out.splitlines())
    assert [o for o in wo if o["type"] == "event" and o["event"] == "CREATE"]
    assert wo[-1]["type"] == "statistics" and do[-1]["type"] == "statistics"
    assert do[0]["type"] == "static"
    # fleet attribution on every record
    assert all(o["host"] and o["boot_id"] for o in wo + do)
    # the third command, installed too, reads what the other two wrote
    lab.run("cat > /tmp/w.json <<'EOF'\n%s\nEOF\ncat > /tmp/d.json <<'EOF'\n%s\nEOF"
            % (w.out.rstrip("\n"), d.out.rstrip("\n")), check=True)
    pm = lab.run(INSTALLED + "skb_postmortem --json --node %s /tmp/w.json /tmp/d.json"
                 % wo[0]["host"])
    assert pm.rc == 0, pm
    pmo = [json.loads(l) for l in pm.out.splitlines() if l.startswith("{")]
    assert pmo and any(o.get("type", "").startswith("postmortem") for o in pmo), pm.out[:2000]


def test_unit_command_rotates_on_sighup_and_stops_on_sigterm(installed):
    """The unit's ExecStart line, run by hand as the unit would (no systemd
    in the lab guest), rotated the way deploy/logrotate/skbtrace does it:
    rename, then SIGHUP; then SIGTERM as `systemctl stop` sends."""
    lab = installed
    with open(UNIT) as f:
        cmd = re.search(r"^ExecStart=(.*)$", f.read(), re.M).group(1)
    log = re.search(r"-o (\S+)", cmd).group(1)
    lab.run("%s topo --gro-list on && mkdir -p %s && rm -f %s*" % (
        T, os.path.dirname(log), log), check=True)
    try:
        lab.start_tool(cmd, name="unit")
        lab.run("%s udp-gso --count 5" % T, check=True)
        lab.run("mv %s %s.1 && pkill -HUP -f -- '^/usr/bin/python3 %s'" % (
            log, log, cmd.split()[0]), check=True)
        lab.run("sleep 1; %s udp-gso --count 5" % T, check=True)
        res = lab.stop_tool(name="unit", signal_name="TERM")
        old = lab.run("cat %s.1" % log, check=True).out
        new = lab.run("cat %s" % log, check=True).out
    finally:
        lab.run("%s cleanup" % T)
    assert res.rc == 0, res
    assert "SIGHUP: reopened %s" % log in res.err
    first, second = validate_all(old.splitlines()), validate_all(new.splitlines())
    assert first and second, (old[-500:], new[-500:])
    # every line whole, the statistics only at the very end of the new file
    assert all(o["type"] == "event" for o in first)
    assert second[-1]["type"] == "statistics"
    assert all(o["type"] == "event" for o in second[:-1]) and len(second) > 1
    assert second[-1]["total_events"] == len(first) + len(second) - 1
