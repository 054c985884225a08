"""One time base for both tools. BPF stamps events with bpf_ktime_get_ns()
(CLOCK_MONOTONIC); both tools turn that into wall-clock time with the same
offset computation, so their logs can be merged line by line."""
import time


def monotonic_ns():
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e9)


class Clock(object):
    def __init__(self):
        # Take the offset between two monotonic reads to bound the error.
        m0 = time.clock_gettime(time.CLOCK_MONOTONIC)
        wall = time.time()
        m1 = time.clock_gettime(time.CLOCK_MONOTONIC)
        self.offset = wall - (m0 + m1) / 2.0

    def wall(self, ts_ns):
        return ts_ns / 1e9 + self.offset

    def hms(self, ts_ns):
        """HH:MM:SS.uuuuuu in local time."""
        t = self.wall(ts_ns)
        secs = int(t)
        return time.strftime("%H:%M:%S", time.localtime(secs)) + ".%06d" % int((t - secs) * 1e6)

    def iso(self, ts_ns):
        t = self.wall(ts_ns)
        secs = int(t)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(secs)) + \
            ".%06d" % int((t - secs) * 1e6) + time.strftime("%z", time.localtime(secs))
