"""--flight-recorder on the live system: the settings it changes
(kernel.ftrace_dump_on_oops, tracing_on), shared by both tools, restored by
the last one to exit. The record format is skbtrace/kernel/flightrec.py."""
import errno
import fcntl
import json
import os

from skbtrace.errors import EnvError
from skbtrace.kernel import event

SYSCTL = "/proc/sys/kernel/ftrace_dump_on_oops"
# Both tools usually record at once and share the settings: the first to arm
# saves the original values, the last to exit restores them (tmpfs: a reboot
# forgets a stale entry, and dead pids are dropped).
STATE_DIR = "/run/skbtrace"
MODES = {"crash": event.FR_CRASH, "all": event.FR_ALL}


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _write(path, value):
    with open(path, "w") as f:
        f.write(value + "\n")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


class _SharedState(object):
    """{"pids": [...], "original": [[path, value, label], ...]} under a lock."""

    def __init__(self):
        self.path = os.path.join(STATE_DIR, "flight-recorder.json")
        self.lock = None

    def __enter__(self):
        try:
            os.makedirs(STATE_DIR, exist_ok=True)
            self.lock = open(os.path.join(STATE_DIR, "flight-recorder.lock"), "w")
            fcntl.flock(self.lock, fcntl.LOCK_EX)
        except (IOError, OSError):
            self.lock = None        # no shared state: each tool on its own
        return self

    def __exit__(self, *exc):
        if self.lock:
            self.lock.close()

    def read(self):
        try:
            with open(self.path) as f:
                st = json.load(f)
        except (IOError, OSError, ValueError):
            st = {}
        st["pids"] = [p for p in st.get("pids", []) if _alive(p) and p != os.getpid()]
        st.setdefault("original", [])
        return st

    def write(self, st):
        if not self.lock:
            return
        if not st["pids"]:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            return
        with open(self.path, "w") as f:
            json.dump(st, f)


class Recorder(object):
    """kernel.ftrace_dump_on_oops on (and tracing_on, if it was off) while the
    tool runs; both restored at exit, by the last skbtrace tool using them.
    check() runs before anything loads."""

    def __init__(self, mode, tracefs_dir):
        self.mode = mode
        self.tracefs = tracefs_dir
        self.saved = []             # (path, old value, label), in the order set
        self.armed = False

    def check(self):
        prog = "--flight-recorder"
        if not os.path.exists(SYSCTL):
            raise EnvError("%s: this kernel has no kernel.ftrace_dump_on_oops (%s; "
                           "CONFIG_FTRACE off?)" % (prog, SYSCTL))
        if not self.tracefs or not os.path.exists(os.path.join(self.tracefs, "trace")):
            raise EnvError("%s: no trace buffer: tracefs is not mounted (mount -t tracefs "
                           "nodev /sys/kernel/tracing)" % prog)
        for path in (SYSCTL, os.path.join(self.tracefs, "tracing_on")):
            if os.path.exists(path) and not os.access(path, os.W_OK):
                raise EnvError("%s: no permission to change %s (run as root on the host; "
                               "a container needs /proc/sys and tracefs writable)"
                               % (prog, path))

    def _set(self, path, value, label):
        try:
            old = _read(path)
            if old != value:
                _write(path, value)
                self.saved.append((path, old, label))
            return old
        except (IOError, OSError) as e:
            self.restore()
            raise EnvError("--flight-recorder: cannot set %s: %s" % (
                label, e.strerror or os.strerror(e.errno or errno.EIO)))

    def arm(self):
        """Set what the recorder needs; returns the lines announcing it."""
        with _SharedState() as shared:
            st = shared.read()
            if st["original"]:
                # another tool armed first (alive, or killed before it could
                # restore): its saved originals are the system's
                self.saved = [tuple(x) for x in st["original"]]
            old = self._set(SYSCTL, "1", "kernel.ftrace_dump_on_oops")
            on = os.path.join(self.tracefs, "tracing_on")
            was = self._set(on, "1", "tracing_on") if os.path.exists(on) else "1"
            for path, value, _label in self.saved:
                if path == SYSCTL:
                    old = value
                elif path == on:
                    was = value
            st["pids"].append(os.getpid())
            st["original"] = [list(x) for x in self.saved]
            shared.write(st)
            self.armed = True
        lines = ["flight recorder (%s): %s also go to the kernel trace buffer as %s records "
                 "(bpf_trace_printk)" % (self.mode, "crash findings" if self.mode == "crash"
                                         else "crash findings, WARNINGs and tunnel-bit setters",
                                         event.FR_PREFIX),
                 "flight recorder: kernel.ftrace_dump_on_oops %s -> 1 (restored at exit): an "
                 "oops prints the trace buffer on the console" % old]
        if was != "1":
            lines.append("flight recorder: %s %s -> 1 (restored at exit)" % (on, was))
        lines.append("note: once per boot the kernel logs a 'trace_printk() being used' NOTICE "
                     "for BPF programs that use bpf_trace_printk: expected, harmless")
        return lines

    def restore(self):
        """Put every changed value back, unless another skbtrace tool still
        records (then the last one does); returns what was done."""
        out = []
        if self.armed:
            self.armed = False
            with _SharedState() as shared:
                st = shared.read()
                if st["pids"]:
                    shared.write(st)
                    self.saved = []
                    return ["kernel.ftrace_dump_on_oops left on: still used by pid %s, which "
                            "restores it" % ",".join(str(p) for p in st["pids"])]
                shared.write(st)
        while self.saved:
            path, old, label = self.saved.pop()
            try:
                _write(path, old)
                out.append("%s restored to %s" % (label, old))
            except (IOError, OSError) as e:
                out.append("%s NOT restored to %s: %s" % (label, old, e.strerror))
        return out
