"""Perf-buffer bytes -> Record: the event struct plus the names the formatter
needs (event, hook, flows, gso names). No bcc, no kernel access: tests feed it
hand-built bytes."""
import ctypes
import errno
import socket
import struct

from skbtrace.kernel import event

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PROTO_NAMES = {1: "icmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 58: "icmpv6"}


def addr_text(family, raw):
    data = bytes(bytearray(raw))
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, data[:4])
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, data[:16])
    return None


def flow_text(family, proto, saddr, daddr, sport, dport):
    """'198.18.1.1:5000 -> 198.18.2.1:9000 udp', '[fd00::1]:80 -> ...'."""
    if not family:
        return None
    s, d = addr_text(family, saddr), addr_text(family, daddr)
    if family == 6:
        s, d = "[%s]" % s, "[%s]" % d
    pname = PROTO_NAMES.get(proto, "proto%d" % proto)
    if proto in (6, 17):
        return "%s:%d -> %s:%d %s" % (s, sport, d, dport, pname)
    return "%s -> %s %s" % (s, d, pname)


class Record(object):
    """One decoded event. Attribute access falls through to the C struct."""

    def __init__(self, raw_event, hooks_by_id):
        self.ev = raw_event
        self.hook = hooks_by_id.get(raw_event.hook_id)
        self.function = self.hook.name if self.hook else "hook#%d" % raw_event.hook_id
        last = hooks_by_id.get(raw_event.last_hook - 1) if raw_event.last_hook else None
        self.last_function = last.name if last else None
        self.stack_addrs = []       # kernel addresses the record carried (--stack-trace)
        self.stack = []             # the same, as symbols (the runner resolves them)

    def __getattr__(self, name):
        return getattr(self.ev, name)

    @property
    def stack_error(self):
        """Why a record that should carry a stack has none: the errno name
        of bpf_get_stack's failure, or None."""
        n = self.ev.stack_len
        if n >= 0:
            return None
        return errno.errorcode.get(-n, "error %d" % n)

    @property
    def event_name(self):
        return event.EVENT_NAMES.get(self.ev.event, "EVENT%d" % self.ev.event)

    @property
    def severity_name(self):
        return event.SEVERITY_NAMES.get(self.ev.severity, "")

    @property
    def reasons_list(self):
        return event.reason_names(self.ev.reasons)

    @property
    def comm_text(self):
        return self.ev.comm.decode("utf-8", "replace")

    @property
    def encap(self):
        return bool(self.ev.flags & event.F_ENCAP)

    @property
    def cloned(self):
        return bool(self.ev.flags & event.F_CLONED)

    @property
    def after_readable(self):
        return not self.ev.flags & event.F_AFTER_UNREADABLE

    @property
    def flow(self):
        e = self.ev
        return flow_text(e.family, e.l4proto, e.saddr, e.daddr, e.sport, e.dport)

    @property
    def inner_flow(self):
        e = self.ev
        return flow_text(e.inner_family, e.inner_l4proto, e.inner_saddr, e.inner_daddr,
                         e.inner_sport, e.inner_dport)

    @property
    def last_age_us(self):
        if not self.ev.last_hook or not self.ev.last_ts_ns:
            return None
        return (self.ev.ts_ns - self.ev.last_ts_ns) / 1000.0


class Decoder(object):
    def __init__(self, hooks):
        self.by_id = dict((h.hook_id, h) for h in hooks)
        self.size = ctypes.sizeof(event.SkbEvent)

    def decode(self, data):
        """bytes (struct skb_event, then with --stack-trace STACK_FRAMES
        addresses: struct record_t) -> Record."""
        if len(data) < self.size:
            raise ValueError("short event: %d bytes, expected %d" % (len(data), self.size))
        raw = event.SkbEvent.from_buffer_copy(data[:self.size])
        rec = Record(raw, self.by_id)
        n = min(raw.stack_len, event.STACK_FRAMES)
        if n > 0:
            if len(data) < self.size + 8 * n:
                raise ValueError("event says %d stack frames, record has %d bytes"
                                 % (n, len(data)))
            rec.stack_addrs = list(struct.unpack_from("<%dQ" % n, data, self.size))
        return rec
