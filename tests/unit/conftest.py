"""Shared fixtures; the checkout's root goes first on sys.path."""
import os
import signal
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture
def fake(monkeypatch):
    """The run loop against fakebcc (tests/unit/fakebcc.py): a few watcher
    hooks exist, nothing lost, SIGTERM after the script. Signal handlers the
    run installs are put back."""
    import fakebcc
    old = dict((s, signal.getsignal(s)) for s in SIGNALS)
    fakebcc.install(monkeypatch)
    fakebcc.BPF.available = ["skb_segment", "skb_segment_list", "skb_gro_receive_list",
                             "pskb_expand_head", "__pskb_pull_tail", "udp4_gso_segment"]
    fakebcc.BPF.instances = []
    fakebcc.BPF.lost = 0
    fakebcc.BPF.percpu = {}
    fakebcc.BPF.stop_signal = signal.SIGTERM
    fakebcc.BPF.on_poll = {}
    yield fakebcc
    for s, h in old.items():
        signal.signal(s, h)
