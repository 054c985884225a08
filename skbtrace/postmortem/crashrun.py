"""From a vmcore to a `crash` transcript: runs the user's own `crash` in
batch mode and asks it what the post-mortem story needs.

Round 1: `bt` (the panic task, with the exception frame's registers),
`log` (the oops and the flight records of its ftrace dump). The skbs to read
are then: those asked for (--skb) and those the log's CRITICAL flight records
name; when there are none, the exception frame's registers that `kmem -s`
places in an skbuff slab cache (round 2); then the other flight records'. Round 3: `struct sk_buff ADDR` of
each; round 4: its `struct skb_shared_info` at head + end and `rd -8` of its
head from mac_header (or from SKB_GSO_CB's mac_offset, when that is before
it) to tail.

Every command's answer is taken from crash's own per-command redirection
(`CMD > FILE`: crash 7.x and 8.x alike), never by cutting stdout, and the
whole session is written as `crash> CMD` followed by its answer: the shape
of a transcript a user saves, read by skbtrace.crashdump like one.

Only the commands' output formats are relied on (`bt`, `log`, `struct`,
`rd -8`, `kmem -s`), which crash 7.2.9 (Debian bullseye, RHEL 8.x)
and 8.0.2 (Debian bookworm, RHEL 8.8+) print alike; `struct` is printed by
the gdb inside crash (7.6 / 10.2), whose layouts crashdump reads both.
"""
import argparse
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time

from skbtrace.errors import UserError
from skbtrace.kernel import flightrec
from skbtrace.output.sink import OutputError, open_output
from skbtrace.postmortem import crashdump

DEFAULT_TIMEOUT = 600          # seconds, per crash run (a 2 GB ELF vmcore: ~20 s)
MAX_SKBS = 8                   # skbs read per vmcore (flight records may name many)
MAX_HEAD_BYTES = 65536         # rd -8 of one head at most
# skbuff_head_cache (4.18, 6.1; skbuff_cache from 6.4 on), skbuff_fclone_cache
SKB_CACHE = re.compile(r"\bskbuff_(?:head_|fclone_)?cache\b")
KMEM_OBJ = re.compile(r"^\s*\[?([0-9a-f]{16})\]?\s*$")
# direct map / vmalloc (not kernel text, not user space): where an skb lives
_HEAP_LO, _HEAP_HI = 0xff00000000000000, 0xffffffff80000000

ELF_MAGIC = b"\x7fELF"
KDUMP_MAGIC = b"KDUMP   "          # makedumpfile -c/-l/-p (kdump-compressed)
DISKDUMP_MAGIC = b"DISKDUMP"
FLAT_MAGIC = b"makedumpfile"       # makedumpfile -F (flattened, needs -R first)


class CrashRunError(UserError):
    """The vmcore, the vmlinux or crash cannot give the transcript: exit 2."""


