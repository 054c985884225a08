"""One time base for both tools. BPF stamps events with bpf_ktime_get_ns()
(CLOCK_MONOTONIC); both tools turn that into wall-clock time with the same
offset computation, so their logs can be merged line by line."""
import json
import time

TIME_W = 15     # hms() is HH:MM:SS.uuuuuu: the TIME column's width


def monotonic_ns():
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e9)


class Clock(object):
    def __init__(self):
        # Take the offset between two monotonic reads to bound the error.
        m0 = time.clock_gettime(time.CLOCK_MONOTONIC)
        wall = time.time()
        m1 = time.clock_gettime(time.CLOCK_MONOTONIC)
        self.offset = wall - (m0 + m1) / 2.0
        # strftime(localtime()) of the last whole second each method saw:
        # events come in bursts within a second, and the call costs more
        # than the rest of a text line's formatting.
        self._hms = (None, None)
        self._iso = (None, None, None)
        self._json = (None, None, None)

    def wall(self, ts_ns):
        return ts_ns / 1e9 + self.offset

    def hms(self, ts_ns):
        """HH:MM:SS.uuuuuu in local time."""
        t = ts_ns / 1e9 + self.offset
        secs = int(t)
        return "%s.%06d" % (self.hms_head(secs), int((t - secs) * 1e6))

    def hms_head(self, secs):
        """hms()'s HH:MM:SS of the whole second secs (wall-clock seconds).
        The text fast path (skbtrace/output/fastpath.py) works out the
        microseconds itself, as hms() does, and calls this once a second."""
        cached_secs, text = self._hms
        if secs != cached_secs:
            text = time.strftime("%H:%M:%S", time.localtime(secs))
            self._hms = (secs, text)
        return text

    def iso(self, ts_ns):
        t = ts_ns / 1e9 + self.offset
        secs = int(t)
        cached_secs, head, zone = self._iso
        if secs != cached_secs:
            lt = time.localtime(secs)
            head = time.strftime("%Y-%m-%dT%H:%M:%S", lt)
            zone = time.strftime("%z", lt)
            self._iso = (secs, head, zone)
        return head + ".%06d" % int((t - secs) * 1e6) + zone

    def json_time(self, ts_ns):
        """iso() as json.dumps() writes it, in bytes: the --json fast path's
        "time" (skbtrace/output/fastpath.py), without a str in between."""
        t = ts_ns / 1e9 + self.offset
        secs = int(t)
        head, zone = self.json_head(secs)
        return b"%s.%06d%s" % (head, int((t - secs) * 1e6), zone)

    def json_head(self, secs):
        """json_time() of the whole second secs, cut at the microseconds:
        (b'"YYYY-MM-DDTHH:MM:SS', b'+ZZZZ"'). The --json fast path works out
        the microseconds itself, as json_time() does, once a second this."""
        cached_secs, head, zone = self._json
        if secs != cached_secs:
            lt = time.localtime(secs)
            # JSON escapes character by character: the quoted whole is the
            # quoted head without its closing quote, the digits, the quoted
            # zone without its opening one
            head = json.dumps(time.strftime("%Y-%m-%dT%H:%M:%S", lt)).encode("ascii")[:-1]
            zone = json.dumps(time.strftime("%z", lt)).encode("ascii")[1:]
            self._json = (secs, head, zone)
        return head, zone
