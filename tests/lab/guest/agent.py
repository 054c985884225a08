"""Runs in the lab guest as PID 1's successor: reads one JSON request per line
from the virtio-serial port "lab.agent", runs it with bash as root in
/project, answers one JSON line with rc, stdout and stderr."""
import json
import os
import signal
import subprocess
import sys


def port_path(name="lab.agent"):
    base = "/sys/class/virtio-ports"
    for p in sorted(os.listdir(base)):
        try:
            with open(os.path.join(base, p, "name")) as f:
                if f.read().strip() == name:
                    return "/dev/" + p
        except IOError:
            pass
    raise SystemExit("agent: no virtio port named %s" % name)


def run(req):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HOME="/root", LC_ALL="C.UTF-8",
               PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    p = subprocess.Popen(["bash", "-c", req["cmd"]], cwd=req.get("cwd", "/project"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=req.get("timeout", 600))
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = 124
        err += b"\nagent: command timed out after %ds\n" % req.get("timeout", 600)
    return {"id": req.get("id"), "rc": rc, "out": out.decode("utf-8", "replace"),
            "err": err.decode("utf-8", "replace")}


def poweroff():
    # minbase has no init system: power off through sysrq (QEMU then exits)
    os.sync()
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("o")


def main():
    fd = os.open(port_path(), os.O_RDWR)
    rf = os.fdopen(fd, "rb", buffering=0)

    def send(obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(fd, data)
            data = data[n:]

    send({"ready": True, "kernel": os.uname().release})
    buf = b""
    while True:
        chunk = rf.read(65536)
        if not chunk:
            continue        # host not connected yet
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            req = json.loads(line)
            if req.get("cmd") == "__poweroff__":
                send({"id": req.get("id"), "rc": 0, "out": "", "err": ""})
                poweroff()
                return
            send(run(req))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:          # PID 1 must not die silently
        sys.stderr.write("agent failed: %r\n" % e)
        poweroff()
