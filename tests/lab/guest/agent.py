"""Runs in the lab guest as PID 1's successor: reads one JSON request per line
from the virtio-serial port "lab.agent", runs it with `bash -c` as root in
/project, and answers with one JSON line {"id", "rc", "out", "err"}.

With "stream": true in the request, output is also sent while the command
runs, as {"id", "chunk": "out"|"err", "data"} lines, so the host can show it
live. A command that outlives its "timeout" is killed with its whole process
group and answered with rc 124.

Python 3.11 (the guest's /usr/bin/python3), standard library only.
"""
import json
import os
import selectors
import signal
import subprocess
import sys
import time


def port_path(name="lab.agent"):
    base = "/sys/class/virtio-ports"
    if not os.path.isdir(base):
        subprocess.call(["modprobe", "virtio_console"])
    for _ in range(100):
        for p in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            try:
                with open(os.path.join(base, p, "name")) as f:
                    if f.read().strip() == name:
                        return "/dev/" + p
            except IOError:
                pass
        time.sleep(0.1)
    raise SystemExit("agent: no virtio port named %s" % name)


class Agent:
    def __init__(self, fd):
        self.fd = fd

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def run(self, req):
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HOME="/root", LC_ALL="C.UTF-8",
                   PATH="/usr/sbin:/usr/bin:/sbin:/bin", TERM="dumb")
        env.update(req.get("env") or {})
        timeout = float(req.get("timeout", 600))
        stream = bool(req.get("stream"))
        p = subprocess.Popen(["bash", "-c", req["cmd"]], cwd=req.get("cwd", "/project"),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, start_new_session=True)
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ, "out")
        sel.register(p.stderr, selectors.EVENT_READ, "err")
        bufs = {"out": [], "err": []}
        deadline = time.time() + timeout
        timed_out = False
        open_pipes = 2
        while open_pipes:
            left = deadline - time.time()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(left, 1.0)):
                data = os.read(key.fileobj.fileno(), 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                bufs[key.data].append(data)
                if stream:
                    self.send({"id": req.get("id"), "chunk": key.data,
                               "data": data.decode("utf-8", "replace")})
        if timed_out:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        # the pipes are closed (or the group killed): reap; a daemonised child
        # that kept no pipe open does not hold the answer back
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
        sel.close()
        p.stdout.close()
        p.stderr.close()
        err = b"".join(bufs["err"])
        if timed_out:
            rc = 124
            err += b"\nagent: command timed out after %ds\n" % int(timeout)
        return {"id": req.get("id"), "rc": rc,
                "out": b"".join(bufs["out"]).decode("utf-8", "replace"),
                "err": err.decode("utf-8", "replace")}


def poweroff():
    # minbase has no init system: power off through sysrq (QEMU then exits)
    os.sync()
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("o")


def main():
    fd = os.open(port_path(), os.O_RDWR)
    agent = Agent(fd)
    agent.send({"ready": True, "kernel": os.uname().release,
                "uptime": float(open("/proc/uptime").read().split()[0])})
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            time.sleep(0.05)    # host not connected yet
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            req = json.loads(line)
            if req.get("cmd") == "__poweroff__":
                agent.send({"id": req.get("id"), "rc": 0, "out": "", "err": ""})
                poweroff()
                return
            try:
                agent.send(agent.run(req))
            except Exception as e:      # answer, never die: the host waits for this id
                agent.send({"id": req.get("id"), "rc": 125, "out": "",
                            "err": "agent: %r\n" % e})


if __name__ == "__main__":
    try:
        main()
    except Exception as e:          # PID 1 must not die silently
        sys.stderr.write("agent failed: %r\n" % e)
        poweroff()
