"""Run a tool's main() against fakebcc, for the pipe and signal tests.
usage: fake_run.py TOOL NPOLLS SIGNAL [tool args...]
FAKE_POLL_S=seconds: each poll takes that long (a run that outlasts signals)."""
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import fakebcc  # noqa: E402
from helpers import make_event, to_bytes  # noqa: E402
from skbtrace.kernel import event  # noqa: E402

tool, npolls, sig = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fakebcc.install()
fakebcc.BPF.available = ["skb_segment", "skb_segment_list", "skb_gro_receive_list"]
fakebcc.BPF.stop_signal = getattr(signal, sig)
fakebcc.BPF.poll_s = float(os.environ.get("FAKE_POLL_S", "0"))
fakebcc.BPF.script = [[to_bytes(make_event(event=event.EV_ACCESS, hook_id=19,
                                           ts_ns=(i * 10 + j) * 1000))
                       for j in range(10)] for i in range(npolls)]
if tool == "watcher":
    from skbtrace.watcher import main
sys.exit(main(sys.argv[4:]))
