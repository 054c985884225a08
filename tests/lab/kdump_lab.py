"""kdump in the lab: a capture kernel saves the panicked guest's memory as
makedumpfile does on a user's node, and skb_postmortem reads it.

    flock /tmp/work/lab.lock /usr/bin/python3 tests/lab/kdump_lab.py [--inject] [--out DIR]

The guest boots with crashkernel=256M and loads its own kernel as the panic
kernel with kexec_file_load(KEXEC_FILE_ON_CRASH) (ctypes: the image has no
kexec-tools). The capture initramfs is built on the host: the lab's fast-boot
initramfs (static busybox, virtio and ext4 modules) plus bookworm's
makedumpfile and its libraries, with an /init that does what kdump-tools'
kdump-config savecore does: `makedumpfile -l -d 31 /proc/vmcore vmcore`
(kdump-compressed) and `makedumpfile --dump-dmesg /proc/vmcore
vmcore-dmesg.txt`, onto a writable ext4 disk (/dev/vdb; the lab's root is
snapshot=on), then powers off. The host takes both files off the disk
(debugfs) into --out.

--inject: the encapsulated injected panic of test_panic_lab.py (both tools
with --flight-recorder, the test-only injector); without it, sysrq c.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import image  # noqa: E402
from lab import Lab  # noqa: E402

T = "python3 tests/lab/guest/traffic.py"
RESERVE = "256M"
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

LOAD = r"""mount /dev/vdb /mnt && python3 - <<'EOF'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
k = os.open("/boot/vmlinuz-%(rel)s", os.O_RDONLY)
i = os.open("/mnt/capture.cpio", os.O_RDONLY)
cmd = b"console=ttyS0 irqpoll nr_cpus=1 reset_devices panic=-1 rdinit=/init\0"
r = libc.syscall(320, k, i, len(cmd), cmd, 2)       # kexec_file_load, KEXEC_FILE_ON_CRASH
print("kexec_file_load:", r, os.strerror(ctypes.get_errno()) if r else "ok")
EOF
umount /mnt; cat /sys/kernel/kexec_crash_loaded /sys/kernel/kexec_crash_size
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def capture_initramfs(meta, work):
    """The lab's fast initramfs with makedumpfile and a kdump /init."""
    root = os.path.join(work, "cap")
    os.makedirs(root)
    sh("cd %s && cpio -id --quiet < %s" % (root, meta["fast"]["initrd"]))
    deb = os.path.join(work, "deb")
    os.makedirs(deb)
    sh("cd %s && apt-get download -q makedumpfile >/dev/null 2>&1 && dpkg -x makedumpfile_*.deb x"
       % deb)
    mdf = os.path.join(root, "mdf")
    os.makedirs(mdf)
    binary = os.path.join(deb, "x", "usr", "bin", "makedumpfile")
    shutil.copy(binary, mdf)
    out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, check=True).stdout.decode()
    for line in out.splitlines():
        path = [w for w in line.split() if w.startswith("/")]
        if path:
            shutil.copy(path[0], os.path.join(mdf, os.path.basename(path[0])))
    with open(os.path.join(root, "init"), "w") as f:
        f.write(CAPTURE_INIT)
    os.chmod(os.path.join(root, "init"), 0o755)
    stage = os.path.join(work, "stage")
    os.makedirs(stage)
    sh("cd %s && find . | cpio -o -H newc --quiet > %s/capture.cpio" % (root, stage))
    disk = os.path.join(work, "kdump.ext4")
    sh("mkfs.ext4 -q -F -L kdump -d %s %s 1536M" % (stage, disk))
    return disk


def inject(lab):
    build = lab.run("tests/lab/kmod/build.sh /tmp/kmod", timeout=900)
    assert build.rc == 0, build
    lab.run("%s topo --gro-list off --router-egress-tso off" % T, check=True)
    lab.run("%s tc-attach --netns r --dev r-h2 --dir egress --src tests/lab/progs/udp_encap.c "
            "--fn udp_encap" % T, check=True)
    lab.start_tool("python3 skb_frag_list_watcher.py --backend kprobe --flight-recorder "
                   "-o /tmp/watcher.log", name="w", wait=False)
    lab.start_tool("python3 skb_vxlan_source_detector.py --backend kprobe --no-static "
                   "--flight-recorder -o /tmp/detector.log", name="d", wait=False)
    lab.wait_tool("w")
    lab.wait_tool("d")
    lab.run("sysctl -qw kernel.panic_on_oops=1 && insmod /tmp/kmod/skb_fault_inject.ko "
            "ifname=r-h2", check=True)
    return "%s tcp-bulk --seconds 3" % T


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inject", action="store_true")
    p.add_argument("--out", default="/var/tmp/skbtrace-lab/kdump")
    a = p.parse_args()
    os.environ["LAB_APPEND"] = (os.environ.get("LAB_APPEND", "") + " crashkernel=" + RESERVE)
    work = tempfile.mkdtemp(prefix="kdump-lab-", dir="/var/tmp")
    t0 = time.time()
    try:
        lab = Lab(name="kdump", stream=False, disk=os.path.join(work, "kdump.ext4"))
        meta = image.ensure(lab.kernel)
        capture_initramfs(meta, work)
        with lab:
            print(lab.run(LOAD % {"rel": lab.meta["release"]}).output)
            cmd = inject(lab) if a.inject else "sync; echo c > /proc/sysrq-trigger"
            t1 = time.time()
            lab.run_until_death(cmd, timeout=900)
            text = lab.console_text()
        # with a panic kernel loaded, oops_end() kexecs before panic() prints:
        # the capture kernel's own lines say whether it ran
        print("captured=%s; panic to power-off %.0f s; run %.0f s" % (
            "kdump-lab: makedumpfile rc=0" in text, time.time() - t1, time.time() - t0))
        print("\n".join(l for l in text.splitlines() if "kdump-lab" in l or "breaking skb" in l))
        os.makedirs(a.out, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for name in ("vmcore", "vmcore-dmesg.txt"):
            dst = os.path.join(a.out, "%s-%s-%s" % (stamp, lab.kernel, name))
            sh("debugfs -R 'dump /%s %s' %s 2>/dev/null" % (name, dst, lab.disk))
            print("%s: %d bytes" % (dst, os.path.getsize(dst) if os.path.exists(dst) else -1))
        with open(os.path.join(a.out, "%s-%s-console.log" % (stamp, lab.kernel)), "w") as f:
            f.write(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
