"""The launcher as users run it: bad input and a bad environment give one
line on stderr and a non-zero exit, never a traceback."""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from helpers import run_into
from skbtrace.live import loader
from skbtrace.errors import EnvError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WATCHER = os.path.join(ROOT, "skb_frag_list_watcher.py")


def run(args, **kw):
    p = subprocess.Popen([sys.executable, WATCHER] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd="/", **kw)
    out, err = p.communicate(timeout=60)
    return p.returncode, out.decode(), err.decode()


def one_line_error(rc, err, code, text):
    assert rc == code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert text in err, err


@pytest.mark.parametrize("args,text", [
    (["--src-ip", "10.0.0"], "--src-ip: '10.0.0' is not an IPv4 or IPv6 address"),
    (["--dst-ip", "fe80:::1"], "--dst-ip: 'fe80:::1' is not an IPv4 or IPv6 address"),
    (["--interface", "nosuchif0"], "--interface: no interface named 'nosuchif0'"),
    (["--buffer-pages", "12"], "12 is not a power of two"),
    (["--buffer-pages", "x"], "'x' is not a number"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["-o", "/nonexistent-dir/x.log"], "-o/--output: cannot open /nonexistent-dir/x.log"),
    (["--flight-recorder=everything"], "argument --flight-recorder: invalid choice: "
                                       "'everything' (choose from 'crash', 'all')"),
    (["--backend", "ebpf"], "argument --backend: invalid choice: 'ebpf' "
                            "(choose from 'auto', 'kprobe', 'fentry')"),
    (["--buffer", "bpf"], "argument --buffer: invalid choice: 'bpf' "
                          "(choose from 'auto', 'perf', 'ring')"),
])
def test_bad_input(args, text):
    rc, out, err = run(args)
    one_line_error(rc, err, 2, text)


@pytest.mark.parametrize("args,pages", [([], 0), (["--buffer", "ring", "--buffer-pages", "16"],
                                               None)])
def test_ebpf_event_buffer(args, pages):
    """--ebpf shows the perf build unless the ring buffer is asked for (auto
    decides at run time, on the kernel it runs on)."""
    rc, out, err = run(["--ebpf"] + args)
    assert rc == 0, err
    if pages is None:
        pages = 1
        while pages < 16 * (os.cpu_count() or 1):
            pages <<= 1
    assert "#define RINGBUF_PAGES %d" % pages in out


@pytest.mark.parametrize("opt,mode", [("--flight-recorder", 1), ("--flight-recorder=all", 2)])
def test_ebpf_flight_recorder_compiles_the_recorder_in(opt, mode):
    rc, out, err = run(["--ebpf", opt])
    assert rc == 0, err
    assert "#define FLIGHT_RECORDER %d" % mode in out
    assert '#define FR_TOOL "skb_frag_list_watcher"' in out
    rc, out, err = run(["--ebpf"])
    assert "#define FLIGHT_RECORDER 0" in out


def test_help_has_examples_and_hides_ebpf():
    rc, out, err = run(["--help"])
    assert rc == 0
    assert "examples:" in out and "--gso-only" in out and "--stack-trace" in out
    assert "--ebpf" not in out


def test_ebpf_prints_final_text_without_root_or_bcc():
    rc, out, err = run(["--ebpf", "--src-ip", "198.18.1.1", "--gso-only"])
    assert rc == 0, err
    assert "#define FILTER_SRC 1" in out and "#define FILTER_GSO_ONLY 1" in out
    assert "struct skb_event {" in out            # the header is inlined
    assert '#include "' not in out                # no local include left
    assert "HOOK_SEGMENT(KPROBE, skb_segment," in out
    assert "HOOK_LINES" not in out


def test_ebpf_into_head_is_quiet():
    rc, out, err = run_into([sys.executable, WATCHER, "--ebpf"], ["head", "-1"])
    assert out.count("\n") == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


def _nobody():
    os.setgid(65534)
    os.setuid(pwd.getpwnam("nobody").pw_uid)


def _nobody_runs(code, *argv):
    try:
        return subprocess.call([sys.executable, "-c", code] + list(argv), preexec_fn=_nobody,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd="/") == 0
    except OSError:         # the interpreter itself: EACCES on a directory above it
        return False


_READS = "import sys\nfor p in sys.argv[1:]: open(p, 'rb').close()"
# what the launcher reads first: itself, the package, the BPF sources
_CHECKOUT = ("skb_frag_list_watcher.py", "skbtrace/__init__.py", "bpf/skb_event.h")


@pytest.fixture
def launcher_for_nobody():
    """The watcher as nobody can run it: the checkout itself where nobody
    can read it, else its launcher, package and BPF sources copied to a
    directory of the test's own that nobody can (a clone under a 0700 home,
    or in a mktemp -d folder)."""
    if not _nobody_runs("pass"):
        # make test-unit-py36 runs a copy of a pyenv build that others can run
        why = "nobody cannot run this interpreter (%s)" % sys.executable
        if os.environ.get("SKBTRACE_REQUIRE_NOBODY"):
            pytest.fail(why)
        pytest.skip(why)
    if _nobody_runs(_READS, *[os.path.join(ROOT, f) for f in _CHECKOUT]):
        yield WATCHER
        return
    top = tempfile.mkdtemp(prefix="skbtrace-nobody.")
    try:
        keep = shutil.ignore_patterns("__pycache__")
        for d in ("skbtrace", "bpf"):
            shutil.copytree(os.path.join(ROOT, d), os.path.join(top, d), ignore=keep)
        shutil.copy(WATCHER, top)
        for dirpath, dirnames, filenames in os.walk(top):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        if not _nobody_runs(_READS, *[os.path.join(top, f) for f in _CHECKOUT]):
            pytest.fail("nobody cannot read a copy of the checkout in %s either (TMPDIR)" % top)
        yield os.path.join(top, os.path.basename(WATCHER))
    finally:
        shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_not_root(launcher_for_nobody):
    p = subprocess.Popen([sys.executable, launcher_for_nobody], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd="/", preexec_fn=_nobody)
    out, err = p.communicate(timeout=60)
    one_line_error(p.returncode, err.decode(), 1, "must run as root")


@pytest.mark.skipif(os.geteuid() != 0 or loader.kprobes_supported(),
                    reason="only on a kernel without kprobes (like this project's host)")
def test_kernel_without_kprobes():
    rc, out, err = run([])
    one_line_error(rc, err, 1, "has no kprobe support")


def test_bcc_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)
    with pytest.raises(EnvError) as e:
        loader.import_bcc()
    msg = str(e.value)
    assert "python3-bpfcc" in msg and "python3-bcc" in msg and "unrelated" in msg
    assert "\n" not in msg


def test_preflight_order_and_messages(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "kprobes_supported", lambda: True)
    monkeypatch.setattr(loader, "tracefs_dir", lambda: None)
    monkeypatch.setattr(loader, "mount_tracefs", lambda: False)
    with pytest.raises(EnvError) as e:
        loader.preflight()
    assert "tracefs is not mounted" in str(e.value)
    monkeypatch.setattr(loader, "tracefs_dir", lambda: "/sys/kernel/tracing")
    monkeypatch.setattr(loader, "headers_present", lambda r: False)
    with pytest.raises(EnvError) as e:
        loader.preflight()
    assert "kernel headers for" in str(e.value) and "linux-headers-" in str(e.value)
