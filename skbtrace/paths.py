"""Where the C sources live: next to the package when installed (the wheel maps
bpf/ into skbtrace/bpf), or in the checkout's top-level bpf/ folder. Never the
current directory."""
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def bpf_dir():
    for candidate in (os.path.join(_HERE, "bpf"), os.path.join(os.path.dirname(_HERE), "bpf")):
        if os.path.isfile(os.path.join(candidate, "skb_event.h")):
            return candidate
    raise RuntimeError("cannot find the bpf/ sources next to %s" % _HERE)
