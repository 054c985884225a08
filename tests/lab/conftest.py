"""One guest for the whole lab session. If the lab cannot boot, lab tests
fail: CI must never pass without a real kernel."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from lab import Lab  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: runs in a QEMU guest with a real kernel")


@pytest.fixture(scope="session")
def lab():
    with Lab() as guest:
        yield guest


@pytest.fixture
def topo(lab):
    """A fresh h1 -- r -- h2 topology (fraglist GRO on the router)."""
    lab.run("python3 tests/lab/guest/traffic.py topo --gro-list on", check=True)
    yield lab
    lab.run("python3 tests/lab/guest/traffic.py cleanup")
