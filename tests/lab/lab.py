"""Boot a lab guest and run commands in it.

    with Lab() as lab:                       # LAB_KERNEL=6.1 (default), 5.10, 6.12
        r = lab.run("uname -r")              # r.rc, r.out, r.err, r.output
        t = lab.trace("python3 skb_frag_list_watcher.py",
                      traffic=["python3 tests/lab/guest/traffic.py udp-gso"])
        lab.host("python3 tests/lab/inject.py --count 3")   # in the lab's host netns

QEMU (TCG) runs inside a network namespace of its own that holds the tap
(vnet_hdr=on) wired to the guest's virtio-net; the repository is shared at
/project over 9p (read-only); commands go through a virtio-serial agent.
Everything (qemu, netns, socket dir) is removed on exit, also on errors.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import image  # noqa: E402

TAP = "labtap0"
HOST_ADDR = "198.18.100.1/24"
GUEST_ADDR = "198.18.100.2/24"
GUEST_MAC = "52:54:00:12:34:56"


class LabError(Exception):
    pass


class Result(object):
    def __init__(self, rc, out, err, seconds):
        self.rc, self.out, self.err, self.seconds = rc, out, err, seconds

    @property
    def output(self):
        return self.out + self.err

    def __repr__(self):
        return "Result(rc=%r, %.1fs, out=%r, err=%r)" % (self.rc, self.seconds, self.out[-2000:],
                                                       self.err[-2000:])


class Lab(object):
    def __init__(self, kernel=None, mem=2048, smp=2, boot_timeout=300, log=None):
        self.kernel = kernel or os.environ.get("LAB_KERNEL", "6.1")
        self.mem, self.smp, self.boot_timeout = mem, smp, boot_timeout
        self.log = log or (lambda m: sys.stderr.write("[lab] %s\n" % m))
        self.netns = "skbtrace-lab-%d" % os.getpid()
        self.tmp = None
        self.qemu = None
        self.sock = None
        self.buf = b""
        self.seq = 0
        self.timings = {}

    # --- lifecycle -------------------------------------------------------------

    def __enter__(self):
        # SIGTERM (CI timeouts, kill) must clean up like Ctrl-C does
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        t0 = time.time()
        meta = image.ensure(self.kernel)
        self.timings["image"] = time.time() - t0
        self.meta = meta
        d = meta["dir"]
        self.tmp = tempfile.mkdtemp(prefix="skbtrace-lab-")
        sock_path = os.path.join(self.tmp, "agent.sock")
        self.console = os.path.join(self.tmp, "console.log")
        subprocess.check_call(["ip", "netns", "add", self.netns])
        subprocess.check_call(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"])
        cmd = ["ip", "netns", "exec", self.netns, "qemu-system-x86_64",
               "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(self.mem),
               "-smp", str(self.smp), "-nographic", "-no-reboot", "-nodefaults",
               "-kernel", os.path.join(d, "vmlinuz"), "-initrd", os.path.join(d, "initrd.img"),
               "-append", "root=LABEL=labroot rw console=ttyS0 init=/sbin/lab-init panic=-1 "
                          "quiet loglevel=4 net.ifnames=0",
               "-drive", "file=%s,if=virtio,format=raw,snapshot=on" % os.path.join(d, "root.ext4"),
               "-virtfs", "local,path=%s,mount_tag=project,security_model=none,readonly=on" % REPO,
               "-device", "virtio-serial-pci",
               "-chardev", "socket,id=agent,path=%s,server=on,wait=off" % sock_path,
               "-device", "virtserialport,chardev=agent,name=lab.agent",
               "-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no,vnet_hdr=on" % TAP,
               "-device", "virtio-net-pci,netdev=n0,mac=%s" % GUEST_MAC,
               "-serial", "file:%s" % self.console]
        t1 = time.time()
        self.qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + self.boot_timeout
        while not os.path.exists(sock_path):
            self._check_alive()
            if time.time() > deadline:
                raise LabError("qemu did not create the agent socket")
            time.sleep(0.1)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sock_path)
        hello = self._read_msg(deadline)
        self.timings["boot"] = time.time() - t1
        self.log("guest up: kernel %s, boot %.1fs" % (hello.get("kernel"), self.timings["boot"]))
        # host side of the tap, and the guest's virtio NIC (eth0 with net.ifnames=0)
        self.host("ip addr add %s dev %s && ip link set %s up" % (HOST_ADDR, TAP, TAP), check=True)
        self.run("ip link set eth0 address %s; ip addr add %s dev eth0 && ip link set eth0 up"
                 % (GUEST_MAC, GUEST_ADDR), check=True)

    def stop(self):
        if self.sock is not None and self.qemu is not None and self.qemu.poll() is None:
            try:
                self._send({"id": -1, "cmd": "__poweroff__"})
                self.qemu.wait(timeout=20)
            except Exception:
                pass
        if self.qemu is not None and self.qemu.poll() is None:
            try:
                os.killpg(self.qemu.pid, signal.SIGKILL)
            except OSError:
                pass
            self.qemu.wait()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        subprocess.call(["ip", "netns", "del", self.netns], stderr=subprocess.DEVNULL)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    # --- protocol --------------------------------------------------------------

    def _check_alive(self):
        if self.qemu.poll() is not None:
            out = self.qemu.stdout.read().decode(errors="replace") if self.qemu.stdout else ""
            raise LabError("qemu exited (%s): %s\nconsole tail:\n%s" % (
                self.qemu.returncode, out[-2000:], self.console_tail()))

    def console_tail(self, n=4000):
        try:
            with open(self.console, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except (IOError, TypeError):
            return ""

    def _send(self, obj):
        self.sock.sendall((json.dumps(obj) + "\n").encode())

    def _read_msg(self, deadline):
        self.sock.settimeout(1.0)
        while b"\n" not in self.buf:
            self._check_alive()
            if time.time() > deadline:
                raise LabError("guest agent did not answer in time; console tail:\n%s"
                               % self.console_tail())
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not chunk:
                raise LabError("agent connection closed; console tail:\n%s" % self.console_tail())
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    # --- API -------------------------------------------------------------------

    def run(self, cmd, timeout=600, check=False):
        """Run `bash -c cmd` as root in /project in the guest."""
        self.seq += 1
        t0 = time.time()
        self._send({"id": self.seq, "cmd": cmd, "timeout": timeout})
        while True:
            msg = self._read_msg(time.time() + timeout + 60)
            if msg.get("id") == self.seq:
                break
        r = Result(msg["rc"], msg["out"], msg["err"], time.time() - t0)
        self.log("guest$ %s -> rc=%s (%.1fs)" % (cmd if len(cmd) < 200 else cmd[:200] + "...",
                                                r.rc, r.seconds))
        if check and r.rc != 0:
            raise LabError("guest command failed: %s\n%r" % (cmd, r))
        return r

    def host(self, cmd, timeout=120, check=False):
        """Run cmd on the host inside the lab's network namespace (tap side)."""
        t0 = time.time()
        p = subprocess.run(["ip", "netns", "exec", self.netns, "bash", "-c", cmd], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        r = Result(p.returncode, p.stdout.decode(errors="replace"),
                   p.stderr.decode(errors="replace"), time.time() - t0)
        if check and r.rc != 0:
            raise LabError("host command failed: %s\n%r" % (cmd, r))
        return r

    def trace(self, tool, traffic=(), signal_name="TERM", settle=1.0, timeout=900):
        """Run a tracer in the guest while the traffic commands run; return a
        Result of the tool plus .traffic (list of dicts) and .ready_s."""
        args = ["python3", "tests/lab/guest/trace_during.py", "--tool", _q(tool),
                "--signal", signal_name, "--settle", str(settle)]
        for t in traffic:
            args += ["--traffic", _q(t)]
        r = self.run(" ".join(args), timeout=timeout)
        if r.rc != 0:
            raise LabError("trace_during failed: %r" % r)
        d = json.loads(r.out)
        res = Result(d["rc"], d["out"], d["err"], r.seconds)
        res.traffic = d["traffic"]
        res.ready_s = d["ready_s"]
        return res


    def start_tool(self, tool, name="tool", ready="Hit Ctrl-C to end", timeout=600):
        """Start a tracer in the background in the guest and wait until it is
        tracing; stop_tool() signals it and returns its Result. For scenarios
        where the host acts while the tool runs (the tap injector)."""
        d = "/tmp/bg-%s" % name
        r = self.run("rm -rf {d}; mkdir -p {d}; (nohup bash -c {tool} > {d}/out 2> {d}/err; "
                     "echo $? > {d}/rc) > /dev/null 2>&1 & echo $! > {d}/pid; "
                     "for i in $(seq {n}); do grep -q {ready} {d}/err && exit 0; "
                     "test -e {d}/rc && break; sleep 0.2; done; cat {d}/err; exit 1".format(
                         d=d, tool=_q("exec " + tool), n=int(timeout * 5), ready=_q(ready)),
                     timeout=timeout + 30)
        if r.rc != 0:
            raise LabError("%s did not start tracing: %r" % (tool, r))

    def stop_tool(self, name="tool", signal_name="TERM", settle=1.0):
        d = "/tmp/bg-%s" % name
        r = self.run("sleep {s}; pkill -{sig} -f -- '^python3 .*skb_' ; for i in $(seq 300); do "
                     "test -e {d}/rc && break; sleep 0.2; done; cat {d}/rc".format(
                         d=d, s=settle, sig=signal_name), timeout=120)
        out = self.run("cat %s/out" % d).out
        err = self.run("cat %s/err" % d).out
        try:
            rc = int(r.out.strip())
        except ValueError:
            rc = None
        return Result(rc, out, err, r.seconds)


def _raise_interrupt(_signum, _frame):
    raise KeyboardInterrupt


def _q(s):
    return "'" + s.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    with Lab() as lab:
        for c in sys.argv[1:] or ["uname -a"]:
            r = lab.run(c)
            sys.stdout.write(r.out)
            sys.stderr.write(r.err)
