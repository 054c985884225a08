"""Hand-built events for the unit tests."""
import socket

from skbtrace.kernel import event


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
