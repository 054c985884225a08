"""Where lines go: stdout, or a file with -o. Every line is flushed as it is
written, so `| grep` sees it at once and a log survives the crash being
reproduced as far as the kernel got to write it. A reader that goes away
(`| head`, a hung-up terminal) ends the run quietly instead of raising
BrokenPipeError. With -o, reopen() starts a new file at the same path after
logrotate moved the old one (SIGHUP); it runs between two lines, so no line
is split across files and none is lost.

write_text() takes an event's lines at once (the runner's fast path) and
queues them; flush() hands everything queued to the file under the stream in
one write(2), without the text and buffer layers in between. The runner
flushes after every poll of the event buffers (at most POLL_MS apart, and
before it waits again), so `| grep` and a log see every line within a poll
interval and whole, and a panic can take at most the lines of the poll the
kernel died in, which a flush per poll could not have written either. One
write(2) per event was the dearest part of an event's user-space cost (a
system call under TCG or on a loaded host); per poll it is shared by every
event the poll read. write(), a reopen and close() flush the queue first, so
lines keep their order; FLUSH_BYTES bounds what waits.

open_output() is the rule for every file a tool writes (-o, its reopen,
skb_postmortem's --pcap): they run as root and are pointed at paths in
directories others may write to, so a symbolic link, anything but a regular
file, a file of another user and a file with a second name (a hard link) are
refused, and a new file is made 0640. The checks are made on the file opened
(O_NOFOLLOW, fstat), not only on the name, so swapping the name between the
check and the open gains nothing; what a directory others can write to
still allows them is removing or renaming the log, which is why the manuals
put it in a root-owned one."""
import errno
import fcntl
import io
import os
import stat
import sys

from skbtrace.errors import UserError


_ASCII = "".join(chr(c) for c in range(128))

# queued event lines beyond this are written at once: a poll that reads a
# full buffer (thousands of events) does not hold them all in memory
FLUSH_BYTES = 64 * 1024

OUTPUT_MODE = 0o640     # new files: a trace names hosts and addresses; others do not read it
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


class OutputError(Exception):
    """A file a tool will not or cannot write; the message is one line."""


def _refusal(path, st):
    if stat.S_ISLNK(st.st_mode):
        return "refusing %s: a symbolic link (name the file itself)" % path
    if not stat.S_ISREG(st.st_mode):
        return "refusing %s: %s, not a regular file" % (
            path, _KINDS.get(stat.S_IFMT(st.st_mode), "a special file"))
    if st.st_uid not in (0, os.geteuid()):
        return "refusing %s: owned by uid %d, neither root nor this user" % (path, st.st_uid)
    if st.st_nlink > 1:
        return "refusing %s: %d hard links (one file under another name)" % (path, st.st_nlink)
    return None


def check_output(path):
    """Refuse an existing path open_output() would refuse, before anything
    else runs; touches nothing."""
    try:
        st = os.lstat(path)
    except (IOError, OSError):
        return      # missing, or open_output() says why it cannot open it
    why = _refusal(path, st)
    if why:
        raise OutputError(why)


def open_output(path, append=True):
    """A descriptor to write path: appended to, or emptied (append=False),
    created with OUTPUT_MODE if missing. A refused file is left as it was."""
    check_output(path)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK |
             (os.O_APPEND if append else 0))
    try:
        # O_NONBLOCK: a FIFO swapped in after the check fails instead of
        # waiting for a reader; it is cleared once the file is known regular
        fd = os.open(path, flags, OUTPUT_MODE)
    except (IOError, OSError) as e:
        if e.errno == errno.ELOOP:
            raise OutputError("refusing %s: a symbolic link (name the file itself)" % path)
        raise OutputError("cannot open %s: %s" % (path, e.strerror or e))
    try:
        why = _refusal(path, os.fstat(fd))
        if why:
            raise OutputError(why)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if not append:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


class ReaderGone(Exception):
    """The pipe reader exited; stop tracing without a message."""


