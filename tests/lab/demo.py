"""`make demo`: boot a lab guest and show both tools on real traffic.

1. the watcher while a tc program pulls fraglist GRO packets into their head
   (bpf_skb_pull_data) and the router segments them: CREATE, CLEAR [!!], then
   the crash-shaped state at skb_segment with the mutator named;
2. the detector while TCP runs over a vxlan overlay and the host injects a
   virtio GSO frame: VIRTIO_RX, TUNNEL_XMIT, GRO_COMPLETE and the verdict.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab import Lab  # noqa: E402

T = "python3 tests/lab/guest/traffic.py"


def show(title, r):
    print("\n==== %s (exit %s) ====" % (title, r.rc))
    sys.stdout.write(r.out)
    sys.stdout.flush()


def main():
    with Lab(stream=False) as lab:
        lab.run("%s topo --gro-list on --router-egress-gso off && %s tc-attach --netns r "
                "--dev r-h1 --dir ingress --src tests/lab/progs/pull_data.c --fn pull_all"
                % (T, T), check=True)
        print("\nstarting skb_frag_list_watcher.py (BCC compiles for a minute or two "
              "under emulation)...", flush=True)
        r = lab.trace("python3 skb_frag_list_watcher.py",
                      traffic=["%s udp-gso --count 2" % T])
        show("sudo python3 skb_frag_list_watcher.py", r)
        lab.run("%s cleanup && %s topo --gro-list off && %s vxlan" % (T, T, T), check=True)
        print("\nstarting skb_vxlan_source_detector.py...", flush=True)
        lab.start_tool("python3 skb_vxlan_source_detector.py --gso-changes-only")
        lab.host("python3 tests/lab/inject.py --gso tcpv4 --gso-size 1000 --count 1")
        lab.run("%s tcp-bulk --dst 198.19.0.2 --seconds 1" % T)
        show("sudo python3 skb_vxlan_source_detector.py --gso-changes-only", lab.stop_tool())
        lab.run("%s cleanup" % T)
    return 0


if __name__ == "__main__":
    sys.exit(main())
