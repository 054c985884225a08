"""Prove the lab, not the tools: a real kernel with BCC, tracefs, headers, the
project share, traffic that reaches skb_segment, and injected virtio GSO
frames that reach virtio_net's receive_buf."""
import re

import pytest

pytestmark = pytest.mark.lab

KPROBE_COUNT = r'''
import ctypes, os, sys, time
from bcc import BPF
fn, stop_file = sys.argv[1], sys.argv[2]
b = BPF(text="""
BPF_ARRAY(hits, u64, 1);
int on_hit(struct pt_regs *ctx) {
    int z = 0; u64 *v = hits.lookup(&z); if (v) (*v)++;
    return 0;
}
""")
names = sorted(BPF.get_kprobe_functions(("^" + fn + "$").encode()))  # a set in bcc 0.26
assert names, "no traceable " + fn
b.attach_kprobe(event=names[0], fn_name=b"on_hit")
print("attached", names[0].decode(), flush=True)
deadline = time.time() + 300
while not os.path.exists(stop_file) and time.time() < deadline:
    time.sleep(0.2)
print("hits", b["hits"][ctypes.c_int(0)].value, flush=True)
'''


def start_counter(lab, fn):
    """Start a BCC kprobe counter on fn in the guest; returns when attached."""
    lab.run("cat > /tmp/count.py <<'PYEOF'\n%s\nPYEOF" % KPROBE_COUNT, check=True)
    r = lab.run("rm -f /tmp/stop-{fn} /tmp/count-{fn}.out; "
                "nohup python3 /tmp/count.py {fn} /tmp/stop-{fn} > /tmp/count-{fn}.out 2>&1 & "
                "for i in $(seq 900); do grep -q -e attached -e Error -e Traceback /tmp/count-{fn}.out && break;"
                " sleep 0.2; done; cat /tmp/count-{fn}.out".format(fn=fn), timeout=300)
    assert "attached " + fn in r.out, r


def stop_counter(lab, fn):
    r = lab.run("touch /tmp/stop-{fn}; for i in $(seq 100); do grep -q hits "
                "/tmp/count-{fn}.out && break; sleep 0.2; done; cat /tmp/count-{fn}.out"
                .format(fn=fn))
    m = re.search(r"hits (\d+)", r.out)
    assert m, r
    return int(m.group(1))


def test_guest_basics(lab):
    r = lab.run("uname -r; test -d /lib/modules/$(uname -r)/build/include && echo headers; "
                "test -e /sys/kernel/tracing/available_filter_functions && echo tracefs; "
                "test -f /project/skb_frag_list_watcher.py && echo share; "
                "python3 -c 'import bcc, pyroute2, tabulate; print(\"bcc\", bcc.__file__)'")
    assert r.rc == 0, r
    for word in ("headers", "tracefs", "share", "bcc /usr/lib/python3/dist-packages/bcc"):
        assert word in r.out, r
    assert r.out.splitlines()[0] == lab.meta["release"]


def test_kprobe_on_skb_segment_sees_udp_gso(topo):
    # the sender segments in software: UDP GSO with tx-udp-segmentation off on h1
    start_counter(topo, "skb_segment")
    t = topo.run("python3 tests/lab/guest/traffic.py udp-gso --count 20", check=True)
    assert "udp-gso sent 20" in t.out
    assert stop_counter(topo, "skb_segment") >= 20


def test_injected_virtio_gso_reaches_receive_buf(lab):
    start_counter(lab, "receive_buf")
    inj = lab.host("python3 tests/lab/inject.py --gso tcpv4 --gso-size 1000 --count 5")
    assert inj.rc == 0 and "injected 5 frames" in inj.out, inj
    assert stop_counter(lab, "receive_buf") >= 5
