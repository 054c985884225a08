"""Prove the lab, not the tools: a real kernel with BCC, tracefs, headers, the
project share, traffic that reaches skb_segment, and injected virtio GSO
frames that reach virtio_net's receive_buf with the gso_size we chose.

The BCC programs are written here, not taken from the tools, so a broken tool
cannot make the lab look broken (or the other way round)."""
import json
import re

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.matrix]   # on every lab kernel in CI

T = "python3 tests/lab/guest/traffic.py"

# A BCC program in the guest: one kprobe per function in argv (anchored
# names: bcc 0.26's get_kprobe_functions matches a regex, so "skb_segment"
# alone would also take skb_segment_list), optional extra C; runs until the
# stop file appears, then prints its maps as one JSON line.
PROBE = r'''
import ctypes, json, os, sys, time
from bcc import BPF
text, fns, stop_file = open(sys.argv[1]).read(), sys.argv[2].split(","), sys.argv[3]
b = BPF(text=text)
for fn in fns:
    name, handler = fn.split(":")
    found = sorted(BPF.get_kprobe_functions(("^" + name + "$").encode()))
    assert len(found) == 1, "kprobe target %s: %r" % (name, found)
    b.attach_kprobe(event=found[0], fn_name=handler.encode())
print("attached", " ".join(f.split(":")[0] for f in fns), flush=True)
deadline = time.time() + 600
while not os.path.exists(stop_file) and time.time() < deadline:
    time.sleep(0.2)
res = {"hits": b["hits"][ctypes.c_int(0)].value}
if "BPF_HASH(gso" in text:
    res["gso"] = {"%d/0x%x" % (k.value >> 32, k.value & 0xffffffff): v.value
                  for k, v in b["gso"].items()}
print("RESULT " + json.dumps(res), flush=True)
'''

COUNT_C = r'''
BPF_ARRAY(hits, u64, 1);
int on_hit(struct pt_regs *ctx) {
    int z = 0; u64 *v = hits.lookup(&z); if (v) __sync_fetch_and_add(v, 1);
    return 0;
}
'''

# receive_buf counts; napi_gro_receive (which virtio_net's receive_buf calls
# with the skb it built from the virtio header) records gso_size/gso_type of
# the skbs that came in on the virtio NIC.
VIRTIO_C = COUNT_C + r'''
#include <linux/skbuff.h>
#include <linux/netdevice.h>
BPF_HASH(gso, u64, u64);
int on_gro(struct pt_regs *ctx, struct napi_struct *napi, struct sk_buff *skb) {
    struct net_device *dev = NULL;
    int ifindex = 0;
    unsigned char *head = NULL;
    sk_buff_data_t end = 0;
    u16 gso_size = 0;
    unsigned int gso_type = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), &skb->dev);
    bpf_probe_read_kernel(&ifindex, sizeof(ifindex), &dev->ifindex);
    if (ifindex != IFINDEX)
        return 0;
    bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
    bpf_probe_read_kernel(&end, sizeof(end), &skb->end);
    struct skb_shared_info *sh = (struct skb_shared_info *)(head + end);
    bpf_probe_read_kernel(&gso_size, sizeof(gso_size), &sh->gso_size);
    bpf_probe_read_kernel(&gso_type, sizeof(gso_type), &sh->gso_type);
    u64 key = ((u64)gso_size << 32) | gso_type;
    gso.increment(key);
    return 0;
}
'''


def start_probe(lab, name, text, fns):
    lab.run("mkdir -p /tmp/st && cat > /tmp/st/probe.py <<'PYEOF'\n%s\nPYEOF\n"
            "cat > /tmp/st/%s.c <<'CEOF'\n%s\nCEOF" % (PROBE, name, text), check=True)
    r = lab.run("cd /tmp/st && rm -f stop-{n} {n}.out; "
                "nohup python3 probe.py {n}.c {fns} stop-{n} > {n}.out 2>&1 & "
                "for i in $(seq 1500); do grep -q -e attached -e Error -e Traceback {n}.out "
                "&& break; sleep 0.2; done; cat {n}.out".format(n=name, fns=",".join(fns)),
                timeout=400)
    assert "attached" in r.out, r


