"""One guest for the whole lab session (LAB_KERNEL, default 6.1). If the lab
cannot boot, every lab test FAILS with the reason: CI must never pass
without a real kernel."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# the package itself, for reading what the tools left (flight records)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from lab import Lab  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: runs in a QEMU guest with a real kernel")
    config.addinivalue_line("markers", "matrix: also runs on the extra lab kernels in CI")
    config.addinivalue_line("markers", "panic: boots a guest of its own and panics it "
                                       "(make test-lab-panic)")


def pytest_collection_modifyitems(items):
    # everything under tests/lab runs in the guest
    for item in items:
        if str(item.fspath).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.lab)


_boot_error = []
_kernels = []


def pytest_terminal_summary(terminalreporter):
    # the lab follows Debian's kernel meta-packages: say which kernel ran
    for meta in _kernels:
        pkg = meta.get("kernel_pkg") or {}
        terminalreporter.write_line("lab kernel: %s (%s %s, image built %s)" % (
            meta.get("release"), pkg.get("image"), pkg.get("version"), meta.get("built")))


@pytest.fixture(scope="session")
def lab():
    if _boot_error:
        pytest.fail("lab guest could not boot (see the first lab test's error): %s"
                    % _boot_error[0], pytrace=False)
    guest = Lab()
    try:
        guest.__enter__()
    except (Exception, KeyboardInterrupt) as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        _boot_error.append("%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
        pytest.fail("lab guest (LAB_KERNEL=%s) could not boot: %s: %s\nconsole tail:\n%s" % (
            guest.kernel, type(e).__name__, e, guest.console_tail()), pytrace=False)
    _kernels.append(guest.meta)
    try:
        yield guest
    finally:
        guest.__exit__(None, None, None)


@pytest.fixture
def topo(lab):
    """A fresh h1 -- r -- h2 topology (fraglist GRO on the router)."""
    lab.run("python3 tests/lab/guest/traffic.py topo --gro-list on", check=True)
    yield lab
    lab.run("python3 tests/lab/guest/traffic.py cleanup")
