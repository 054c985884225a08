"""Record real inputs for the offline tests (tests/unit/data/postmortem/):
both tools' logs on the same traffic, the trace buffer's flight records, and
(with --vmcore) a guest's memory at a panic plus a `crash` session over it.

    /usr/bin/python3 tests/lab/record_fixtures.py logs  [--out DIR]
    /usr/bin/python3 tests/lab/record_fixtures.py crash --vmlinux PATH [--out DIR]

`logs`: the Calico #11424 pattern of seed 004 on one router. Forwarded TCP
GSO skbs pass a tc ingress program that calls bpf_skb_pull_data (GRO's
frag_list is pulled into the head: the watcher's CLEAR) and then a tc egress
program that calls bpf_skb_adjust_room(ENCAP_L4_UDP) (UDP_TUNNEL appears: the
detector's BPF_HELPER), and the router segments them itself (tso off): the
same skb addresses in both logs, with a setter and a clearer to tie. Both
tools run twice (text, then --json) with --flight-recorder=all.

`crash`: boots with LAB_VMCORE, breaks one encapsulated skb with the test-only
injector (tests/lab/kmod) so skb_segment panics, saves the guest memory as an
ELF vmcore, and runs Debian's `crash` on it with the kernel's -dbg vmlinux:
`log`, `bt`, `bt -f`, `struct sk_buff`, `struct skb_shared_info`, `rd -8`
of the skb that crashed (its address from the flight record). The -dbg
package is ~860 MB: this is opt-in and never part of CI.
"""
import argparse
import gzip
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

from lab import Lab  # noqa: E402

T = "python3 tests/lab/guest/traffic.py"
DEFAULT_OUT = os.path.join(REPO, "tests", "unit", "data", "postmortem")


def calico_topology(lab, encap=True, pull=True):
    # rx-gro-list on: measured on 6.1, some forwarded TCP GRO skbs then carry
    # a frag_list (skb_gro_receive CREATE) for the pull to clear; with it off
    # the pull only moves frags into the head
    lab.run("%s topo --gro-list on --router-egress-tso off" % T, check=True)
    if pull:
        lab.run("%s tc-attach --netns r --dev r-h1 --dir ingress "
                "--src tests/lab/progs/pull_data.c --fn pull_all" % T, check=True)
    if encap:
        # the encapsulated segments are 28 bytes longer than the inner MTU,
        # and h2 takes the outer headers off again: a flow that keeps going
        lab.run("ip -n r link set r-h2 mtu 1600 && ip -n h2 link set eth0 mtu 1600 && "
                "%s tc-attach --netns r --dev r-h2 --dir egress "
                "--src tests/lab/progs/udp_encap.c --fn udp_encap && "
                "%s tc-attach --netns h2 --dev eth0 --dir ingress "
                "--src tests/lab/progs/udp_decap.c --fn udp_decap" % (T, T), check=True)


def save(out, name, text):
    """Tool logs are kept gzipped (the post-mortem command reads .gz, as
    rotated logs are)."""
    path = os.path.join(out, name)
    if name.endswith((".log", ".json")) and "-calico-" in name:
        path += ".gz"
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)
    print("wrote %s (%d lines)" % (path, text.count("\n")))


def record_logs(out):
    kernel = os.environ.get("LAB_KERNEL", "6.1")
    with Lab(stream=False, name="record-logs") as lab:
        rel = lab.meta["release"]
        calico_topology(lab)
        for mode, ext in (("", "log"), (" --json", "json")):
            lab.run("echo > /sys/kernel/tracing/trace", check=True)
            lab.start_tool("python3 skb_frag_list_watcher.py --gso-only --flight-recorder=all%s "
                           "-o /tmp/watcher.%s" % (mode, ext), name="w", wait=False)
            lab.start_tool("python3 skb_vxlan_source_detector.py --flight-recorder=all%s "
                           "-o /tmp/detector.%s" % (mode, ext), name="d", wait=False)
            lab.wait_tool("w")
            lab.wait_tool("d")
            lab.run("%s tcp-bulk --seconds 2" % T)
            lab.stop_tool(name="w", signal_name="TERM")
            lab.stop_tool(name="d", signal_name="TERM")
            for tool in ("watcher", "detector"):
                save(out, "%s-calico-%s.%s" % (kernel, tool, ext),
                     lab.run("cat /tmp/%s.%s" % (tool, ext), check=True).out)
            if ext == "log":
                save(out, "%s-calico-trace.txt" % kernel,
                     lab.run("cat /sys/kernel/tracing/trace", check=True).out)
        print("kernel %s" % rel)


