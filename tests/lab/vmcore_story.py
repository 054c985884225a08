"""The injected panic's memory, read back by `skb_postmortem --vmcore`.

The encapsulated injected panic (test_panic_lab.py) saves the guest's memory
on the kernels of VMCORE_KERNELS: on those of KDUMP_KERNELS the way a user's
node does, with kdump (tests/lab/kdump.py: crashkernel=, the capture kernel,
makedumpfile's kdump-compressed vmcore and vmcore-dmesg.txt), elsewhere with
QMP dump-guest-memory (an ELF vmcore). This reads it on the host with
Debian's `crash` and the kernel's -dbg vmlinux (tests/lab/debuginfo.py,
cached under LAB_CACHE): the one command users run on their kdump vmcore
must tell the same skb the console told, its fields from memory, the packet
from its head, and the flight records from the vmcore's kernel log; and
kdump's vmcore-dmesg.txt, read alone, the flight records'.
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
import kdump
from lab import Lab
from skbtrace.postmortem import crashrun

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PM = os.path.join(ROOT, "skb_postmortem.py")
# where CI reads the encapsulated panic's vmcore (the -dbg vmlinux is cached
# for these; LAB_VMCORE_KERNELS changes the list)
VMCORE_KERNELS = os.environ.get("LAB_VMCORE_KERNELS", "6.1 5.10").split()
# of those, where the capture kernel writes it (the others: QMP)
KDUMP_KERNELS = os.environ.get("LAB_KDUMP_KERNELS", "6.1 5.10").split()
VMCORE_TMP = "/var/tmp/skbtrace-lab/vmcores"


def wanted(kernel, variant):
    return variant == "encap" and (kernel in VMCORE_KERNELS or bool(os.environ.get("LAB_VMCORE")))


def vmcore_dir(kernel, variant):
    """LAB_VMCORE (kept), or a directory of this run (removed by Dumps.close())."""
    if os.environ.get("LAB_VMCORE"):
        return os.environ["LAB_VMCORE"]
    if wanted(kernel, variant):
        os.makedirs(VMCORE_TMP, exist_ok=True)
        return tempfile.mkdtemp(dir=VMCORE_TMP)
    return None


class Dumps(object):
    """How one panic test's guest leaves its memory: `how` is None (not
    at all), "qmp" (Lab saves an ELF vmcore) or "kdump"."""

    def __init__(self, kernel, variant):
        self.kernel = kernel
        self.into = vmcore_dir(kernel, variant)
        self.how = None if not self.into else "kdump" if kernel in KDUMP_KERNELS else "qmp"
        self.capture = kdump.Capture(kernel) if self.how == "kdump" else None
        self.files = {}

    def lab(self, name):
        if self.how == "kdump":
            return Lab(name=name, vmcore_dir="", disk=self.capture.disk, append=kdump.APPEND,
                       death_re=kdump.DEATH_RE)
        return Lab(name=name, vmcore_dir=self.into or "")

    def arm(self, lab):
        """After the boot: the capture kernel loaded."""
        if self.how == "kdump":
            kdump.load(lab)

    def collect(self, lab, text):
        """After the death (QEMU gone): kdump's files off the disk, the
        vmcore as lab.vmcore. The console must show the capture kernel
        taking over from the oops and both makedumpfile runs succeeding."""
        if self.how != "kdump":
            return
        assert "Kernel panic - not syncing" not in text, \
            "panic() ran: oops_end() did not kexec into the capture kernel\n" + text[-4000:]
        boot = kdump.DEATH_RE.search(text)
        assert boot and "elfcorehdr=" in boot.group(0), text[-4000:]
        said = kdump.capture_lines(text)
        assert [l for l in said if l.startswith("kdump-lab: capture kernel %s up"
                                                % lab.meta["release"])], said
        assert [l for l in said if l.startswith("kdump-lab: makedumpfile rc=0 ")], said
        assert "kdump-lab: dmesg rc=0" in said, said
        self.files = kdump.take_off(self.capture.disk, self.into, "%s-%s-%s" % (
            time.strftime("%Y%m%dT%H%M%S"), lab.kernel, re.sub(r"[^A-Za-z0-9_.-]", "_", lab.name)))
        lab.log("kdump: " + "; ".join(said))
        assert sorted(self.files) == sorted(kdump.FILES), (self.files, said)
        lab.vmcore = self.files["vmcore"]
        lab.log("kdump: %s" % ", ".join("%s %d bytes" % (p, os.path.getsize(p))
                                       for p in sorted(self.files.values())))

    def close(self):
        """The dumps are large: kept only under LAB_VMCORE."""
        if self.capture:
            self.capture.close()
        if self.into and not os.environ.get("LAB_VMCORE"):
            shutil.rmtree(self.into, ignore_errors=True)


def postmortem(args):
    t0 = time.time()
    p = subprocess.run([sys.executable, PM] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=1200)
    return p.returncode, p.stdout.decode(), p.stderr.decode(), time.time() - t0


def check(lab, skb, gso_size, gso_type, variant, dmesg=None):
    """skb_postmortem --vmcore on the panic's vmcore tells skb (the one the
    injector broke) as the console did, from memory; kdump's
    vmcore-dmesg.txt (dmesg), read alone, the flight records'."""
    assert lab.vmcore and os.path.getsize(lab.vmcore) > 0, "no vmcore saved"
    t0 = time.time()
    if dmesg:
        check_dmesg(lab, dmesg, skb, variant)
    vmlinux = debuginfo.ensure(lab.meta)
    lab.log("debuginfo vmlinux: %s (%.0f s)" % (vmlinux, time.time() - t0))
    work = tempfile.mkdtemp()
    try:
        _check(lab, vmlinux, work, skb, gso_size, gso_type, variant)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lab.log("vmcore checks (%s, %d bytes): %.1f s" % (
        crashrun.vmcore_kind(lab.vmcore), os.path.getsize(lab.vmcore), time.time() - t0))


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
    _log_story(lab, log, skb, variant)
    _bad_inputs(lab, vmlinux, work)


