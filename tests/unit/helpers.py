"""Hand-built events for the unit tests, and a shell's pipe."""
import os
import socket
import subprocess

from skbtrace.kernel import event, packet


def ip4(text):
    return list(bytearray(socket.inet_aton(text))) + [0] * 12


def make_event(**kw):
    e = event.SkbEvent()
    defaults = dict(ts_ns=1000000000, cpu=2, pid=25, hook_id=0, skb=0xffff888abc123000,
                    head=0xffff888a00000000, len=1400, comm=b"ksoftirqd/2", stack_len=0)
    defaults.update(kw)
    for k, v in defaults.items():
        if k in ("saddr", "daddr", "inner_saddr", "inner_daddr"):
            getattr(e, k)[:] = v
        else:
            setattr(e, k, v)
    return e


def fake_flight_system(tmp_path, monkeypatch, tracing_on="0", sysctl=True):
    """A kernel.ftrace_dump_on_oops file and a tracefs of our own for the
    flight recorder; returns (sysctl path, tracefs path)."""
    from skbtrace.live import flight_recorder
    from skbtrace.live import loader
    path = tmp_path / "ftrace_dump_on_oops"
    if sysctl:
        path.write_text("0\n")
    tracefs = tmp_path / "tracing"
    tracefs.mkdir()
    (tracefs / "trace").write_text("")
    (tracefs / "tracing_on").write_text(tracing_on + "\n")
    monkeypatch.setattr(flight_recorder, "SYSCTL", str(path))
    monkeypatch.setattr(flight_recorder, "STATE_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(loader, "tracefs_dir", lambda: str(tracefs))
    return path, tracefs


def to_bytes(e):
    return bytes(bytearray(e))


class FixedClock(object):
    """Wall time = monotonic seconds, in UTC-like HH:MM:SS."""

    def hms(self, ts_ns):
        s, ns = divmod(ts_ns, 10 ** 9)
        return "%02d:%02d:%02d.%06d" % (s // 3600 % 24, s // 60 % 60, s % 60, ns // 1000)

    def iso(self, ts_ns):
        return "1970-01-01T" + self.hms(ts_ns)


def run_into(writer, reader, timeout=60):
    """`writer | reader` as a shell runs it: (writer's exit code, reader's
    stdout, writer's stderr). The pipe is made here and both its ends are
    closed in this process, so the reader sees EOF and the writer EPIPE as
    under a shell; Popen's own pipe would leave a closed stdout on the
    writer's Popen, which Python 3.6's communicate() refuses."""
    r, w = os.pipe()
    try:
        p1 = subprocess.Popen(writer, stdout=w, stderr=subprocess.PIPE)
        try:
            p2 = subprocess.Popen(reader, stdin=r, stdout=subprocess.PIPE)
        except BaseException:
            p1.kill()
            p1.wait()
            raise
    finally:
        os.close(r)
        os.close(w)
    out = p2.communicate(timeout=timeout)[0]
    err = p1.communicate(timeout=timeout)[1]
    return p1.returncode, out.decode(), err.decode()


def pcap_file(path, packets):
    """packet.write_pcap() into a new file at path (the tool opens through
    output.sink.open_output; tests write their own files)."""
    with open(path, "wb") as f:
        return packet.write_pcap(f, packets)
