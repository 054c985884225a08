"""Kernel-side cost of the tools on real traffic, in a lab guest: TCP bulk
and UDP GSO through the router, without a tool, with the watcher, with the
detector. Prints figures (TCG numbers: compare the columns, not with
hardware). Not a test.

    /usr/bin/python3 tests/bench/bench_overhead_lab.py
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab"))

from lab import Lab  # noqa: E402

T = "python3 tests/lab/guest/traffic.py"


def tcp_rate(lab, seconds=5):
    r = lab.run("%s tcp-bulk --seconds %d" % (T, seconds))
    m = re.search(r"tcp-server received (\d+) bytes", r.out)
    return int(m.group(1)) * 8 / seconds / 1e6 if m else float("nan")


def main():
    rows = []
    with Lab() as lab:
        lab.run("%s topo --gro-list on" % T, check=True)
        rows.append(("no tool", tcp_rate(lab)))
        for name, tool in (("watcher", "python3 skb_frag_list_watcher.py"),
                           ("watcher --gso-only --src-ip 198.18.9.9",
                            "python3 skb_frag_list_watcher.py --gso-only --src-ip 198.18.9.9"),
                           ("detector", "python3 skb_vxlan_source_detector.py --no-static")):
            lab.start_tool(tool + " -o /dev/null")
            rows.append((name, tcp_rate(lab)))
            lab.stop_tool()
        lab.run("%s cleanup" % T)
    base = rows[0][1]
    print("%-42s %10s %8s" % ("TCP bulk h1 -> r -> h2 (TCG guest)", "Mbit/s", "vs none"))
    for name, rate in rows:
        print("%-42s %10.1f %7.0f%%" % (name, rate, 100.0 * rate / base if base else 0))


if __name__ == "__main__":
    main()
