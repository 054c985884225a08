"""The lab kernel's vmlinux with debuginfo, for `crash` on the lab's vmcores.

Debian ships it in linux-image-<release>-dbg (~860 MB for 6.1): downloaded
once with apt-get for exactly the image's kernel (release and version from
the image's meta.json, never hard-coded), only the vmlinux kept (~630 MB),
under LAB_CACHE like the images:

    /usr/bin/python3 tests/lab/debuginfo.py --kernel 6.1    # prints its path
"""
import argparse
import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import image  # noqa: E402


def dbg_package(meta):
    return "linux-image-%s-dbg" % meta["release"], meta["kernel_pkg"]["version"]


def vmlinux_path(meta):
    name, version = dbg_package(meta)
    return os.path.join(image.CACHE, "dbg", "%s_%s" % (name, version),
                        "vmlinux-%s" % meta["release"])


def ensure(meta):
    """The vmlinux of the image's kernel: cached, else downloaded and
    extracted (one process at a time per package)."""
    path = vmlinux_path(meta)
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return path
        name, version = dbg_package(meta)
        t0 = time.time()
        tmp = tempfile.mkdtemp(dir=d)
        try:
            image.log("downloading %s=%s (the kernel's debuginfo, for crash)" % (name, version))
            download(meta, name, version, tmp)
            deb = [f for f in os.listdir(tmp) if f.endswith(".deb")][0]
            size = os.path.getsize(os.path.join(tmp, deb))
            t1 = time.time()
            member = "./usr/lib/debug/boot/vmlinux-%s" % meta["release"]
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], cwd=tmp,
                                   stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", tmp, member], stdin=tar.stdout, check=True)
            tar.stdout.close()
            if tar.wait():
                raise SystemExit("dpkg-deb --fsys-tarfile %s failed" % deb)
            os.rename(os.path.join(tmp, member), path + ".part")
            os.rename(path + ".part", path)
            with open(os.path.join(d, "meta.json"), "w") as f:
                json.dump({"package": name, "version": version, "deb_bytes": size,
                           "download_seconds": round(t1 - t0, 1),
                           "extract_seconds": round(time.time() - t1, 1),
                           "vmlinux_bytes": os.path.getsize(path)}, f, indent=1)
            image.log("%s: %d MB .deb, %.0f s download, %.0f s extract" % (
                path, size >> 20, t1 - t0, time.time() - t1))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def download(meta, name, version, into):
    """apt-get download when the host's apt knows the package (the 6.1
    image's suites are the host's), else from the image's own suite, as
    image.py reads it (5.10: bullseye on a bookworm host)."""
    if subprocess.call(["apt-get", "download", "-q", "%s=%s" % (name, version)], cwd=into,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
        return
    for suite, base in image._suite_base(meta["recipe"]["kernel"]):
        index = lzma.decompress(image._fetch("%s/dists/%s/main/binary-amd64/Packages.xz"
                                             % (base, suite))).decode("utf-8", "replace")
        for stanza in index.split("\n\n"):
            f = dict(re.findall(r"^([A-Za-z0-9-]+): (.*)$", stanza, re.M))
            if f.get("Package") == name and f.get("Version") == version:
                h = hashlib.sha256()
                with urllib.request.urlopen("%s/%s" % (base, f["Filename"]), timeout=300) as r, \
                        open(os.path.join(into, os.path.basename(f["Filename"])), "wb") as out:
                    for chunk in iter(lambda: r.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
                if h.hexdigest() != f["SHA256"]:
                    raise SystemExit("%s: does not match its index's SHA256" % f["Filename"])
                return
    raise SystemExit("%s=%s: neither apt nor the %s suites have it"
                     % (name, version, meta["recipe"]["suite"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", default=os.environ.get("LAB_KERNEL", "6.1"))
    a = p.parse_args()
    print(ensure(image.ensure(a.kernel, fast=False)))


if __name__ == "__main__":
    main()
