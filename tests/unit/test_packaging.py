"""The wheel must carry the C sources (bpf/ becomes skbtrace/bpf) and the
installed package must find them from anywhere."""
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def have_pip():
    return subprocess.call([sys.executable, "-m", "pip", "--version"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


@pytest.mark.skipif(not have_pip(), reason="pip for %s not installed (make deps)" % sys.executable)
def test_wheel_carries_bpf_and_runs_installed(tmp_path):
    src = tmp_path / "src"
    # a copy, so the build never writes build/ or *.egg-info into the checkout
    shutil.copytree(ROOT, str(src), ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".venv-tools"))
    subprocess.check_call([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                          cwd=str(tmp_path))
    wheel = glob.glob(str(tmp_path / "dist" / "skbtrace-*.whl"))[0]
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("skbtrace/bpf/skb_event.h", "skbtrace/bpf/skb_common.h",
              "skbtrace/bpf/skb_frag_list_watcher.c", "skbtrace/watcher.py"):
        assert f in names, f
    entry = [n for n in names if n.endswith("entry_points.txt")][0]
    ep = zipfile.ZipFile(wheel).read(entry).decode()
    assert "skb_frag_list_watcher = skbtrace.watcher:main" in ep
    # the manual pages, built from the parsers at build time, go to share/man/man8
    from skbtrace import __version__, manpage
    for name, text in manpage.pages():
        member = "skbtrace-%s.data/data/share/man/man8/%s" % (__version__, name)
        assert zipfile.ZipFile(wheel).read(member).decode() == text
        assert "%s = skbtrace." % name[:-2] in ep
    target = tmp_path / "site"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(target), wheel])
    # run the installed code from an unrelated directory, without the checkout
    code = ("import sys; sys.path.insert(0, %r); from skbtrace.watcher import main; "
            "sys.exit(main(['--ebpf']))" % str(target))
    out = subprocess.check_output([sys.executable, "-c", code], cwd="/")
    assert b"struct skb_event {" in out
    assert str(target).encode() in subprocess.check_output(
        [sys.executable, "-c", "import sys; sys.path.insert(0, %r); import skbtrace.paths as p; "
         "print(p.bpf_dir())" % str(target)], cwd="/")
