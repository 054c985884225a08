"""Record the raw netlink messages the STATIC check reads, for the unit tests.
Run as root inside the namespace to record, e.g.:

    ip netns exec NS /usr/bin/python3 tests/unit/record_netlink.py > data/netlink/NAME.hex

One line per message: "link <hex>" (RTM_NEWLINK) or "filter <hex>" (RTM_NEWTFILTER
of a tc bpf filter on ingress/egress)."""
import sys

from pyroute2 import IPRoute


def raw(msg):
    return bytes(msg.data[msg.offset:msg.offset + msg["header"]["length"]]).hex()


def main():
    ip = IPRoute()
    for link in ip.get_links():
        print("link", raw(link))
        for parent in (0xfffffff2, 0xfffffff3):
            for f in ip.get_filters(index=link["index"], parent=parent):
                if f.get_attr("TCA_KIND") == "bpf":
                    print("filter", raw(f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