def vmcore_kind(path):
    """The vmcore's format, or CrashRunError saying why it is not one."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except (IOError, OSError) as e:
        raise CrashRunError("--vmcore %s: %s" % (path, e.strerror or e))
    if size == 0:
        raise CrashRunError("--vmcore %s: empty file (0 bytes)" % path)
    if head.startswith(ELF_MAGIC):
        _check_elf_extent(path, size)
        return "ELF"
    if head.startswith(KDUMP_MAGIC):
        _check_kdump_extent(path, size)
        return "kdump-compressed"
    if head.startswith(DISKDUMP_MAGIC):
        return "diskdump"
    if head.startswith(FLAT_MAGIC):
        raise CrashRunError("--vmcore %s: makedumpfile's flattened format: "
                            "`makedumpfile -R vmcore < %s` first" % (path, path))
    raise CrashRunError("--vmcore %s: not a vmcore (no ELF, KDUMP or DISKDUMP header)" % path)


def _check_elf_extent(path, size):
    """An ELF vmcore (dump-guest-memory, /proc/vmcore copied by cp or
    makedumpfile -E) ends where its last PT_LOAD does: shorter is cut off."""
    try:
        with open(path, "rb") as f:
            eh = f.read(64)
            if len(eh) < 64 or eh[4] != 2 or eh[5] != 1:
                raise CrashRunError("--vmcore %s: not a 64-bit little-endian ELF vmcore" % path)
            phoff, = struct.unpack_from("<Q", eh, 32)
            phentsize, phnum = struct.unpack_from("<HH", eh, 54)
            f.seek(phoff)
            ph = f.read(phentsize * phnum)
    except (IOError, OSError) as e:
        raise CrashRunError("--vmcore %s: %s" % (path, e.strerror or e))
    if phnum == 0 or len(ph) < phentsize * phnum or phentsize < 56:
        raise CrashRunError("--vmcore %s: truncated (its ELF program headers are cut off)" % path)
    end = 0
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", ph, i * phentsize)
        p_offset, = struct.unpack_from("<Q", ph, i * phentsize + 8)
        p_filesz, = struct.unpack_from("<Q", ph, i * phentsize + 32)
        if p_type in (1, 4):           # PT_LOAD, PT_NOTE
            end = max(end, p_offset + p_filesz)
    if end > size:
        raise CrashRunError("--vmcore %s: truncated: %d of the %d bytes its ELF headers "
                            "describe" % (path, size, end))


def _check_kdump_extent(path, size):
    """A kdump-compressed vmcore (makedumpfile's diskdump format: header,
    sub-header, two bitmaps, one page descriptor per page the second bitmap
    keeps, the pages) ends with its last page. crash opens a shorter one
    with no word said (exit 1), so it is measured here."""
    def cut(what):
        return CrashRunError("--vmcore %s: truncated kdump-compressed vmcore: %s (%d bytes)"
                             % (path, what, size))
    try:
        with open(path, "rb") as f:
            h = f.read(464)
            if len(h) < 464:
                raise cut("its header is cut off")
            block, sub, bitmap_blocks = struct.unpack_from("<iiI", h, 428)
            if block <= 0 or sub < 0 or bitmap_blocks % 2 or block & (block - 1):
                raise CrashRunError("--vmcore %s: a KDUMP header with block_size %d: not a "
                                    "vmcore makedumpfile wrote" % (path, block))
            f.seek((1 + sub) * block + bitmap_blocks * block // 2)
            bitmap2 = f.read(bitmap_blocks * block // 2)
            if len(bitmap2) < bitmap_blocks * block // 2:
                raise cut("its bitmaps are cut off")
            pages = sum(bin(b).count("1") for b in bitmap2)
            f.seek((1 + sub + bitmap_blocks) * block)
            desc = f.read(pages * 24)       # struct page_desc: offset, size, flags, page_flags
    except (IOError, OSError) as e:
        raise CrashRunError("--vmcore %s: %s" % (path, e.strerror or e))
    if len(desc) < pages * 24:
        raise cut("the descriptors of its %d pages are cut off" % pages)
    end = max([o + n for o, n, _, _ in struct.iter_unpack("<qIIQ", desc)] or [0])
    if end > size:
        raise cut("its %d pages end at byte %d" % (pages, end))


def check_vmlinux(path):
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except (IOError, OSError) as e:
        raise CrashRunError("--vmlinux %s: %s" % (path, e.strerror or e))
    if magic != ELF_MAGIC:
        raise CrashRunError("--vmlinux %s: not an ELF kernel image (the vmlinux of the "
                            "kernel's debuginfo / -dbg package)" % path)


def find_crash(path=None):
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise CrashRunError("--crash %s: not an executable file" % path)
        return path
    found = shutil.which("crash")
    if not found:
        raise CrashRunError("no `crash` on PATH (dnf install crash / apt-get install crash, "
                            "or --crash PATH)")
    return found


class Crash(object):
    """The user's crash over one vmlinux and vmcore; run() is one batch."""

    def __init__(self, binary, vmlinux, vmcore, timeout=DEFAULT_TIMEOUT):
        self.binary, self.vmlinux, self.vmcore = binary, vmlinux, vmcore
        self.timeout = timeout
        self.runs = []              # (commands, seconds)

    def run(self, commands):
        """[(command, answer)] for the commands, in one crash process."""
        tmp = tempfile.mkdtemp(prefix="skbtrace-crash-")
        try:
            script = "".join("%s > %s\n" % (c, os.path.join(tmp, "%d.out" % i))
                             for i, c in enumerate(commands)) + "quit\n"
            t0 = time.time()
            rc, out = self._spawn(script)
            self.runs.append((list(commands), time.time() - t0))
            answers = []
            for i, c in enumerate(commands):
                try:
                    with open(os.path.join(tmp, "%d.out" % i), "rb") as f:
                        answers.append((c, f.read().decode("utf-8", "replace")))
                except (IOError, OSError):
                    answers.append((c, None))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if all(a is None for _, a in answers):
            raise CrashRunError(self._why(rc, out))
        return [(c, a or "") for c, a in answers]

    def _spawn(self, script):
        try:
            p = subprocess.Popen([self.binary, "-s", self.vmlinux, self.vmcore],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        except (IOError, OSError) as e:
            raise CrashRunError("cannot run %s: %s" % (self.binary, e.strerror or e))
        try:
            out, _ = p.communicate(script.encode(), timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(p)
            raise CrashRunError("%s did not finish in %d s (--crash-timeout): killed"
                                % (self.binary, self.timeout))
        except BaseException:
            _kill_group(p)
            raise
        return p.returncode, out.decode("utf-8", "replace")

    def _why(self, rc, out):
        lines = [l.strip() for l in out.splitlines() if l.strip()]
        said = [l for l in lines if re.match(r"^(crash|\w+): ", l) and "WARNING" not in l]
        if any("do not match" in l for l in said):
            return "--vmlinux %s does not match --vmcore %s (crash: they do not match; the " \
                   "vmlinux must be the panicked kernel's own)" % (self.vmlinux, self.vmcore)
        what = said[0] if said else (lines[-1] if lines else "no output")
        return "crash could not open %s with %s (exit %s): %s" % (
            self.vmcore, self.vmlinux, rc, what)


def _kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass
    p.wait()


def transcript(answers):
    return "".join("crash> %s\n%s%s" % (c, a, "" if a.endswith("\n") or not a else "\n")
                   for c, a in answers)


def _heap(v):
    return _HEAP_LO <= v < _HEAP_HI


def exception_regs(session):
    for fr in session.frames:
        if fr.exception:
            return fr.regs
    return {}


def flight_skbs(log_text):
    """(CRITICAL, other) skb addresses the log's flight records name."""
    recs = flightrec.parse(log_text.splitlines())
    crit, other = [], []
    for r in recs:
        try:
            a = r.int_field("skb")
        except (TypeError, ValueError):
            continue
        if a:
            (crit if r.severity == "CRITICAL" else other).append(a)
    return _unique(crit), _unique(other)


def _unique(seq):
    seen, out = set(), []
    for a in seq:
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


def skb_objects(kmem_answers):
    """skb object addresses from `kmem -s ADDR` answers naming an skbuff cache."""
    out = []
    for _, text in kmem_answers:
        if not SKB_CACHE.search(text):
            continue
        for line in text.splitlines():
            m = KMEM_OBJ.match(line)
            if m and "[" in line:
                out.append(int(m.group(1), 16))
    return _unique(out)


def head_range(st, on_gso):
    """(address, n) of the head bytes to read: mac_header (or the GSO outer
    headers' start) to tail."""
    if st.head is None or st.tail is None:
        return None
    first = st.mac_header if st.mac_header not in (None, 0xffff) else None
    if first is None and st.data is not None:
        first = st.data - st.head
    mo = st.gso_mac_offset
    if on_gso and mo is not None and first is not None and 0 <= mo < first:
        first = mo
    if first is None or not 0 <= first < st.tail:
        return None
    return st.head + first, min(st.tail - first, MAX_HEAD_BYTES)


def collect(crash, wanted=()):
    """The transcript of a session that reads the panic and its skbs, and
    the skb addresses read (in order: asked for, flight records, registers)."""
    answers = crash.run(["bt", "log"])
    session = crashdump.parse(transcript(answers))
    log = answers[1][1]
    crit, other = flight_skbs(log)
    found = []
    # the oops's registers only when neither the user nor a CRITICAL record
    # names the skb: skb_segment's registers also hold the segment it was
    # building (5.10), an skb of its own that would hide which one crashed
    cands = [v for v in _unique(exception_regs(session).values()) if _heap(v)]
    if cands and not wanted and not crit:
        kmem = crash.run(["kmem -s %x" % v for v in cands])
        found = skb_objects(kmem)
        answers += kmem
    skbs = _unique(list(wanted) + crit + found + other)[:MAX_SKBS]
    if not skbs:
        return transcript(answers), []
    structs = crash.run(["struct sk_buff 0x%x" % a for a in skbs])
    answers += structs
    session = crashdump.parse(transcript(answers))
    on_gso = _on_gso_path(session)
    more = []
    for a in skbs:
        st = session.skbs.get(a)
        if st is None or st.head is None or st.end is None:
            continue
        more.append("struct skb_shared_info 0x%x" % (st.head + st.end))
        rng = head_range(st, on_gso)
        if rng:
            more.append("rd -8 0x%x %d" % rng)
    if more:
        answers += crash.run(more)
    return transcript(answers), skbs


def _on_gso_path(session):
    site = session.crash_site()
    names = ([site[0]] if site else []) + session.callers()
    return any(n in crashdump.GSO_ENTRY for n in names)


# --- skb_postmortem's options ----------------------------------------------------

def add_arguments(parser):
    g = parser.add_argument_group("vmcore (runs crash)")
    g.add_argument("--vmcore", metavar="VMCORE",
                   help="read the story from this vmcore with crash (kdump-compressed, "
                        "ELF); needs --vmlinux")
    g.add_argument("--vmlinux", metavar="VMLINUX",
                   help="the panicked kernel's vmlinux with debuginfo (kernel-debuginfo, "
                        "linux-image-*-dbg)")
    g.add_argument("--crash", metavar="PATH", help="the crash binary (default: crash on PATH)")
    g.add_argument("--crash-timeout", metavar="SECONDS", type=_seconds, default=DEFAULT_TIMEOUT,
                   help="kill a crash run that takes longer (default %d)" % DEFAULT_TIMEOUT)
    g.add_argument("--save-transcript", metavar="FILE",
                   help="write the crash commands and answers to FILE (an input later)")


def _seconds(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not a number of seconds" % text)
    if v <= 0:
        raise argparse.ArgumentTypeError("%s is not positive" % text)
    return v


def check_arguments(parser, args):
    """Option errors (exit 2 through argparse) before anything is read."""
    if args.vmcore and not args.vmlinux:
        parser.error("--vmcore needs --vmlinux (the kernel's debuginfo vmlinux)")
    if not args.vmcore:
        for opt in ("vmlinux", "crash", "save_transcript"):
            if getattr(args, opt):
                parser.error("--%s needs --vmcore" % opt.replace("_", "-"))
    if not args.files and not args.vmcore:
        parser.error("nothing to read: FILE... or --vmcore")


def from_vmcore(args):
    """Run crash over args.vmcore; the transcript's path (--save-transcript,
    else a temporary file the caller removes) and the skbs read."""
    vmcore_kind(args.vmcore)
    check_vmlinux(args.vmlinux)
    crash = Crash(find_crash(args.crash), args.vmlinux, args.vmcore, args.crash_timeout)
    text, skbs = collect(crash, args.skb or ())
    if args.save_transcript:
        path = args.save_transcript
        try:
            # root writes it: the rule of every file a tool writes (output/sink.py)
            with os.fdopen(open_output(path, append=False), "w") as f:
                f.write(text)
        except OutputError as e:
            raise CrashRunError("--save-transcript: %s" % e)
        except (IOError, OSError) as e:
            raise CrashRunError("--save-transcript: cannot write %s: %s" % (path, e.strerror or e))
        return path, False, crash, skbs
    # named for the vmcore: the story's input list shows this name
    path = os.path.join(tempfile.mkdtemp(prefix="skbtrace-"),
                        "crash-session-of-%s.txt" % os.path.basename(args.vmcore))
    with open(path, "w") as f:
        f.write(text)
    return path, True, crash, skbs
