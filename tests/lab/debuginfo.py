"""The lab kernel's vmlinux with debuginfo, for `crash` on the lab's vmcores.

Debian ships it in linux-image-<release>-dbg (~860 MB for 6.1): downloaded
once with apt-get for exactly the image's kernel (release and version from
the image's meta.json, never hard-coded), only the vmlinux kept (~630 MB),
under LAB_CACHE like the images:

    /usr/bin/python3 tests/lab/debuginfo.py --kernel 6.1    # prints its path
"""
import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

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
            subprocess.run(["apt-get", "download", "-q", "%s=%s" % (name, version)],
                           cwd=tmp, check=True, stdout=subprocess.DEVNULL)
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", default=os.environ.get("LAB_KERNEL", "6.1"))
    a = p.parse_args()
    print(ensure(image.ensure(a.kernel, fast=False)))


if __name__ == "__main__":
    main()
