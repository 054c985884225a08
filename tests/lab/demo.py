"""`make demo`: boot a lab guest and show both tools on real traffic.

1. the watcher while a tc program pulls fraglist GRO packets into their head
   (bpf_skb_pull_data) and the router segments them: CREATE, CLEAR [!!], then
   the crash-shaped state at skb_segment with the mutator named;
2. the detector while TCP runs over a vxlan overlay and the host injects a
   virtio GSO frame: VIRTIO_RX, TUNNEL_XMIT, GRO_COMPLETE and the verdict;
3. what it all means, in two sentences computed from the two outputs.
"""
import os
import re
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

T = "python3 tests/lab/guest/traffic.py"
MANUALS = "docs/skb_frag_list_watcher.md and docs/skb_vxlan_source_detector.md"
_EVENT_RE = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} ")
_SETTER_RE = re.compile(r"^([A-E]) +(.+?) {2,}(\S+) +(\d+)$")


def _n(count, noun):
    return "%d %s%s" % (count, noun, "" if count == 1 else "s")


def _skbs(lines):
    """Distinct skbs: one skb passes several segmentation hooks."""
    return _n(len(set(re.search(r"\| (0x[0-9a-f]+) \|", l).group(1) for l in lines)), "skb")


def _watcher_sentence(out):
    lines = [l for l in out.splitlines() if _EVENT_RE.match(l)]
    critical = [l for l in lines if "[CRITICAL]" in l]
    inconsistent = [l for l in lines if " INCONSISTENT " in l]
    creates = len([l for l in lines if " CREATE " in l])
    found = critical or inconsistent
    if not found:
        return ("The frag_list watcher saw %s built and handled normally: no skb reached "
                "segmentation in a state that crashes skb_segment." % _n(creates, "frag_list"))
    mutators = Counter(m.group(1) for m in (re.search(r" last=([\w.]+)\(", l) for l in found)
                       if m)
    by = (", last changed by %s" % mutators.most_common(1)[0][0]) if mutators else ""
    if critical:
        return ("The frag_list watcher caught %s entering segmentation without the "
                "frag_list that skb_segment would dereference%s: that is the crash (CRITICAL)."
                % (_skbs(critical), by))
    reasons = set(r for l in found for r in re.search(r"reasons=(\S+)", l).group(1).split(","))
    if reasons <= set(["NULL_FRAGLIST_GSO", "FRAGLIST_NO_LIST"]):
        return ("The frag_list watcher saw %s reach segmentation without their frag_list%s, "
                "but the payload was still in the packet's head, so this kernel survived: a "
                "WARNING, not the crash." % (_skbs(found), by))
    return ("The frag_list watcher flagged %s at segmentation (%s)%s: WARNINGs, states this "
            "kernel survives, not the crash." % (_skbs(found), ", ".join(sorted(reasons)), by))


def _detector_sentence(out):
    setters = []
    if "--- Verdict: who set UDP_TUNNEL ---" in out:
        table = out[out.index("--- Verdict: who set UDP_TUNNEL ---"):]
        for line in table.splitlines():
            m = _SETTER_RE.match(line.strip())
            if m:
                setters.append("%s (pattern %s, %s) on %s" % (m.group(3), m.group(1), m.group(2),
                                                             _n(int(m.group(4)), "skb")))
    if not setters:
        return ("The vxlan source detector saw no packet gain the UDP_TUNNEL bit; the manuals "
                "%s explain every line above." % MANUALS)
    return ("The vxlan source detector found who set the UDP_TUNNEL bit: %s; the manuals %s "
            "explain every line above." % ("; ".join(setters), MANUALS))


def verdict(watcher_out, detector_out):
    """Two sentences for a newcomer, from what the two tools printed."""
    return _watcher_sentence(watcher_out) + " " + _detector_sentence(detector_out)


def show(title, r):
    print("\n==== %s (exit %s) ====" % (title, r.rc))
    sys.stdout.write(r.out)
    sys.stdout.flush()


def main():
    from lab import Lab
    with Lab(stream=False) as lab:
        lab.run("%s topo --gro-list on --router-egress-gso off && %s tc-attach --netns r "
                "--dev r-h1 --dir ingress --src tests/lab/progs/pull_data.c --fn pull_all"
                % (T, T), check=True)
        print("\nstarting skb_frag_list_watcher.py (BCC compiles for a minute or two "
              "under emulation)...", flush=True)
        w = lab.trace("python3 skb_frag_list_watcher.py",
                      traffic=["%s udp-gso --count 2" % T])
        show("sudo python3 skb_frag_list_watcher.py", w)
        lab.run("%s cleanup && %s topo --gro-list off && %s vxlan" % (T, T, T), check=True)
        print("\nstarting skb_vxlan_source_detector.py...", flush=True)
        lab.start_tool("python3 skb_vxlan_source_detector.py --gso-changes-only")
        lab.host("python3 tests/lab/inject.py --gso tcpv4 --gso-size 1000 --count 1")
        lab.run("%s tcp-bulk --dst 198.19.0.2 --seconds 1" % T)
        d = lab.stop_tool()
        show("sudo python3 skb_vxlan_source_detector.py --gso-changes-only", d)
        lab.run("%s cleanup" % T)
    print("\n==== what this shows ====")
    print(verdict(w.out, d.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