def stop_probe(lab, name):
    r = lab.run("cd /tmp/st && touch stop-{n}; for i in $(seq 150); do grep -q RESULT {n}.out "
                "&& break; sleep 0.2; done; cat {n}.out".format(n=name))
    m = re.search(r"^RESULT (.*)$", r.out, re.M)
    assert m, r
    return json.loads(m.group(1))


def test_guest_basics(lab):
    """Kernel release matches the image, headers, tracefs, debugfs, the 9p share
    (read-only), BCC, pyroute2, tabulate, the virtio NIC."""
    r = lab.run("uname -r; test -d /lib/modules/$(uname -r)/build/include && echo headers; "
                "test -e /sys/kernel/tracing/available_filter_functions && echo tracefs; "
                "grep -q ' /sys/kernel/debug debugfs ' /proc/mounts && echo debugfs; "
                "test -f /project/skb_frag_list_watcher.py && echo share; "
                "touch /project/.lab-write-test 2>/dev/null || echo share-ro; "
                "test \"$PYTHONDONTWRITEBYTECODE\" = 1 && echo nobytecode; "
                "test \"$PWD\" = /project && echo cwd; "
                "ip -br addr show %s; "
                "python3 -c 'import bcc, pyroute2, tabulate; print(\"bcc\", bcc.__file__)'"
                % lab.guest_nic)
    assert r.rc == 0, r
    for word in ("headers", "tracefs", "debugfs", "share", "share-ro", "nobytecode", "cwd",
                 "198.18.100.2/24", "bcc /usr/lib/python3/dist-packages/bcc"):
        assert word in r.out, (word, r)
    assert r.out.splitlines()[0] == lab.meta["release"]
    # a timed-out command is killed and reported, and the agent keeps serving
    t = lab.run("sleep 30", timeout=2)
    assert t.rc == 124 and "timed out" in t.err, t
    assert lab.run("echo still here").out == "still here\n"


def test_kprobe_on_skb_segment_sees_udp_gso(lab):
    """UDP GSO (UDP_SEGMENT) from h1 whose veth has tx-udp-segmentation off:
    the sender's stack segments in software, through skb_segment."""
    lab.run("%s topo --gro-list on --sender-tso off" % T, check=True)
    try:
        start_probe(lab, "segment", COUNT_C, ["skb_segment:on_hit"])
        t = lab.run("%s udp-gso --count 20 --size 14000 --gso-size 1000" % T, check=True)
        assert "udp-gso sent 20 x 14000 bytes" in t.out, t
        # forwarded through the router's fraglist GRO; UDP may drop a few
        # datagrams when the host is loaded (TCG), so only "some" is required
        m = re.search(r"udp-sink received (\d+) bytes", t.out)
        assert m and int(m.group(1)) > 0, t
        res = stop_probe(lab, "segment")
    finally:
        lab.run("%s cleanup" % T)
    assert res["hits"] >= 20, res


def test_injected_virtio_gso_reaches_receive_buf(lab):
    """Frames written from the host behind a virtio_net_hdr (TCPV4, gso_size
    1000 and 1200) reach the guest's virtio_net receive_buf, and the skbs it
    builds carry that gso_size and SKB_GSO_TCPV4 (+DODGY)."""
    ifindex = int(lab.run("cat /sys/class/net/%s/ifindex" % lab.guest_nic, check=True).out)
    start_probe(lab, "virtio", VIRTIO_C.replace("IFINDEX", str(ifindex)),
                ["receive_buf:on_hit", "napi_gro_receive:on_gro"])
    inj = lab.inject(count=5, gso="tcpv4", gso_size=1000, segs=4)
    assert "injected 5 frames" in inj.out, inj
    inj = lab.inject(count=3, gso="tcpv4", gso_size=1200, segs=3)
    assert "injected 3 frames" in inj.out, inj
    res = stop_probe(lab, "virtio")
    assert res["hits"] >= 8, res
    # SKB_GSO_TCPV4 = 1, SKB_GSO_DODGY = 2 (virtio_net_hdr_to_skb marks DODGY)
    assert res["gso"].get("1000/0x3", 0) >= 5, res
    assert res["gso"].get("1200/0x3", 0) >= 3, res
