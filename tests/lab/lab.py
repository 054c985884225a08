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
import ctypes
import json
import os
import re
import shutil
import signal
import threading
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import image  # noqa: E402

NETNS_PREFIX = "skbtrace-lab-"
# serial consoles of guests that died (and of any guest with keep_console);
# LAB_CONSOLE_DIR overrides
CONSOLE_DIR = os.environ.get("LAB_CONSOLE_DIR", "/var/tmp/skbtrace-lab/consoles")
PANIC_RE = re.compile(r"Kernel panic - not syncing|---\[ end Kernel panic")
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
    def __init__(self, kernel=None, mem=2048, smp=2, boot_timeout=300, log=None, boot=None,
                 stream=None, name=None, vmcore_dir=None, disk=None, append="", death_re=None):
        self.kernel = kernel or os.environ.get("LAB_KERNEL", "6.1")
        self.mem, self.smp, self.boot_timeout = mem, smp, boot_timeout
        self.boot = boot or os.environ.get("LAB_BOOT", "fast")
        if self.boot not in ("fast", "stock"):
            raise LabError("LAB_BOOT=%s: fast or stock" % self.boot)
        # stream guest output live to stderr (pytest shows it with the test's log)
        self.stream = stream if stream is not None else os.environ.get("LAB_STREAM", "1") != "0"
        self.log = log or (lambda m: (sys.stderr.write("[lab] %s\n" % m), sys.stderr.flush()))
        self.netns = NETNS_PREFIX + str(os.getpid())
        self._netns_made = False
        self.guest_nic = None
        self.tmp = None
        self._console_text = ""
        self.qemu = None
        self.sock = None
        self.buf = b""
        self.seq = 0
        self.timings = {}
        # a name for the kept console (test name); the console of a guest
        # that died is always kept, others only when keep_console is set
        self.name = name or "lab"
        self.keep_console = False
        self.kept_console = None        # path of the kept copy
        self.died = False
        # LAB_VMCORE=DIR: a guest that panics stays halted (panic=0) and its
        # memory is written to DIR as an ELF vmcore through QMP before QEMU
        # is stopped (for `crash` with the kernel's -dbg vmlinux); "" never
        self.vmcore_dir = (os.environ.get("LAB_VMCORE") if vmcore_dir is None
                           else vmcore_dir) or None
        # a writable raw disk image, /dev/vdb in the guest (kdump's target:
        # the root disk is snapshot=on)
        self.disk = disk
        # more kernel command line (kdump: crashkernel=), after LAB_APPEND's
        self.append = append
        # what the console of a guest that died shows (kdump: the capture
        # kernel's boot, since oops_end() kexecs before panic() prints)
        self.death_re = death_re or PANIC_RE
        self.vmcore = None

    # --- lifecycle -------------------------------------------------------------

    def __enter__(self):
        self._old_term = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            # CI's timeout sends SIGTERM: unwind (pytest tears fixtures down
            # on KeyboardInterrupt) so QEMU and the namespace go away
            self._old_term = signal.signal(signal.SIGTERM, _term_to_interrupt)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)

    def start(self):
        t0 = time.time()
        meta = image.ensure(self.kernel, fast=self.boot == "fast")
        self.timings["image"] = time.time() - t0
        self.meta = meta
        d = meta["dir"]
        sweep_stale()
        self.tmp = tempfile.mkdtemp(prefix="skbtrace-lab-")
        sock_path = os.path.join(self.tmp, "agent.sock")
        self.qmp_path = os.path.join(self.tmp, "qmp.sock")
        self.console = os.path.join(self.tmp, "console.log")
        subprocess.call(["ip", "netns", "del", self.netns], stderr=subprocess.DEVNULL)
        subprocess.check_call(["ip", "netns", "add", self.netns])
        self._netns_made = True
        subprocess.check_call(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"])
        # panic=-1: a panicked guest reboots at once and -no-reboot ends QEMU;
        # with LAB_VMCORE it stays halted (panic=0) until its memory is saved
        append = "console=ttyS0 panic=%d quiet loglevel=4 net.ifnames=0 %s" % (
            0 if self.vmcore_dir else -1, os.environ.get("LAB_APPEND", "") + " " + self.append)
        if self.boot == "fast":
            # decompressed vmlinux via the PVH entry point + busybox initramfs
            boot = ["-kernel", meta["fast"]["kernel"], "-initrd", meta["fast"]["initrd"],
                    "-append", append]
        else:
            # bzImage + Debian's own initramfs (slower, but no custom pieces)
            boot = ["-kernel", os.path.join(d, "vmlinuz"), "-initrd", os.path.join(d, "initrd.img"),
                    "-append", "root=LABEL=labroot rw init=/sbin/lab-init " + append]
        cmd = ["ip", "netns", "exec", self.netns, "qemu-system-x86_64",
               "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(self.mem),
               "-smp", str(self.smp), "-nographic", "-no-reboot", "-nodefaults"] + boot + [
               "-drive", "file=%s,if=virtio,format=raw,snapshot=on" % os.path.join(d, "root.ext4"),
               ] + (["-drive", "file=%s,if=virtio,format=raw" % self.disk] if self.disk else []) + [
               "-virtfs", "local,path=%s,mount_tag=project,security_model=none,readonly=on" % REPO,
               "-device", "virtio-serial-pci",
               "-chardev", "socket,id=agent,path=%s,server=on,wait=off" % sock_path,
               "-device", "virtserialport,chardev=agent,name=lab.agent",
               "-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no,vnet_hdr=on" % TAP,
               "-device", "virtio-net-pci,netdev=n0,mac=%s" % GUEST_MAC,
               "-serial", "file:%s" % self.console,
               "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        t1 = time.time()
        # QEMU gets its own session (no terminal signals) but dies with us,
        # even when we are SIGKILLed (PR_SET_PDEATHSIG survives `ip netns exec`)
        self.qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent)
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
        self.log("guest up: kernel %s, %s boot %.1fs (guest uptime %.1fs)" % (
            hello.get("kernel"), self.boot, self.timings["boot"], hello.get("uptime", -1)))
        # host side of the tap, and the guest's virtio NIC
        self.host("ip addr add %s dev %s && ip link set %s up" % (HOST_ADDR, TAP, TAP), check=True)
        r = self.run("python3 tests/lab/guest/traffic.py guest-nic --addr %s" % GUEST_ADDR,
                     check=True)
        self.guest_nic = r.out.split()[0]

    def stop(self):
        """Power the guest off (or kill QEMU), delete the namespace and the
        temporary directory. Safe to call more than once."""
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
        if self._netns_made:
            subprocess.call(["ip", "netns", "del", self.netns], stderr=subprocess.DEVNULL)
            self._netns_made = False
        if self.tmp:
            self._console_text = self.console_tail(64 << 20)
            if self.died or self.keep_console:
                self.kept_console = self._keep(self._console_text)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def _keep(self, text):
        """A guest that panicked is a result: its console is the evidence."""
        try:
            os.makedirs(CONSOLE_DIR, exist_ok=True)
            path = os.path.join(CONSOLE_DIR, "%s-%s-%s.log" % (
                time.strftime("%Y%m%dT%H%M%S"), self.kernel,
                re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)))
            with open(path, "w") as f:
                f.write(text)
            self.log("console kept: %s" % path)
            return path
        except OSError as e:
            self.log("console NOT kept: %s" % e)
            return None

    # --- guests that die ---------------------------------------------------------

    def console_text(self):
        """The whole serial console so far (or of the stopped guest)."""
        return self.console_tail(64 << 20)

    def run_until_death(self, cmd, timeout=600):
        """Run cmd expecting it to panic the guest. Returns (died, Result or
        None): died is True once the console shows the panic and QEMU has
        exited (or, with LAB_VMCORE, the memory was saved). A command that
        returns while the guest lives gives (False, Result)."""
        self.seq += 1
        short = cmd if len(cmd) < 200 else cmd[:200] + "..."
        self.log("guest$ %s   (expecting a panic)" % short)
        self._send({"id": self.seq, "cmd": cmd, "timeout": timeout, "stream": False, "env": {}})
        deadline = time.time() + timeout + 60
        self.sock.settimeout(0.5)
        while time.time() < deadline:
            if self._guest_dead():
                return self.died, None
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.wait_for_death(60)
                return self.died, None
            self.buf += chunk
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("id") == self.seq and "rc" in msg:
                    return False, Result(msg["rc"], msg["out"], msg["err"], 0)
        raise LabError("neither a panic nor the command's end within %d s" % timeout)

    def _guest_dead(self):
        if self.qemu.poll() is not None:
            self.died = bool(self.death_re.search(self.console_tail(1 << 20)))
            return True
        if self.vmcore_dir and PANIC_RE.search(self.console_tail(1 << 16)):
            self._save_vmcore()
            self.died = True
            return True
        return False

    def wait_for_death(self, timeout=120):
        """Wait until the guest is gone (QEMU exited after the panic)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._guest_dead():
                return True
            time.sleep(0.2)
        return False

    def _save_vmcore(self):
        """QMP dump-guest-memory (paging off: an ELF vmcore that `crash`
        opens with the kernel's vmlinux), then stop QEMU."""
        time.sleep(2)               # let the panic finish printing
        os.makedirs(self.vmcore_dir, exist_ok=True)
        path = os.path.join(self.vmcore_dir, "%s-%s-%s.vmcore" % (
            time.strftime("%Y%m%dT%H%M%S"), self.kernel,
            re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)))
        t0 = time.time()
        q = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        q.settimeout(600)
        q.connect(self.qmp_path)
        f = q.makefile("rwb")
        f.readline()                                            # greeting
        for req in ({"execute": "qmp_capabilities"},
                    {"execute": "dump-guest-memory",
                     "arguments": {"paging": False, "protocol": "file:" + path}}):
            f.write((json.dumps(req) + "\n").encode())
            f.flush()
            while True:
                reply = json.loads(f.readline())
                if "return" in reply or "error" in reply:
                    break
            if "error" in reply:
                raise LabError("QMP %s: %s" % (req["execute"], reply["error"]))
        q.close()
        self.vmcore = path
        self.log("vmcore saved: %s (%.0f MB, %.1f s)" % (
            path, os.path.getsize(path) / 1e6, time.time() - t0))
        os.killpg(self.qemu.pid, signal.SIGKILL)
        self.qemu.wait()

    # --- protocol --------------------------------------------------------------

    def _check_alive(self):
        if self.qemu.poll() is not None:
            out = self.qemu.stdout.read().decode(errors="replace") if self.qemu.stdout else ""
            raise LabError("qemu exited (%s): %s\nconsole tail:\n%s" % (
                self.qemu.returncode, out[-2000:], self.console_tail()))

    def console_tail(self, n=4000):
        if self.tmp is None:
            return getattr(self, "_console_text", "")[-n:]
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

    def run(self, cmd, timeout=600, check=False, stream=None, env=None):
        """Run `bash -c cmd` as root in /project in the guest; returns Result
        (.rc, .out, .err, .output, .seconds). The guest kills the command
        after `timeout` seconds (rc 124); the host gives up 60 s later."""
        self.seq += 1
        stream = self.stream if stream is None else stream
        t0 = time.time()
        short = cmd if len(cmd) < 200 else cmd[:200] + "..."
        if stream:
            self.log("guest$ " + short)
        self._send({"id": self.seq, "cmd": cmd, "timeout": timeout, "stream": bool(stream),
                    "env": env or {}})
        partial = {"out": "", "err": ""}
        while True:
            msg = self._read_msg(time.time() + timeout + 60)
            if msg.get("id") != self.seq:
                continue
            if "chunk" in msg:
                text = partial[msg["chunk"]] + msg["data"]
                *lines, partial[msg["chunk"]] = text.split("\n")
                for line in lines:
                    sys.stderr.write("[guest:%s] %s\n" % (msg["chunk"], line))
                sys.stderr.flush()
                continue
            break
        for k, v in partial.items():
            if v:
                sys.stderr.write("[guest:%s] %s\n" % (k, v))
        r = Result(msg["rc"], msg["out"], msg["err"], time.time() - t0)
        self.log("guest$ %s -> rc=%s (%.1fs)" % (short, r.rc, r.seconds))
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

    def trace(self, tool, traffic=(), signal_name="TERM", settle=1.0, timeout=900,
              ready=r"Hit Ctrl-C to end", ready_timeout=600, signal=None):
        """Run a tracer in the guest while the traffic commands run (after the
        tool printed `ready` on stderr), then send it SIG`signal` (TERM, INT or
        NONE). Returns a Result of the tool (.rc, .out, .err) plus .traffic
        (list of {"cmd", "rc", "out", "err"}) and .ready_s (None: never ready)."""
        sig = signal or signal_name
        args = ["python3", "tests/lab/guest/trace_during.py", "--tool", _q(tool),
                "--signal", sig, "--settle", str(settle), "--ready", _q(ready),
                "--ready-timeout", str(ready_timeout)]
        for t in traffic:
            args += ["--traffic", _q(t)]
        # one JSON line at the end: nothing worth streaming
        r = self.run(" ".join(args), timeout=timeout, stream=False)
        if r.rc != 0:
            raise LabError("trace_during failed: %r" % r)
        d = json.loads(r.out)
        res = Result(d["rc"], d["out"], d["err"], r.seconds)
        res.traffic = d["traffic"]
        res.ready_s = d["ready_s"]
        return res

    def inject(self, count=3, gso="tcpv4", gso_size=1000, segs=4, ecn=False, check=True):
        """Write TCP/IPv4 frames behind a virtio_net_hdr into the tap from the
        host (inject.py), so the guest's virtio_net receive_buf sees them."""
        return self.host("python3 tests/lab/inject.py --dev %s --gso %s --gso-size %d --segs %d "
                         "--count %d%s" % (TAP, gso, gso_size, segs, count,
                                           " --ecn" if ecn else ""), check=check)

    def start_tool(self, tool, name="tool", ready="Hit Ctrl-C to end", timeout=600, wait=True):
        """Start a tracer in the background in the guest and wait until it is
        tracing; stop_tool() signals it and returns its Result. For scenarios
        where the host acts while the tool runs (the tap injector), or the
        guest is meant to die. wait=False returns at once: wait_tool() later
        (two tools compile side by side on the guest's two CPUs)."""
        d = "/tmp/bg-%s" % name
        self.run("rm -rf {d}; mkdir -p {d}; (nohup bash -c {tool} > {d}/out 2> {d}/err; "
                 "echo $? > {d}/rc) > /dev/null 2>&1 & echo $! > {d}/pid".format(
                     d=d, tool=_q("exec " + tool)), check=True)
        if wait:
            self.wait_tool(name, ready, timeout)

    def wait_tool(self, name="tool", ready="Hit Ctrl-C to end", timeout=600):
        d = "/tmp/bg-%s" % name
        r = self.run("for i in $(seq {n}); do grep -q {ready} {d}/err && exit 0; "
                     "test -e {d}/rc && break; sleep 0.2; done; cat {d}/err; exit 1".format(
                         d=d, n=int(timeout * 5), ready=_q(ready)), timeout=timeout + 30)
        if r.rc != 0:
            raise LabError("%s did not start tracing: %r" % (name, r))

    def stop_tool(self, name="tool", signal_name="TERM", settle=1.0):
        d = "/tmp/bg-%s" % name
        r = self.run("sleep {s}; pkill -{sig} -f -- '^(/usr/bin/)?python3 .*skb_' ; for i in $(seq 300); do "
                     "test -e {d}/rc && break; sleep 0.2; done; cat {d}/rc".format(
                         d=d, s=settle, sig=signal_name), timeout=120)
        out = self.run("cat %s/out" % d).out
        err = self.run("cat %s/err" % d).out
        try:
            rc = int(r.out.strip())
        except ValueError:
            rc = None
        return Result(rc, out, err, r.seconds)


def _die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)    # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass


def _term_to_interrupt(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def sweep_stale():
    """Remove lab namespaces left by a run that was SIGKILLed (its QEMU died
    with it through PDEATHSIG; the namespace did not)."""
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout.decode()
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NETNS_PREFIX):
            continue
        try:
            pid = int(name[len(NETNS_PREFIX):])
        except ValueError:
            continue
        if os.path.exists("/proc/%d" % pid):
            continue
        subprocess.call(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


def _q(s):
    return "'" + s.replace("'", "'\\''") + "'"


def main(argv):
    """python3 tests/lab/lab.py [CMD ...]: boot, run each command, print, exit
    with the last command's status."""
    rc = 0
    with Lab(stream=False) as lab:
        for c in argv or ["uname -a"]:
            r = lab.run(c)
            sys.stdout.write(r.out)
            sys.stderr.write(r.err)
            rc = r.rc
        lab.log("timings: " + json.dumps({k: round(v, 1) for k, v in lab.timings.items()}))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