def check_dmesg(lab, path, skb, variant):
    """The capture kernel's `makedumpfile --dump-dmesg`, alone: the oops and
    the flight records of its ftrace dump."""
    with open(path) as f:
        text = f.read()
    assert re.search(r"RIP: 0010:skb_segment\+0x", text), text[-4000:]
    assert "Dumping ftrace buffer:" in text, text[-4000:]
    out = _log_story(lab, path, skb, variant)
    a = "0x%016x" % skb
    assert "picked: the oops's skb" in out, out
    assert re.search(r"^picked: +the oops \(BUG: kernel NULL pointer dereference, address: "
                     r"0+70; RIP skb_segment\+0x[0-9a-f]+;.*\) dumped this skb's CRITICAL "
                     r"flight record$", out, re.M), out
    assert re.search(r"INCONSISTENT skb_segment +\| %s \| NULL \(no change\) \[CRITICAL\]"
                     % a, out), out
    if variant == "encap":
        assert "UDP_TUNNEL:  set by bpf_skb_adjust_room" in out, out
        assert re.search(r"GSO_SET +skb_segment +\| %s \| 0x403\(TCPV4\|DODGY\|UDP_TUNNEL\) "
                         r".*\[CRITICAL\].* origin=bpf_skb_adjust_room\(" % a, out), out


def _log_story(lab, path, skb, variant):
    """A kernel log alone (no crash): the flight records' story of skb."""
    rc, out, err, secs = postmortem([path])
    lab.log("skb_postmortem %s: %.1f s\n%s" % (os.path.basename(path), secs, out))
    assert rc == 0 and "=== skb 0x%016x" % skb in out, (err, out)
    assert "[CRITICAL]" in out and ("bpf_skb_adjust_room" in out) == (variant == "encap"), out
    return out


def _session_name(out):
    return re.search(r"^\[1\] (\S+): crash transcript", out, re.M).group(1)


def _bad_inputs(lab, vmlinux, work):
    """What crash and the checks say about a real vmcore gone wrong."""
    cut = os.path.join(work, "truncated.vmcore")
    # 64 MB of a 2 GB ELF, half of a 45 MB kdump-compressed one
    size = min(64 << 20, os.path.getsize(lab.vmcore) // 2)
    with open(lab.vmcore, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(size))
    rc, out, err, _ = postmortem(["--vmcore", cut, "--vmlinux", vmlinux])
    assert rc == 2 and err.count("\n") == 1 and "truncated" in err, err
    if crashrun.vmcore_kind(lab.vmcore) == "ELF":
        assert "truncated: %d of the " % size in err, err
    else:
        assert "truncated kdump-compressed vmcore: " in err and "(%d bytes)" % size in err, err
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
