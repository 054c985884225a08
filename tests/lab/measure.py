"""Time the lab's steps on this machine for one kernel (docs/lab.md's table):

    LAB_KERNEL=6.1 /usr/bin/python3 tests/lab/measure.py

image (build or cache hit), boot to agent, a bare command, bcc import, a BCC
compile+attach of a one-kprobe program without and with linux/skbuff.h, the
h1--r--h2 topology, a UDP GSO run and a host injection. Prints one JSON line.
Run it alone: guests share the machine's two cores.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab import Lab  # noqa: E402

T = "python3 tests/lab/guest/traffic.py"
BARE = r'''
from bcc import BPF
b = BPF(text="int on(void *ctx) { return 0; }")
b.attach_kprobe(event=b"skb_segment", fn_name=b"on")
'''
SKB = r'''
from bcc import BPF
b = BPF(text="""#include <linux/skbuff.h>
int on(struct pt_regs *ctx, struct sk_buff *skb) { bpf_trace_printk("%d\\n", skb->len); return 0; }""")
b.attach_kprobe(event=b"skb_segment", fn_name=b"on")
'''


def main():
    t0 = time.time()
    res = {"kernel": os.environ.get("LAB_KERNEL", "6.1")}
    with Lab(stream=False) as lab:
        res.update({k: round(v, 1) for k, v in lab.timings.items()})
        res["release"] = lab.meta["release"]
        res["image_build_s"] = lab.meta.get("build_seconds")

        def step(name, cmd, **kw):
            r = lab.run(cmd, **kw)
            res[name] = round(r.seconds, 1)
            if r.rc != 0:
                res[name + "_error"] = (r.out + r.err)[-600:]
            return r

        step("true", "true")
        step("bcc_import", "python3 -c 'import bcc'")
        lab.run("cat > /tmp/bare.py <<'EOF'\n%s\nEOF\ncat > /tmp/skb.py <<'EOF'\n%s\nEOF"
                % (BARE, SKB), check=True)
        step("bcc_bare_kprobe", "python3 /tmp/bare.py")
        step("bcc_skbuff_kprobe", "python3 /tmp/skb.py")
        step("topo", "%s topo --gro-list on" % T)
        step("udp_gso_20", "%s udp-gso --count 20" % T)
        step("cleanup", "%s cleanup" % T)
        t = time.time()
        lab.inject(count=5)
        res["inject_5"] = round(time.time() - t, 1)
    res["total"] = round(time.time() - t0, 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
