#!/usr/bin/env python3
"""The Python 3.6 the unit tests also run on (make test-unit-py36): RHEL 8's
platform-python is 3.6, and vermin proves the syntax, not the behaviour.

Finds a 3.6 (PY36, python3.6 on PATH, /usr/bin/python3.6,
/usr/libexec/platform-python, pyenv's versions/3.6*), builds a venv of it
with tests/py36/requirements.txt under the lab cache, and prints the venv's
python; prints nothing, after a WARNING on stderr, when the machine has no
3.6. Built once, again when the interpreter or the requirements change.

A pyenv build lives in its owner's home, which other users cannot enter
(root's is 0700), and test_cli's test_not_root runs the tool as nobody with
this interpreter. So an interpreter outside /usr is copied into the lab
cache first: CPython finds its library from where its binary is; a build
with --enable-shared also finds libpython by a RUNPATH into its old prefix,
which patchelf points at $ORIGIN/../lib."""
import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.base_prefix); print(sys.version)"


def candidates():
    yield os.environ.get("PY36")
    yield shutil.which("python3.6")
    yield "/usr/bin/python3.6"
    yield "/usr/libexec/platform-python"
    for root in (os.environ.get("PYENV_ROOT"), os.path.expanduser("~root/.pyenv")):
        if not root:
            continue
        found = glob.glob(os.path.join(root, "versions", "3.6*", "bin", "python3.6"))
        key = [tuple(int(n) for n in re.findall(r"\d+", os.path.basename(p[:-len("/bin/python3.6")])))
               for p in found]
        for _, path in sorted(zip(key, found), reverse=True):
            yield path


def probe(path):
    """(executable, prefix, version) of a 3.6 at path, or None."""
    if not path or not os.path.exists(path):
        return None
    try:
        out = subprocess.check_output([path, "-c", PROBE], stderr=subprocess.DEVNULL,
                                      universal_newlines=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None     # e.g. a pyenv shim of a version not selected
    lines = out.splitlines()
    if len(lines) < 3 or lines[0] != "3.6":
        return None
    return os.path.realpath(path), lines[1], lines[2]


def find():
    looked = []
    for path in candidates():
        if path and path not in looked:
            looked.append(path)
            found = probe(path)
            if found:
                return found, looked
    return None, looked


def relocate(prefix, dest):
    """A copy of the install at prefix that any user can run."""
    tmp = dest + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(prefix, tmp, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(tmp):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o444)
    for exe in glob.glob(os.path.join(tmp, "bin", "python3*")):
        if os.path.islink(exe) or not open(exe, "rb").read(4) == b"\x7fELF":
            continue
        try:
            rpath = subprocess.check_output(["patchelf", "--print-rpath", exe],
                                            universal_newlines=True).strip()
        except OSError:
            sys.exit("py36: patchelf is missing (make deps installs it): cannot make %s "
                     "find its libpython in the copy" % exe)
        if prefix in rpath:
            subprocess.check_call(["patchelf", "--set-rpath", "$ORIGIN/../lib", exe])
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return dest


def build(cache, found):
    exe, prefix, version = found
    venv = os.path.join(cache, "py36-venv")
    with open(REQUIREMENTS, "rb") as f:
        stamp = {"source": exe, "version": version, "requirements": hashlib.sha256(
            f.read()).hexdigest()}
    stamp_path = os.path.join(venv, "skbtrace-stamp.json")
    python = os.path.join(venv, "bin", "python")
    try:
        with open(stamp_path) as f:
            if json.load(f) == stamp and os.path.exists(python):
                return python
    except (IOError, OSError, ValueError):
        pass
    sys.stderr.write("py36: building %s from %s (%s)\n" % (venv, exe, version.split()[0]))
    base = exe
    if not (prefix == "/usr" or prefix.startswith("/usr/")):
        copy = relocate(prefix, os.path.join(cache, "py36-python"))
        base = os.path.join(copy, os.path.relpath(exe, prefix))
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.check_call([base, "-m", "venv", venv])
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.check_call(pip + ["pip==21.3.1"])    # 3.6's bundled pip predates the resolver
    subprocess.check_call(pip + ["-r", REQUIREMENTS])
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    return python


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default=os.environ.get("LAB_CACHE", "/var/cache/skbtrace-lab"))
    args = p.parse_args()
    found, looked = find()
    if not found:
        sys.stderr.write("WARNING: NO PYTHON 3.6 ON THIS MACHINE: the unit tests did NOT run on "
                         "Python 3.6 (RHEL 8's platform-python); looked for: %s "
                         "(PY36=/path/to/python3.6 names one)\n" % ", ".join(looked))
        return 0
    os.makedirs(args.cache, exist_ok=True)
    with open(os.path.join(args.cache, "py36.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            python = build(args.cache, found)
        except subprocess.CalledProcessError as e:
            sys.exit("py36: building the venv failed: %s" % e)
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
