"""Where lines go: stdout, or a file with -o. Every line is flushed as it is
written, so `| grep` sees it at once and a log survives the crash being
reproduced as far as the kernel got to write it. A reader that goes away
(`| head`, a hung-up terminal) ends the run quietly instead of raising
BrokenPipeError. With -o, reopen() starts a new file at the same path after
logrotate moved the old one (SIGHUP); it runs between two lines, so no line
is split across files and none is lost."""
import errno
import os
import sys

from skbtrace.errors import UserError


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
        self.lines = 0
        self.gone = False

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
        self.lines += 1

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
