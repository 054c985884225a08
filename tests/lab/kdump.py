"""kdump for a lab guest: what kdump-tools sets up on a user's node, built
from the lab's own pieces.

- The guest boots with crashkernel=RESERVE (Lab(append=APPEND)) and a
  writable ext4 disk (Lab(disk=...), /dev/vdb: the root is snapshot=on) that
  holds the capture initramfs and receives the dump.
- load() makes the guest's own kernel its panic kernel:
  kexec_file_load(KEXEC_FILE_ON_CRASH) through ctypes (the image has no
  kexec-tools; what `kexec -s -p` does).
- The capture initramfs is built on the host and cached beside the image
  (keyed by what goes into it): the fast boot's initramfs (static busybox,
  virtio and ext4 modules) plus the host suite's makedumpfile and its
  libraries, and an /init that does what kdump-config savecore does:
  `makedumpfile -l -d 31 /proc/vmcore vmcore` (kdump-compressed) and
  `makedumpfile --dump-dmesg /proc/vmcore vmcore-dmesg.txt`, then powers off.
- take_off() copies the files off the disk (debugfs) once QEMU has exited.

With a panic kernel loaded and panic_on_oops set, oops_end() calls
crash_kexec() before panic(): the console shows the oops (and the ftrace
dump that the die notifier printed), then the capture kernel's boot, and no
"Kernel panic" line. DEATH_RE tells Lab that this guest died.
"""
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import image
from lab import PANIC_RE

