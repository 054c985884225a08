"""Run a tracer while traffic flows, inside the lab guest.

Starts TOOL (stdout and stderr to files), waits until its stderr matches
--ready (the tools print "Tracing N hooks... Hit Ctrl-C to end." after
attaching), runs each --traffic command in order, waits --settle seconds,
sends --signal, waits for the exit and prints one JSON object on stdout:
{"rc": tool exit status (or "killed" when it ignored the signal for
--exit-timeout s), "out": tool stdout, "err": tool stderr, "ready_s":
seconds until ready (null: never ready, traffic not run),
"traffic": [{"cmd", "rc" (or "timeout"), "out", "err"}, ...]}.

    python3 trace_during.py --tool "python3 skb_frag_list_watcher.py" \\
        --traffic "python3 tests/lab/guest/traffic.py udp-gso" --signal TERM
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tool", required=True)
    p.add_argument("--traffic", action="append", default=[])
    p.add_argument("--ready", default=r"Hit Ctrl-C to end")
    p.add_argument("--ready-timeout", type=float, default=300)
    p.add_argument("--signal", default="TERM", choices=["TERM", "INT", "NONE"])
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--exit-timeout", type=float, default=60)
    p.add_argument("--traffic-timeout", type=float, default=600)
    a = p.parse_args()
    tmp = tempfile.mkdtemp()
    out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    with open(out_path, "wb") as o, open(err_path, "wb") as e:
        t0 = time.time()
        tool = subprocess.Popen(["bash", "-c", "exec " + a.tool], stdout=o, stderr=e)
        ready = None
        while time.time() - t0 < a.ready_timeout:
            with open(err_path, "rb") as f:
                if re.search(a.ready.encode(), f.read()):
                    ready = time.time() - t0
                    break
            if tool.poll() is not None:
                break
            time.sleep(0.2)
        traffic = []
        if ready is not None:
            for cmd in a.traffic:
                try:
                    r = subprocess.run(["bash", "-c", cmd], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, timeout=a.traffic_timeout)
                    rc, o, e = r.returncode, r.stdout, r.stderr
                except subprocess.TimeoutExpired as x:
                    rc, o, e = "timeout", x.stdout or b"", x.stderr or b""
                traffic.append({"cmd": cmd, "rc": rc, "out": o.decode(errors="replace"),
                                "err": e.decode(errors="replace")})
            time.sleep(a.settle)
        if tool.poll() is None and a.signal != "NONE":
            tool.send_signal(getattr(signal, "SIG" + a.signal))
        try:
            rc = tool.wait(timeout=a.exit_timeout)
        except subprocess.TimeoutExpired:
            tool.kill()
            rc = "killed"
    with open(out_path, "rb") as f:
        out = f.read().decode(errors="replace")
    with open(err_path, "rb") as f:
        err = f.read().decode(errors="replace")
    json.dump({"rc": rc, "out": out, "err": err, "ready_s": ready, "traffic": traffic},
              sys.stdout)


if __name__ == "__main__":
    main()
