"""Every --json record leaves through dumps() (the events, as the tools run,
through skbtrace/output/fastpath.py's templates, which write in the same
identity()): events, statistics and the detector's static record all carry
the host name and the boot id, so logs merged from a fleet (or from one node
across reboots) stay attributable."""
import json
import socket

BOOT_ID = "/proc/sys/kernel/random/boot_id"

_identity = []


def identity():
    """{"host": ..., "boot_id": ...}, read once per process: a record must
    not change hands halfway through a run."""
    if not _identity:
        try:
            with open(BOOT_ID) as f:
                boot_id = f.read().strip() or None
        except (IOError, OSError):
            boot_id = None
        _identity.append({"host": socket.gethostname(), "boot_id": boot_id})
    return _identity[0]


def dumps(d):
    out = dict(d)
    out.update(identity())
    return json.dumps(out, sort_keys=True)
