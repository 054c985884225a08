"""Where lines go: stdout, or a file with -o. Every line is flushed as it is
written, so `| grep` sees it at once and a log survives the crash being
reproduced as far as the kernel got to write it. A reader that goes away
(`| head`, a hung-up terminal) ends the run quietly instead of raising
BrokenPipeError. With -o, reopen() starts a new file at the same path after
logrotate moved the old one (SIGHUP); it runs between two lines, so no line
is split across files and none is lost.

write_text() takes an event's lines at once (the runner's fast path): one
write(2) straight to the file under the stream, which is what flushing each
line cost anyway, without the text and buffer layers in between. The lines
have reached the file when it returns, as with write()."""
import errno
import io
import os
import sys

from skbtrace.errors import UserError


_ASCII = "".join(chr(c) for c in range(128))


class ReaderGone(Exception):
    """The pipe reader exited; stop tracing without a message."""


class Sink(object):
    def __init__(self, path=None):
        self.path = path
        if path:
            try:
                self.stream = open(path, "a")
            except (IOError, OSError) as e:
                raise UserError("-o/--output: cannot open %s: %s" % (path, e.strerror))
        else:
            self.stream = sys.stdout
        self.gone = False
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
        if self.gone:
            raise ReaderGone()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (IOError, OSError) as e:
            if e.errno not in (errno.EPIPE, errno.EIO):     # EIO: the terminal hung up
                raise
            self._reader_gone()
            raise ReaderGone()

    def write_text(self, text):
        """Lines, each ending in a newline, in one write. Every write() has
        flushed the stream, so nothing waits in its buffer ahead of them."""
        raw = self._raw
        if raw is None or self.gone:
            return self._write_stream(text)
        data = text.encode(self._encoding, self._errors)
        try:
            n = raw.write(data)
            if n != len(data):
                self._write_rest(data, n)
        except (IOError, OSError) as e:
            if e.errno not in (errno.EPIPE, errno.EIO):     # EIO: the terminal hung up
                raise
            self._reader_gone()
            raise ReaderGone()

    def write_ascii(self, data):
        """write_text() for lines already in ASCII bytes (--json)."""
        raw = self._raw
        if raw is None or self.gone:
            return self._write_stream(data.decode("ascii"))
        try:
            n = raw.write(data)
            if n != len(data):
                self._write_rest(data, n)
        except (IOError, OSError) as e:
            if e.errno not in (errno.EPIPE, errno.EIO):
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
        if self.gone:
            raise ReaderGone()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (IOError, OSError) as e:
            if e.errno not in (errno.EPIPE, errno.EIO):
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
        cannot be opened, lines keep going to the old file and the error is
        returned, for one line on stderr."""
        if not self.path or self.gone:
            return None
        try:
            stream = open(self.path, "a")
        except (IOError, OSError) as e:
            return "cannot reopen %s: %s (still writing to the old file)" % (self.path,
                                                                            e.strerror)
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
            self.stream.flush()
            if self.path:
                self.stream.close()
        except (IOError, OSError):
            pass


def info(message):
    """Startup and diagnostics go to stderr so stdout stays greppable."""
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (IOError, OSError):
        pass