RESERVE = "256M"
APPEND = "crashkernel=" + RESERVE
DISK_SIZE = "1536M"        # sparse; a 2 GB guest's -d 31 dump is ~45 MB
FILES = ("vmcore", "vmcore-dmesg.txt")
# kexec puts elfcorehdr= on the capture kernel's command line: the first
# kernel crashed into it
DEATH_RE = re.compile(PANIC_RE.pattern + r"|Command line: elfcorehdr=0x[0-9a-f]+ ")
MARK = "kdump-lab:"
CAPTURE_INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /bin /proc /sys /dev /mnt /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "kdump-lab: capture kernel $(uname -r) up at $(cut -d' ' -f1 /proc/uptime) s"
for m in $(cat /modules.order); do insmod /lib/mod/$m 2>/dev/null; done
i=0
while [ ! -b /dev/vdb ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
mount -t ext4 /dev/vdb /mnt || echo "kdump-lab: cannot mount /dev/vdb"
t0=$(cut -d' ' -f1 /proc/uptime)
LD_LIBRARY_PATH=/mdf /mdf/ld-linux-x86-64.so.2 /mdf/makedumpfile -l -d 31 /proc/vmcore /mnt/vmcore
echo "kdump-lab: makedumpfile rc=$? $t0 -> $(cut -d' ' -f1 /proc/uptime) s"
LD_LIBRARY_PATH=/mdf /mdf/ld-linux-x86-64.so.2 /mdf/makedumpfile --dump-dmesg /proc/vmcore /mnt/vmcore-dmesg.txt
echo "kdump-lab: dmesg rc=$?"
ls -l /mnt
umount /mnt
sync
echo o > /proc/sysrq-trigger
sleep 30
"""
# the capture kernel: one CPU, devices reset, and a panic there reboots,
# which ends QEMU (-no-reboot) instead of hanging the test
CAPTURE_CMDLINE = "console=ttyS0 irqpoll nr_cpus=1 reset_devices panic=-1 rdinit=/init"
LOAD = r"""mount /dev/vdb /mnt && python3 - <<'EOF'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
k = os.open("/boot/vmlinuz-%(rel)s", os.O_RDONLY)
i = os.open("/mnt/capture.cpio", os.O_RDONLY)
cmd = b"%(cmdline)s\0"
r = libc.syscall(320, k, i, len(cmd), cmd, 2)       # kexec_file_load, KEXEC_FILE_ON_CRASH
print("kexec_file_load:", r, os.strerror(ctypes.get_errno()) if r else "ok")
EOF
umount /mnt; cat /sys/kernel/kexec_crash_loaded /sys/kernel/kexec_crash_size
"""


class KdumpError(Exception):
    pass


def makedumpfile_version():
    """The version apt would download (the host's suite: bookworm)."""
    out = subprocess.run(["apt-cache", "policy", "makedumpfile"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout.decode()
    m = re.search(r"Candidate: (\S+)", out)
    if not m or m.group(1) == "(none)":
        raise KdumpError("apt knows no makedumpfile for the capture initramfs "
                         "(apt-get update?)")
    return m.group(1)


def capture_key(meta, version):
    """What goes into the capture initramfs: the fast initramfs (its own
    cache key names its busybox, modules and init), makedumpfile's version
    (its libraries are copied with it as one set) and the /init."""
    fast = os.path.basename(os.path.dirname(meta["fast"]["initrd"]))
    return hashlib.sha256(json.dumps([fast, version, CAPTURE_INIT]).encode()).hexdigest()[:12]


def capture_initramfs(meta):
    """The capture initramfs of meta's image, cached beside the image."""
    version = makedumpfile_version()
    out = os.path.join(meta["dir"], "kdump-" + capture_key(meta, version))
    path = os.path.join(out, "capture.cpio")
    with open(os.path.join(meta["dir"], ".lock-kdump"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return path
        t0 = time.time()
        work = out + ".work"
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        try:
            _build(meta, version, work)
            shutil.rmtree(out, ignore_errors=True)
            os.rename(work, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        image.log("kdump capture initramfs: %s (makedumpfile %s, %.0f s)"
                  % (path, version, time.time() - t0))
    return path


def _build(meta, version, work):
    root = os.path.join(work, "root")
    os.makedirs(root)
    with open(meta["fast"]["initrd"], "rb") as f:
        subprocess.run(["cpio", "-id", "--quiet"], cwd=root, stdin=f, check=True)
    deb = os.path.join(work, "deb")
    os.makedirs(deb)
    if subprocess.call(["apt-get", "download", "-q", "makedumpfile=" + version], cwd=deb,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        raise KdumpError("apt-get download makedumpfile=%s failed" % version)
    debs = [f for f in os.listdir(deb) if f.endswith(".deb")]
    subprocess.run(["dpkg", "-x", debs[0], "x"], cwd=deb, check=True)
    mdf = os.path.join(root, "mdf")
    os.makedirs(mdf)
    binary = os.path.join(deb, "x", "usr", "bin", "makedumpfile")
    shutil.copy(binary, mdf)
    out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, check=True).stdout.decode()
    for line in out.splitlines():
        path = [w for w in line.split() if w.startswith("/")]
        if path:
            shutil.copy(path[0], os.path.join(mdf, os.path.basename(path[0])))
    image.pack_initramfs(root, CAPTURE_INIT, os.path.join(work, "capture.cpio"))
    shutil.rmtree(deb)


def make_disk(kernel, work):
    """A writable ext4 disk for kdump in work, holding the capture initramfs."""
    cpio = capture_initramfs(image.ensure(kernel))
    stage = os.path.join(work, "stage")
    os.makedirs(stage)
    shutil.copy(cpio, stage)
    disk = os.path.join(work, "kdump.ext4")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "kdump", "-d", stage, disk, DISK_SIZE],
                   stdout=subprocess.DEVNULL, check=True)
    shutil.rmtree(stage)
    return disk


def load(lab):
    """Load the guest's kernel as its panic kernel with the capture initramfs."""
    r = lab.run(LOAD % {"rel": lab.meta["release"], "cmdline": CAPTURE_CMDLINE}, timeout=120)
    lab.log("kdump: %s" % r.output.strip().replace("\n", "; "))
    crash_loaded = r.out.split()[-2:-1] == ["1"]          # /sys/kernel/kexec_crash_loaded
    if r.rc != 0 or "kexec_file_load: 0 ok" not in r.out or not crash_loaded:
        raise KdumpError("the capture kernel is not loaded: %r" % r)
    return r


def capture_lines(text):
    """The capture kernel's own lines on the console (from the mark: a
    kernel message may share the serial line)."""
    return [l[l.index(MARK):] for l in text.splitlines() if MARK in l]


def take_off(disk, into, prefix):
    """FILES copied from the disk of a stopped guest into `into`, as
    {name: path}; a file the capture kernel did not write is missing."""
    os.makedirs(into, exist_ok=True)
    got = {}
    for name in FILES:
        dst = os.path.join(into, "%s-%s" % (prefix, name))
        subprocess.run(["debugfs", "-R", "dump /%s %s" % (name, dst), disk],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.path.exists(dst) and os.path.getsize(dst) > 0:
            got[name] = dst
    return got


class Capture(object):
    """The disk of one guest's kdump, in a directory of its own."""

    def __init__(self, kernel):
        self.work = tempfile.mkdtemp(prefix="skbtrace-kdump-", dir="/var/tmp")
        try:
            self.disk = make_disk(kernel, self.work)
        except BaseException:
            self.close()
            raise

    def close(self):
        shutil.rmtree(self.work, ignore_errors=True)