CRASH_CMDS = """log
bt
bt -f
struct sk_buff {skb}
struct skb_shared_info {shinfo}
rd -8 {head} {nbytes}
p/x ((struct skb_shared_info *){shinfo})->gso_type
eval {head} + {end}
"""


def record_crash(out, vmlinux, vmcore=None):
    """A new panic in the lab, or (vmcore given) a new session over a kept
    vmcore and console."""
    kernel = os.environ.get("LAB_KERNEL", "6.1")
    if vmcore:
        with open(os.path.join(out, "%s-crash-console.log" % kernel)) as f:
            console = f.read()
        session(out, kernel, vmlinux, vmcore, console)
        return
    vmdir = os.path.join("/var/tmp/skbtrace-lab/vmcores")
    with Lab(stream=False, name="record-crash", vmcore_dir=vmdir) as lab:
        build = lab.run("tests/lab/kmod/build.sh /tmp/kmod", timeout=900)
        assert build.rc == 0, build
        calico_topology(lab, pull=False)
        lab.start_tool("python3 skb_frag_list_watcher.py --flight-recorder -o /tmp/w.log",
                       name="w", wait=False)
        lab.start_tool("python3 skb_vxlan_source_detector.py --no-static --flight-recorder "
                       "-o /tmp/d.log", name="d", wait=False)
        lab.wait_tool("w")
        lab.wait_tool("d")
        lab.run("sysctl -qw kernel.panic_on_oops=1 && insmod /tmp/kmod/skb_fault_inject.ko",
                check=True)
        died, _ = lab.run_until_death("%s tcp-bulk --seconds 3" % T, timeout=300)
        assert died and lab.vmcore, "no panic or no vmcore"
    console = lab.console_text() if lab.tmp else lab._console_text
    save(out, "%s-crash-console.log" % kernel, console)
    session(out, kernel, vmlinux, lab.vmcore, console)
    print("vmcore kept: %s" % lab.vmcore)


def session(out, kernel, vmlinux, vmcore, console):
    skb = re.search(r"breaking skb ([0-9a-f]{16})", console).group(1)
    # the skb's head and end from crash itself, then the commands that need them
    first = run_crash(vmlinux, vmcore, "struct sk_buff.head,end 0x%s\n" % skb)
    head = re.search(r"head = 0x([0-9a-f]+)", first).group(1)
    end = int(re.search(r"end = (\d+)", first).group(1))
    # rd -8 counts 8-bit units: the whole head buffer, up to the shared info
    cmds = CRASH_CMDS.format(skb="0x" + skb, head="0x" + head, end=end,
                             shinfo="0x%x" % (int(head, 16) + end), nbytes=end)
    save(out, "%s-crash-session.txt" % kernel, run_crash(vmlinux, vmcore, cmds, echo=True))


def run_crash(vmlinux, vmcore, cmds, echo=False):
    """`crash` reading commands from stdin, as a user's session transcript:
    with echo, each command is shown after a `crash> ` prompt as crash's own
    output would interleave them."""
    if not echo:
        p = subprocess.run(["crash", "-s", vmlinux, vmcore], input=(cmds + "quit\n").encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
        return p.stdout.decode(errors="replace")
    out = []
    for c in cmds.strip().splitlines():
        p = subprocess.run(["crash", "-s", vmlinux, vmcore], input=(c + "\nquit\n").encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
        out.append("crash> %s\n%s" % (c, p.stdout.decode(errors="replace")))
    return "".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["logs", "crash"])
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--vmlinux", help="the guest kernel's vmlinux from its -dbg package")
    p.add_argument("--vmcore", help="crash: a kept vmcore (and the console already in --out) "
                                    "instead of a new panic")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    if a.what == "logs":
        record_logs(a.out)
    else:
        if not a.vmlinux:
            p.error("crash needs --vmlinux (dpkg -x linux-image-<abi>-amd64-dbg_*.deb DIR)")
        record_crash(a.out, a.vmlinux, a.vmcore)
    print("%.0f s" % (time.time() - t0))


if __name__ == "__main__":
    main()
