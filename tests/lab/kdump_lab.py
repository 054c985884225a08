"""kdump in the lab, by hand: a capture kernel saves the panicked guest's
memory as makedumpfile does on a user's node, and skb_postmortem reads it.

    flock /tmp/work/lab.lock /usr/bin/python3 tests/lab/kdump_lab.py [--inject] [--out DIR]

The pieces (crashkernel=, the capture initramfs cached beside the image,
kexec_file_load, taking the files off the guest's writable disk) are
tests/lab/kdump.py's, which CI's encapsulated injected panic uses on the
kernels of vmcore_story.KDUMP_KERNELS. Here the files are kept in --out
with the console.

--inject: the encapsulated injected panic of test_panic_lab.py (both tools
with --flight-recorder, the test-only injector); without it, sysrq c.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import kdump  # noqa: E402
from lab import Lab  # noqa: E402

T = "python3 tests/lab/guest/traffic.py"


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
    t0 = time.time()
    kernel = os.environ.get("LAB_KERNEL", "6.1")
    capture = kdump.Capture(kernel)
    try:
        lab = Lab(kernel=kernel, name="kdump", stream=False, vmcore_dir="", disk=capture.disk,
                  append=kdump.APPEND, death_re=kdump.DEATH_RE)
        with lab:
            kdump.load(lab)
            cmd = inject(lab) if a.inject else "sync; echo c > /proc/sysrq-trigger"
            t1 = time.time()
            died, _ = lab.run_until_death(cmd, timeout=900)
            text = lab.console_text()
        print("died=%s; panic to power-off %.0f s; run %.0f s" % (
            died, time.time() - t1, time.time() - t0))
        print("\n".join([l for l in text.splitlines() if "breaking skb" in l] +
                        kdump.capture_lines(text)))
        prefix = "%s-%s" % (time.strftime("%Y%m%dT%H%M%S"), lab.kernel)
        for name, path in sorted(kdump.take_off(capture.disk, a.out, prefix).items()):
            print("%s: %d bytes" % (path, os.path.getsize(path)))
        with open(os.path.join(a.out, "%s-console.log" % prefix), "w") as f:
            f.write(text)
    finally:
        capture.close()


if __name__ == "__main__":
    main()