class Sink(object):
    def __init__(self, path=None):
        self.path = path
        if path:
            try:
                self.stream = os.fdopen(open_output(path), "a")
            except OutputError as e:
                raise UserError("-o/--output: %s" % e)
        else:
            self.stream = sys.stdout
        self.gone = False
        self._pending = []          # encoded lines waiting for flush()
        self._pending_bytes = 0
        self._bind()

    def _bind(self):
        """Find the file under self.stream for write_text(): a text stream
        over a buffer over a FileIO (a terminal, pipe or file), encoded as
        the stream encodes. Anything else (a test's capture, a StringIO)
        gets the stream's own write and flush."""
        self._raw = None
        stream = self.stream
        try:
            raw = stream.buffer.raw
        except AttributeError:
            return
        if not (isinstance(stream, io.TextIOWrapper) and isinstance(raw, io.FileIO)):
            return
        try:
            # write_ascii() hands over ASCII bytes as they are
            ascii_compatible = _ASCII.encode(stream.encoding) == _ASCII.encode("ascii")
        except (LookupError, UnicodeError):
            return
        if ascii_compatible:
            self._raw = raw
            self._encoding = stream.encoding
            self._errors = stream.errors

    def write(self, line):
        self._write_stream(line + "\n")

    def write_text(self, text):
        """Lines, each ending in a newline, queued for the next flush()."""
        if self._raw is None or self.gone:
            return self._write_stream(text)
        # queued here and in write_ascii(), not through a shared helper: a
        # call per event is a tenth of what the sink costs an event
        data = text.encode(self._encoding, self._errors)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()

    def write_ascii(self, data):
        """write_text() for lines already in ASCII bytes (--json)."""
        if self._raw is None or self.gone:
            return self._write_stream(data.decode("ascii"))
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self):
        """Everything queued, in one write(2). Every write() has flushed the
        stream, so nothing waits in its buffer ahead of the queue."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        del self._pending[:]
        self._pending_bytes = 0
        if self.gone:
            raise ReaderGone()
        try:
            n = self._raw.write(data)
            if n != len(data):
                self._write_rest(data, n)
        except (IOError, OSError) as e:
            if e.errno not in (errno.EPIPE, errno.EIO):     # EIO: the terminal hung up
                raise
            self._reader_gone()
            raise ReaderGone()

    def _write_rest(self, data, n):
        """A signal came after part of the data (a pipe), or a non-blocking
        file is full: the rest, as a flush would write it."""
        while n != len(data):
            if n is None:
                raise BlockingIOError(errno.EAGAIN, "write could not complete without blocking")
            data = data[n:]
            n = self._raw.write(data)

    def _write_stream(self, text):
        if self._pending:
            self.flush()
        if self.gone:
            raise ReaderGone()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (IOError, OSError) as e:
            if e.errno not in (errno.EPIPE, errno.EIO):     # EIO: the terminal hung up
                raise
            self._reader_gone()
            raise ReaderGone()

    def _reader_gone(self):
        self.gone = True
        # Python flushes stdout again at exit; point it at /dev/null so that
        # last flush cannot raise a second BrokenPipeError.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
        except (OSError, ValueError):
            pass

    def reopen(self):
        """Continue in a new file at the path (logrotate renamed the old one).
        The new file is opened before the old one is closed: if the path
        cannot be opened or is refused (open_output()), lines keep going to
        the old file and the reason is returned, for one line on stderr."""
        if not self.path or self.gone:
            return None
        self.flush()        # the old file's lines end in the old file
        try:
            stream = os.fdopen(open_output(self.path), "a")
        except OutputError as e:
            return "not reopened: %s (still writing to the old file)" % e
        old, self.stream = self.stream, stream
        self._bind()
        try:
            old.close()
        except (IOError, OSError):
            pass
        return None

    def close(self):
        if self.gone:
            return
        try:
            self.flush()
            self.stream.flush()
            if self.path:
                self.stream.close()
        except (IOError, OSError, ReaderGone):
            pass


def info(message):
    """Startup and diagnostics go to stderr so stdout stays greppable."""
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (IOError, OSError):
        pass
