"""The injected panic's memory, read back by `skb_postmortem --vmcore`.

The encapsulated injected panic (test_panic_lab.py) saves the guest's memory
(QMP dump-guest-memory: an ELF vmcore) on the kernels of VMCORE_KERNELS, and
this reads it on the host with Debian's `crash` and the kernel's -dbg vmlinux
(tests/lab/debuginfo.py, cached under LAB_CACHE): the one command users run on
their kdump vmcore must tell the same skb the console told, its fields from
memory, the packet from its head, and the flight records from the vmcore's
kernel log.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import debuginfo

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PM = os.path.join(ROOT, "skb_postmortem.py")
# where CI reads the encapsulated panic's vmcore (the -dbg vmlinux is cached
# for these; LAB_VMCORE_KERNELS changes the list)
VMCORE_KERNELS = os.environ.get("LAB_VMCORE_KERNELS", "6.1 5.10").split()
VMCORE_TMP = "/var/tmp/skbtrace-lab/vmcores"


def wanted(kernel, variant):
    return variant == "encap" and (kernel in VMCORE_KERNELS or bool(os.environ.get("LAB_VMCORE")))


def vmcore_dir(kernel, variant):
    """LAB_VMCORE (kept), or a directory of this run (removed by done())."""
    if os.environ.get("LAB_VMCORE"):
        return os.environ["LAB_VMCORE"]
    if wanted(kernel, variant):
        os.makedirs(VMCORE_TMP, exist_ok=True)
        return tempfile.mkdtemp(dir=VMCORE_TMP)
    return None


def done(lab):
    """The vmcore is 2 GB: kept only under LAB_VMCORE."""
    if lab.vmcore_dir and not os.environ.get("LAB_VMCORE"):
        shutil.rmtree(lab.vmcore_dir, ignore_errors=True)


def postmortem(args):
    t0 = time.time()
    p = subprocess.run([sys.executable, PM] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=1200)
    return p.returncode, p.stdout.decode(), p.stderr.decode(), time.time() - t0


def check(lab, skb, gso_size, gso_type, variant):
    """skb_postmortem --vmcore on the panic's vmcore tells skb (the one the
    injector broke) as the console did, from memory."""
    assert lab.vmcore and os.path.getsize(lab.vmcore) > 0, "no vmcore saved"
    t0 = time.time()
    vmlinux = debuginfo.ensure(lab.meta)
    lab.log("debuginfo vmlinux: %s (%.0f s)" % (vmlinux, time.time() - t0))
    work = tempfile.mkdtemp()
    try:
        _check(lab, vmlinux, work, skb, gso_size, gso_type, variant)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check(lab, vmlinux, work, skb, gso_size, gso_type, variant):
    saved = os.path.join(work, "crash.txt")
    pcap = os.path.join(work, "skb.pcap")
    rc, out, err, secs = postmortem(["--vmcore", lab.vmcore, "--vmlinux", vmlinux,
                                     "--save-transcript", saved, "--pcap", pcap])
    lab.log("skb_postmortem --vmcore: %.1f s\n%s" % (secs, out))
    assert rc == 0 and not err, (rc, err)
    a = "0x%016x" % skb
    story = out.split("=== skb %s" % a, 1)
    assert len(story) == 2, "the vmcore's story is not about the injected skb %s:\n%s" % (a, out)
    assert "picked: the oops's skb" in out
    # the skb's fields, read from memory by crash's struct sk_buff / skb_shared_info
    state = [l for l in story[1].splitlines() if "crash> struct sk_buff %s" % a in l]
    assert state and "[CRITICAL]" in state[0], story[1]
    assert re.search(r"nr_frags=0 frags_bytes=0 frag_list=NULL; gso_size=%d gso_segs=\d+ "
                     r"gso_type=0x%x\(" % (gso_size, gso_type), state[0]), state[0]
    # the packet, decoded from the head's bytes crash read (rd -8)
    flow = re.search(r"packet: ethernet \| ipv4 198\.18\.1\.1 > 198\.18\.2\.1 \| (\S+) ", story[1])
    assert flow, story[1]
    assert "pcap: 1 packet written to %s" % pcap in out and os.path.getsize(pcap) > 40 + 54
    # the flight records, found in the vmcore's kernel log (crash's log)
    assert "dumped this skb's CRITICAL flight record" in story[1]
    assert re.search(r"INCONSISTENT skb_segment +\| %s \| NULL \(no change\) \[CRITICAL\]" % a,
                     story[1]), story[1]
    if variant == "encap":
        assert flow.group(1) == "udp" and "| inner tcp " in story[1]
        assert "UDP_TUNNEL:  set by bpf_skb_adjust_room" in story[1], story[1]
        assert re.search(r"GSO_SET +skb_segment +\| %s \| 0x403\(TCPV4\|DODGY\|UDP_TUNNEL\)" % a,
                         story[1]), story[1]
    # the saved transcript is an input like a user's: the same story
    rc2, out2, err2, _ = postmortem([saved, "--pcap", pcap + "2"])
    assert rc2 == 0 and out2.replace(pcap + "2", pcap) == out.replace(
        _session_name(out), saved), (err2, out2)
    # the kernel log of the same dump, read alone (what kdump's vmcore-dmesg.txt holds)
    log = os.path.join(work, "vmcore-log.txt")
    with open(saved) as f:
        text = f.read()
    with open(log, "w") as f:
        f.write(text.split("crash> log\n", 1)[1].split("\ncrash> ", 1)[0])
    rc3, out3, err3, _ = postmortem([log])
    assert rc3 == 0 and "=== skb %s" % a in out3, (err3, out3)
    assert "[CRITICAL]" in out3 and ("bpf_skb_adjust_room" in out3) == (variant == "encap")
    _bad_inputs(lab, vmlinux, work)


def _session_name(out):
    return re.search(r"^\[1\] (\S+): crash transcript", out, re.M).group(1)


def _bad_inputs(lab, vmlinux, work):
    """What crash and the checks say about a real vmcore gone wrong."""
    cut = os.path.join(work, "truncated.vmcore")
    with open(lab.vmcore, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(64 << 20))
    rc, out, err, _ = postmortem(["--vmcore", cut, "--vmlinux", vmlinux])
    assert rc == 2 and err.count("\n") == 1 and "truncated: %d of the" % (64 << 20) in err, err
    # another kernel's debuginfo vmlinux, when one is cached (the other
    # kernels of VMCORE_KERNELS, or tests/lab/debuginfo.py run by hand)
    others = [p for p in glob.glob(os.path.join(os.path.dirname(os.path.dirname(vmlinux)),
                                                "*", "vmlinux-*"))
              if os.path.basename(p) != os.path.basename(vmlinux)]
    if others:
        rc, out, err, _ = postmortem(["--vmcore", lab.vmcore, "--vmlinux", others[0]])
        assert rc == 2 and err.count("\n") == 1, err
        assert "does not match --vmcore" in err, err
    else:
        lab.log("no other kernel's debuginfo vmlinux cached: the mismatch case is not run")
    # the image's vmlinux without its debuginfo (as /boot's or a stripped one)
    stripped = (lab.meta.get("fast") or {}).get("kernel")
    if not stripped:
        return                      # LAB_BOOT=stock: no decompressed vmlinux at hand
    rc, out, err, _ = postmortem(["--vmcore", lab.vmcore, "--vmlinux", stripped])
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "crash could not open" in err, err
