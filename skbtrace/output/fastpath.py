"""The runner's per-event path: perf-buffer bytes -> statistics -> the text
the sink writes, in one function per tool and output mode.

The straightforward path (decoder.Decoder -> decoder.Record -> Stats.add ->
Formatter.lines) is what the post-mortem tool and the tests use, and the
reference this path must match byte for byte (tests/unit/test_fastpath.py
compares them over generated events of every kind, for both tools and every
mode). What makes this one faster:

- struct.Struct.unpack_from() of only the fields a mode prints, straight into
  local variables (event.layout_struct), instead of a ctypes copy read
  through a Record's properties;
- bounded caches of the text a value maps to: event and hook names padded to
  their columns, gso_type names, reason lists, comm, flows (addresses are
  formatted once per flow, not per event);
- one count per event for the statistics (Stats.raw, folded at exit);
- --json through bytes %-templates of the sorted keys, one per distinct
  value of the fields that stay the same over a flow through a hook, with
  everything but the per-packet values written in (see "--json" below),
  instead of a dict and json.dumps();
- the event's lines returned at once, for one write (Sink.write_text(),
  Sink.write_ascii()).

Each handler returns the event's lines, each ending in a newline (str; ASCII
bytes with --json), and raises ValueError (with the decoder's messages) for a
record it cannot decode, before it counts anything.
"""
import ctypes
import errno
import json
import struct

from skbtrace.kernel import event, udp_tunnel
from skbtrace.output import record
from skbtrace.kernel.decoder import flow_text
from skbtrace.output.clock import TIME_W

CACHE_MAX = 4096        # entries per cache; a full cache starts over
SIZE = ctypes.sizeof(event.SkbEvent)
ENC = json.encoder.encode_basestring_ascii     # what json.dumps() uses (ensure_ascii)
SEVERITY_MARKERS = dict((v, "[%s]" % n) for v, n in event.SEVERITY_NAMES.items() if n)


def jenc(text):
    """A string as json.dumps() writes it, in bytes (ASCII: ensure_ascii)."""
    return ENC(text).encode("ascii")


SEVERITY_JSON = dict((v, jenc(n)) for v, n in event.SEVERITY_NAMES.items() if n)


def time_format(clock):
    """The TIME column's format and what the handler needs to fill it:
    (format of two values, offset, hms_head). A clock.Clock (offset and
    hms_head) gets "%s.%06d", the handler working out the seconds' text
    and the microseconds as Clock.hms() does (one % per line instead of a
    call and a % more); any other clock (the tests', a post-mortem's) gets
    its hms() and an empty string, in "%-15s%s"."""
    hms_head = getattr(clock, "hms_head", None)
    offset = getattr(clock, "offset", None)
    if hms_head is None or offset is None:
        return "%%-%ds%%s" % TIME_W, None, None
    return "%s.%06d", offset, hms_head


def json_time_format(clock):
    """time_format() for --json's "time": (its slot in the template, of
    three values, offset, json_head). A clock.Clock gets b"%s.%06d%s", filled
    as Clock.json_time() fills it; any other clock b"%s%s%s": its iso() as
    JSON and two empty strings."""
    json_head = getattr(clock, "json_head", None)
    offset = getattr(clock, "offset", None)
    if json_head is None or offset is None:
        return b"%s%s%s", None, None
    return b"%s.%06d%s", offset, json_head


def remember(cache, key, value):
    """cache[key] = value, starting the cache over when it is full (a long
    run with ever new flows must not grow without bound)."""
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def stack_addrs(data, n):
    """The addresses after the event (struct record_t), as Decoder.decode()
    reads them."""
    n = min(n, event.STACK_FRAMES)
    if len(data) < SIZE + 8 * n:
        raise ValueError("event says %d stack frames, record has %d bytes" % (n, len(data)))
    return list(struct.unpack_from("<%dQ" % n, data, SIZE))


def stack_error(n):
    """Record.stack_error for stack_len n."""
    if n >= 0:
        return None
    return errno.errorcode.get(-n, "error %d" % n)


def stack_text(stack, n):
    """Formatter.stack_lines(), each line after a newline."""
    if stack:
        return "".join(["\n        " + s for s in stack])
    return "\n        [no stack: %s]" % (stack_error(n) or "none recorded")


def stack_json(stack, n):
    """"stack" and "stack_error" of to_dict() with --stack-trace."""
    error = stack_error(n)
    return (b"[" + b", ".join([jenc(s) for s in stack]) + b"]",
            jenc(error) if error is not None else b"null")


def flag_json(flags):
    """JSON booleans of a flags byte: after_readable, cloned, encapsulation,
    in_tunnel_segment, other_head (F_LAST_STALE), on_entry."""
    return tuple(b"true" if v else b"false" for v in (
        not flags & event.F_AFTER_UNREADABLE, flags & event.F_CLONED, flags & event.F_ENCAP,
        flags & event.F_IN_TNL_SEG, flags & event.F_LAST_STALE,
        flags & event.F_ORIGIN_ON_ENTRY))


FLAG_JSON = [flag_json(f) for f in range(256)]


class Texts(object):
    """The caches one handler keeps. Each get_* returns the text of a value,
    computing it on a miss; the handlers look into the dicts themselves
    first and call these only on a miss."""

    def __init__(self, formatter, hooks_by_id):
        self.gso = formatter.gso
        self.names = dict((i, h.name) for i, h in hooks_by_id.items() if h.name)
        self.labels = {}        # event << 16 | hook_id -> Label
        self.gso_text = {}      # gso_type -> "0x403(TCPV4|DODGY|UDP_TUNNEL)"
        self.gso_json = {}      # gso_type -> b'"TCPV4|DODGY|UDP_TUNNEL"'
        self.reasons = {}       # reasons -> "NULL_FRAGLIST_GSO,SEG_NO_PAYLOAD"
        self.reasons_json = {}  # reasons -> b'["NULL_FRAGLIST_GSO", "SEG_NO_PAYLOAD"]'
        self.comm = {}          # the 16 bytes -> text
        self.comm_json = {}     # the 16 bytes -> JSON string (bytes)
        self.flows = {}         # (family, proto, saddr, daddr, sport, dport) -> text
        self.flows_json = {}    # the same -> JSON string (bytes)
        self.names_json = dict((i, jenc(n)) for i, n in self.names.items())

    def get_label(self, key):
        ev, hook_id = key >> 16, key & 0xffff
        return remember(self.labels, key, Label(ev, hook_id, self.names.get(hook_id)))

    def get_gso_text(self, value):
        return remember(self.gso_text, value, "0x%x(%s)" % (value, self.gso.names(value)))

    def get_gso_json(self, value):
        return remember(self.gso_json, value, jenc(self.gso.names(value)))

    def get_reasons(self, bits):
        return remember(self.reasons, bits, ",".join(event.reason_names(bits)))

    def get_reasons_json(self, bits):
        return remember(self.reasons_json, bits, b"[" + b", ".join(
            [jenc(n) for n in event.reason_names(bits)]) + b"]")

    def get_comm(self, raw):
        return remember(self.comm, raw, raw.split(b"\0", 1)[0].decode("utf-8", "replace"))

    def get_comm_json(self, raw):
        text = self.comm.get(raw)
        if text is None:
            text = self.get_comm(raw)
        return remember(self.comm_json, raw, jenc(text))

    def get_flow(self, key):
        return remember(self.flows, key, flow_text(*key))

    def get_flow_json(self, key):
        text = self.flows.get(key)
        if text is None:
            text = self.get_flow(key)
        return remember(self.flows_json, key, jenc(text) if text is not None else b"null")


class Label(object):
    """What an (event, hook) pair prints, in every mode."""
    __slots__ = ("event", "function", "columns", "event_json", "function_json")

    def __init__(self, ev, hook_id, name):
        self.event = event.EVENT_NAMES.get(ev, "EVENT%d" % ev)
        self.function = name if name is not None else "hook#%d" % hook_id
        self.columns = "%-12s %-24s " % (self.event, self.function)
        self.event_json = jenc(self.event)
        self.function_json = jenc(self.function)


# --- skb_frag_list_watcher ------------------------------------------------------

def watcher_handler(fmt, hooks_by_id, stats, symbols=None):
    """The fast path of formatter.Formatter for the watcher's events."""
    if fmt.json_mode:
        return _watcher_json(fmt, hooks_by_id, stats, symbols)
    return _watcher_text(fmt, hooks_by_id, stats, symbols)


def _watcher_text(fmt, hooks_by_id, stats, symbols):
    texts = Texts(fmt, hooks_by_id)
    # what every line needs; --verbose reads the rest in a second unpack
    unpack = event.layout_struct(
        "ts_ns skb new_skb frag_list_before frag_list_after ret last_ts_ns cpu len "
        "data_len_after gso_type_before gso_type_after reasons frags_bytes stack_len hook_id "
        "last_hook gso_size_before gso_size_after event severity nr_frags_after flags"
    ).unpack_from
    unpack_v = event.layout_struct(
        "pid data_len_before ifindex iif gso_segs protocol sport dport inner_sport inner_dport "
        "nr_frags_before family l4proto inner_family inner_l4proto saddr daddr inner_saddr "
        "inner_daddr comm").unpack_from
    verbose = fmt.verbose
    stacks = fmt.stacks
    count_no_stack = stats.stacks
    counts = stats.raw
    hms = fmt.clock.hms
    time_fmt, offset, hms_head = time_format(fmt.clock)
    labels, get_label = texts.labels, texts.get_label
    gso_text, get_gso_text = texts.gso_text, texts.get_gso_text
    reasons_text, get_reasons = texts.reasons, texts.get_reasons
    comm_text, get_comm = texts.comm, texts.get_comm
    flows, get_flow = texts.flows, texts.get_flow
    names = texts.names
    line1 = time_fmt + " %-3d %s| 0x%016x | %s"
    line1_change = line1 + " -> %s"
    line1_propagate = line1 + " new_skb=%s"
    line1_copy_fail = line1 + " new_skb=NULL"
    line1_same = line1 + " (no change)"
    line1_v = time_fmt + " %-3d %-16s %-7d %s| 0x%016x | %-40s | type=%s size=%s segs=%d"
    line2_v = " | len=%d data_len=%s nr_frags=%s cloned=%d encap=%d dev=%d iif=%d"
    ev_clear, ev_copy_fail, ev_propagate = event.EV_CLEAR, event.EV_COPY_FAIL, event.EV_PROPAGATE
    ev_access, ev_inconsistent = event.EV_ACCESS, event.EV_INCONSISTENT
    fl_change = frozenset([event.EV_CREATE, event.EV_CLEAR, event.EV_MODIFY])
    want_last = frozenset([event.EV_CLEAR, event.EV_MODIFY, event.EV_ACCESS])
    sev_markers = SEVERITY_MARKERS
    f_unreadable, f_in_tnl_seg, f_stale = (event.F_AFTER_UNREADABLE, event.F_IN_TNL_SEG,
                                           event.F_LAST_STALE)
    f_encap, f_cloned = event.F_ENCAP, event.F_CLONED

    second = [None, None]   # the wall-clock second hms_head() last gave, its text

    def handle(data):
        if len(data) < SIZE:
            raise ValueError("short event: %d bytes, expected %d" % (len(data), SIZE))
        (ts, skb, new_skb, flb, fla, ret, lts, cpu, length, dla, gtb, gta, reasons, fbytes,
         stack_len, hook_id, last_hook, gsb, gsa, ev, sev, nfa, flags) = unpack(data)
        addrs = stack_addrs(data, stack_len) if stack_len > 0 else None
        key = hook_id | ev << 16 | sev << 24
        counts[key] = counts.get(key, 0) + 1
        if count_no_stack and not addrs:
            why = stack_error(stack_len) or "empty"
            stats.no_stack[why] = stats.no_stack.get(why, 0) + 1
        label = labels.get(key & 0xffffff) or get_label(key & 0xffffff)

        if offset is not None:      # Clock.hms()
            t = ts / 1e9 + offset
            secs = int(t)
            if secs != second[0]:
                second[:] = secs, hms_head(secs)
            t1, t2 = second[1], int((t - secs) * 1e6)
        else:
            t1, t2 = hms(ts), ""
        # Formatter.frag_list_text(), formatter.ptr() written out, in the
        # line's own format: one % per line, not one more for the list
        if verbose:
            (pid, dlb, ifindex, iif, segs, proto, sport, dport, isport, idport, nfb, fam, l4, ifam,
             il4, sa, da, isa, ida, comm) = unpack_v(data)
            if gtb == gta:
                gso = gso_text.get(gta) or get_gso_text(gta)
            else:
                gso = "%s->%s" % (gso_text.get(gtb) or get_gso_text(gtb),
                                  gso_text.get(gta) or get_gso_text(gta))
            if ev in fl_change:
                flt = "%s -> %s" % ("0x%016x" % flb if flb else "NULL",
                                    "0x%016x" % fla if fla else "NULL")
            elif ev == ev_propagate:
                flt = "%s new_skb=%s" % ("0x%016x" % fla if fla else "NULL",
                                         "0x%016x" % new_skb if new_skb else "NULL")
            elif ev == ev_copy_fail:
                flt = ("0x%016x" % flb if flb else "NULL") + " new_skb=NULL"
            else:
                flt = ("0x%016x" % flb if flb else "NULL") + " (no change)"
            out = line1_v % (t1, t2, cpu, comm_text.get(comm) or get_comm(comm), pid,
                             label.columns, skb, flt, gso,
                             gsa if gsb == gsa else "%d->%d" % (gsb, gsa), segs)
        elif ev in fl_change:
            out = line1_change % (t1, t2, cpu, label.columns, skb,
                                  "0x%016x" % flb if flb else "NULL",
                                  "0x%016x" % fla if fla else "NULL")
        elif ev == ev_propagate:
            out = line1_propagate % (t1, t2, cpu, label.columns, skb,
                                     "0x%016x" % fla if fla else "NULL",
                                     "0x%016x" % new_skb if new_skb else "NULL")
        else:
            out = (line1_copy_fail if ev == ev_copy_fail else line1_same) % (
                t1, t2, cpu, label.columns, skb, "0x%016x" % flb if flb else "NULL")

        # markers and detail (Formatter.markers(), Formatter.detail())
        if ev == ev_clear:
            out += " [!!]"
        if sev:
            marker = sev_markers.get(sev)
            if marker:
                out += " " + marker
        if reasons:
            if flags & f_unreadable:
                gsz, gty = gsb, gtb
            else:
                gsz, gty = gsa, gta
            out += " reasons=%s gso_size=%d gso_type=%s len=%d data_len=%d nr_frags=%d " \
                "frags_bytes=%d" % (reasons_text.get(reasons) or get_reasons(reasons), gsz,
                                    gso_text.get(gty) or get_gso_text(gty), length, dla, nfa,
                                    fbytes)
        if ev == ev_copy_fail:
            out += " gso_type=%s (the copy refuses SKB_GSO_FRAGLIST)" % (
                gso_text.get(gtb) or get_gso_text(gtb))
        if flags & f_unreadable and (ev == ev_access or ev == ev_inconsistent):
            out += " ret=%d" % ret
        if flags & f_in_tnl_seg:
            out += " in=skb_udp_tunnel_segment"
        if reasons or ev in want_last:
            last = names.get(last_hook - 1)    # Record.last_function
            if last is None:
                out += " last=none"
            else:
                out += " last=" + last
                if lts:
                    out += "(+%dus)" % int((ts - lts) / 1000.0)
                if flags & f_stale:
                    out += "(other head)"

        if verbose:
            flow = (flows.get((fam, l4, sa, da, sport, dport)) or
                    get_flow((fam, l4, sa, da, sport, dport))) if fam else None
            out += "\n  -> Flow: " + (flow or "not IP (protocol 0x%04x)" % proto)
            if ifam:
                inner = (flows.get((ifam, il4, isa, ida, isport, idport)) or
                         get_flow((ifam, il4, isa, ida, isport, idport)))
                if inner:
                    out += " | inner: " + inner
            out += line2_v % (length, dla if dlb == dla else "%d->%d" % (dlb, dla),
                              nfa if nfb == nfa else "%d->%d" % (nfb, nfa),
                              1 if flags & f_cloned else 0, 1 if flags & f_encap else 0,
                              ifindex, iif)
        if stacks:
            out += stack_text(symbols(addrs) if addrs and symbols else [], stack_len)
        return out + "\n"

    return handle


# --- --json, both tools ---------------------------------------------------------
#
# A record's keys fall in two groups. Some values change from packet to
# packet (time, pointers, lengths, the age of the last change); all the
# others follow from fields that stay the same over a flow through a hook
# (event, hook, flags, gso state, addresses, ports, comm, ...). The fast path
# keeps, per distinct value of those fields (the bytes they occupy, as a
# tuple: the cache key), the record as a bytes %-template with everything of
# the second group written in, and fills in the first group per event.

# the fields of the first group, and the byte ranges of the key
WATCHER_JSON_FIELDS = (
    "ts_ns skb new_skb frag_list_before frag_list_after head ret aux last_ts_ns pid cpu len "
    "data_len_before data_len_after gso_type_before:reasons frags_bytes stack_len "
    "hook_id:gso_size_after gso_segs protocol:protocol sport:inner_dport event:severity "
    "nr_frags_before nr_frags_after flags:inner_l4proto saddr:comm")
# the detector's key has the virtio header and aux2 too
DETECTOR_JSON_FIELDS = WATCHER_JSON_FIELDS.replace(
    "sport:inner_dport", "sport:vnet_csum_offset").replace("flags:inner_l4proto", "flags:aux2")
TEMPLATES_MAX = 1024    # per handler: ~1 KiB each


class Fields(object):
    """Every field of an event by name (a cache miss builds its template
    from these)."""
    _struct = event.layout_struct([n for n, _ in event.FIELDS])
    _names = [n for n, _ in event.FIELDS]

    def __init__(self, data):
        self.__dict__.update(zip(self._names, self._struct.unpack_from(data)))


def lit(value):
    """A value written into a template as it is."""
    return value.replace(b"%", b"%%")


def record_template(pairs, close=True):
    """b'{"key": value, ...}' for (key, bytes) pairs given in sorted order,
    the order json.dumps(sort_keys=True) writes; each value a bytes
    %-format or a lit()."""
    keys = [k for k, _ in pairs]
    if keys != sorted(keys):
        raise ValueError("record_template: keys out of order: %s" % keys)
    return b"{" + b", ".join([b'"' + k.encode("ascii") + b'": ' + v for k, v in pairs]) + \
        (b"}" if close else b"")


def common_pairs(fmt, texts, e, stacks, time_slot):
    """to_dict()'s keys but "last" as a template: the per-packet values as
    %-formats, in the order of the sorted keys, the rest written in. The
    per-packet values go in this order: aux, cpu, data_len_after,
    data_len_before, frag_list_after, frag_list_before (JSON), frags_bytes,
    gso_segs, head, len, new_skb (JSON), nr_frags_after, nr_frags_before, pid,
    ret, skb, [stack, stack_error (JSON), with --stack-trace], time (the
    three values of time_slot: json_time_format()), ts_ns."""
    ident = record.identity()
    fj = FLAG_JSON[e.flags]
    label = texts.labels.get(e.event << 16 | e.hook_id) or texts.get_label(
        e.event << 16 | e.hook_id)
    gty = e.gso_type_before if e.flags & event.F_AFTER_UNREADABLE else e.gso_type_after
    return [
        ("after_readable", fj[0]), ("aux", b"%d"),
        ("boot_id", lit(json.dumps(ident["boot_id"]).encode("ascii"))),
        ("cloned", fj[1]), ("comm", lit(texts.get_comm_json(e.comm))), ("cpu", b"%d"),
        ("data_len_after", b"%d"), ("data_len_before", b"%d"), ("encapsulation", fj[2]),
        ("event", lit(label.event_json)),
        ("flow", lit(texts.get_flow_json((e.family, e.l4proto, e.saddr, e.daddr, e.sport,
                                          e.dport)) if e.family else b"null")),
        ("frag_list_after", b"%s"), ("frag_list_before", b"%s"), ("frags_bytes", b"%d"),
        ("function", lit(label.function_json)), ("gso_segs", b"%d"),
        ("gso_size_after", b"%d" % e.gso_size_after),
        ("gso_size_before", b"%d" % e.gso_size_before),
        ("gso_type_after", b"%d" % e.gso_type_after),
        ("gso_type_before", b"%d" % e.gso_type_before),
        ("gso_type_names", lit(texts.get_gso_json(gty))), ("head", b'"0x%x"'),
        ("host", lit(json.dumps(ident["host"]).encode("ascii"))),
        ("ifindex", b"%d" % e.ifindex), ("iif", b"%d" % e.iif), ("in_tunnel_segment", fj[3]),
        ("inner_flow", lit(texts.get_flow_json((e.inner_family, e.inner_l4proto, e.inner_saddr,
                                                e.inner_daddr, e.inner_sport, e.inner_dport))
                           if e.inner_family else b"null")),
        ("len", b"%d"), ("new_skb", b"%s"), ("nr_frags_after", b"%d"),
        ("nr_frags_before", b"%d"), ("pid", b"%d"), ("protocol", b"%d" % e.protocol),
        ("reasons", lit(texts.get_reasons_json(e.reasons))), ("ret", b"%d"),
        ("severity", SEVERITY_JSON.get(e.severity, b"null")), ("skb", b'"0x%x"'),
        ("stack", b"%s" if stacks else b"[]"), ("stack_error", b"%s" if stacks else b"null"),
        ("time", time_slot), ("tool", lit(json.dumps(fmt.tool).encode("ascii"))),
        ("ts_ns", b"%d"), ("type", b'"event"')]


def _watcher_json(fmt, hooks_by_id, stats, symbols):
    texts = Texts(fmt, hooks_by_id)
    unpack = event.layout_struct(WATCHER_JSON_FIELDS).unpack_from
    stacks = fmt.stacks
    count_no_stack = stats.stacks
    counts = stats.raw
    iso = fmt.clock.iso
    time_slot, offset, json_head = json_time_format(fmt.clock)
    second = [None, None, None]     # the second json_head() last gave, its head and zone
    templates = {}
    f_stale = event.F_LAST_STALE

    def entry(key, data):
        """(template, statistics key, has a "last") for the event's key."""
        e = Fields(data)
        last = texts.names_json.get(e.last_hook - 1)
        if last is None:
            last_tmpl = b"null%s"       # the age slot, filled with b""
        else:
            last_tmpl = b'{"age_us": %s, "function": ' + lit(last) + b', "other_head": ' + \
                (b"true" if e.flags & f_stale else b"false") + b"}"
        pairs = sorted(common_pairs(fmt, texts, e, stacks, time_slot) + [("last", last_tmpl)])
        if len(templates) >= TEMPLATES_MAX:
            templates.clear()
        value = templates[key] = (record_template(pairs) + b"\n",
                                  e.hook_id | e.event << 16 | e.severity << 24,
                                  last is not None)
        return value

    def handle(data):
        if len(data) < SIZE:
            raise ValueError("short event: %d bytes, expected %d" % (len(data), SIZE))
        (ts, skb, new_skb, flb, fla, head, ret, aux, lts, pid, cpu, length, dlb, dla, k1, fbytes,
         stack_len, k2, segs, k3, k4, k5, nfb, nfa, k6, k7) = unpack(data)
        addrs = stack_addrs(data, stack_len) if stack_len > 0 else None
        key = (k1, k2, k3, k4, k5, k6, k7)
        template, skey, has_last = templates.get(key) or entry(key, data)
        counts[skey] = counts.get(skey, 0) + 1
        if count_no_stack and not addrs:
            why = stack_error(stack_len) or "empty"
            stats.no_stack[why] = stats.no_stack.get(why, 0) + 1
        if has_last:
            age = b"%a" % ((ts - lts) / 1000.0) if lts else b"null"
        else:
            age = b""
        if offset is not None:      # Clock.json_time()
            t = ts / 1e9 + offset
            secs = int(t)
            if secs != second[0]:
                second[0], (second[1], second[2]) = secs, json_head(secs)
            t1, t2, t3 = second[1], int((t - secs) * 1e6), second[2]
        else:
            t1 = iso(ts)
            t1, t2, t3 = ENC(t1).encode("ascii") if t1 is not None else b"null", b"", b""
        if stacks:
            stack, error = stack_json(symbols(addrs) if addrs and symbols else [], stack_len)
            return template % (
                aux, cpu, dla, dlb, b'"0x%x"' % fla if fla else b"null",
                b'"0x%x"' % flb if flb else b"null", fbytes, segs, head, age, length,
                b'"0x%x"' % new_skb if new_skb else b"null", nfa, nfb, pid, ret, skb, stack,
                error, t1, t2, t3, ts)
        return template % (
            aux, cpu, dla, dlb, b'"0x%x"' % fla if fla else b"null",
            b'"0x%x"' % flb if flb else b"null", fbytes, segs, head, age, length,
            b'"0x%x"' % new_skb if new_skb else b"null", nfa, nfb, pid, ret, skb, t1, t2, t3, ts)

    return handle


# --- skb_vxlan_source_detector --------------------------------------------------

# detector_formatter.DetectorFormatter.event_detail(): hooks with a detail of their own
K_ADJUST_ROOM, K_GROW_SHRINK, K_CHANGE_PROTO, K_TUNNEL_OFFLOADS = 1, 2, 3, 4
DETAIL_KINDS = {"bpf_skb_adjust_room": K_ADJUST_ROOM, "bpf_skb_net_grow": K_GROW_SHRINK,
                "bpf_skb_net_shrink": K_GROW_SHRINK, "bpf_skb_change_proto": K_CHANGE_PROTO,
                "iptunnel_handle_offloads": K_TUNNEL_OFFLOADS}


def detector_handler(fmt, hooks_by_id, stats, symbols=None, verdict=None):
    """The fast path of detector_formatter.DetectorFormatter; verdict: the Detector's
    Verdict, counted as Detector.on_record() counts it."""
    if fmt.json_mode:
        return _detector_json(fmt, hooks_by_id, stats, symbols, verdict)
    return _detector_text(fmt, hooks_by_id, stats, symbols, verdict)


def _verdict_counter(verdict):
    """Verdict.add() on an event's fields: (reasons, flags, new_origin,
    event name, function) -> None."""
    if verdict is None:
        return None
    by_setter = verdict.by_setter
    pattern_of = udp_tunnel.PATTERN_OF_EVENT
    tunnel_reasons = event.RSN_TUNNEL_MASK
    on_entry = event.F_ORIGIN_ON_ENTRY

    def count(reasons, flags, new_origin, event_name, function):
        if reasons & tunnel_reasons:
            verdict.mismatches += 1
        if new_origin:
            key = ("C" if flags & on_entry else pattern_of.get(event_name, "C"), function)
            by_setter[key] = by_setter.get(key, 0) + 1

    return count


def _detector_text(fmt, hooks_by_id, stats, symbols, verdict):
    texts = Texts(fmt, hooks_by_id)
    # what every line needs; the virtio header and --verbose's fields in
    # second unpacks
    unpack = event.layout_struct(
        "ts_ns skb ret aux last_ts_ns cpu gso_type_before gso_type_after reasons stack_len "
        "hook_id last_hook gso_size_before gso_size_after event severity flags aux2"
    ).unpack_from
    unpack_vnet = event.layout_struct(
        "vnet_hdr_len vnet_gso_size vnet_csum_start vnet_csum_offset vnet_flags vnet_gso_type"
    ).unpack_from
    unpack_v = event.layout_struct(
        "frag_list_after pid len data_len_after ifindex iif protocol sport dport inner_sport "
        "inner_dport nr_frags_after family l4proto inner_family inner_l4proto saddr daddr "
        "inner_saddr inner_daddr comm").unpack_from
    verbose = fmt.verbose
    stacks = fmt.stacks
    count_no_stack = stats.stacks
    counts = stats.raw
    count_verdict = _verdict_counter(verdict)
    hms = fmt.clock.hms
    time_fmt, offset, hms_head = time_format(fmt.clock)
    second = [None, None]   # the wall-clock second hms_head() last gave, its text
    tunnel_mask = fmt.gso.tunnel_mask()
    labels, get_label = texts.labels, texts.get_label
    gso_text, get_gso_text = texts.gso_text, texts.get_gso_text
    reasons_text, get_reasons = texts.reasons, texts.get_reasons
    comm_text, get_comm = texts.comm, texts.get_comm
    flows, get_flow = texts.flows, texts.get_flow
    names = texts.names
    detail_kinds = DETAIL_KINDS
    bit_names, vnet_gso_text = udp_tunnel.bit_names, udp_tunnel.vnet_gso_text
    vnet_flag_bits, adj_flag_bits = udp_tunnel.VNET_FLAGS, udp_tunnel.ADJ_ROOM_FLAGS
    adj_modes = udp_tunnel.ADJ_ROOM_MODES
    line1 = time_fmt + " %-3d %s| 0x%016x | %s |"
    line1_v = time_fmt + " %-3d %-16s %-7d %s| 0x%016x | %s |"
    virtio = (" virtio_gso=%s(0x%x) virtio_gso_size=%d hdr_len=%d csum_start=%d csum_offset=%d "
              "flags=%s")
    line2_v = " | len=%d data_len=%d nr_frags=%d frag_list=%s cloned=%d encap=%d dev=%d iif=%d"
    sev_markers = SEVERITY_MARKERS
    f_vnet, f_in_tnl_seg, f_stale, f_on_entry = (event.F_VNET_VALID, event.F_IN_TNL_SEG,
                                                 event.F_LAST_STALE, event.F_ORIGIN_ON_ENTRY)
    f_encap, f_cloned = event.F_ENCAP, event.F_CLONED
    mask56 = (1 << 56) - 1

    def handle(data):
        if len(data) < SIZE:
            raise ValueError("short event: %d bytes, expected %d" % (len(data), SIZE))
        (ts, skb, ret, aux, lts, cpu, gtb, gta, reasons, stack_len, hook_id, last_hook, gsb, gsa,
         ev, sev, flags, aux2) = unpack(data)
        addrs = stack_addrs(data, stack_len) if stack_len > 0 else None
        key = hook_id | ev << 16 | sev << 24
        counts[key] = counts.get(key, 0) + 1
        if count_no_stack and not addrs:
            why = stack_error(stack_len) or "empty"
            stats.no_stack[why] = stats.no_stack.get(why, 0) + 1
        label = labels.get(key & 0xffffff) or get_label(key & 0xffffff)
        function = label.function
        last = names.get(last_hook - 1)    # Record.last_function
        new_origin = last_hook and last_hook - 1 == hook_id and lts == ts
        if count_verdict is not None and (new_origin or reasons):
            count_verdict(reasons, flags, new_origin, label.event, function)

        if gtb == gta:
            gso = gso_text.get(gta) or get_gso_text(gta)
        else:
            gso = "%s -> %s" % (gso_text.get(gtb) or get_gso_text(gtb),
                                gso_text.get(gta) or get_gso_text(gta))
        if offset is not None:      # Clock.hms()
            t = ts / 1e9 + offset
            secs = int(t)
            if secs != second[0]:
                second[:] = secs, hms_head(secs)
            t1, t2 = second[1], int((t - secs) * 1e6)
        else:
            t1, t2 = hms(ts), ""
        if verbose:
            (fla, pid, length, dla, ifindex, iif, proto, sport, dport, isport, idport, nfa, fam, l4,
             ifam, il4, sa, da, isa, ida, comm) = unpack_v(data)
            out = line1_v % (t1, t2, cpu, comm_text.get(comm) or get_comm(comm), pid,
                             label.columns, skb, gso)
        else:
            out = line1 % (t1, t2, cpu, label.columns, skb, gso)

        # DetectorFormatter.event_detail()
        if flags & f_vnet:
            vhl, vgs, vcs, vco, vfl, vgt = unpack_vnet(data)
            out += virtio % (vnet_gso_text(vgt), vgt, vgs, vhl, vcs, vco,
                             bit_names(vfl, vnet_flag_bits))
        kind = detail_kinds.get(function)
        if kind is not None:
            if kind == K_ADJUST_ROOM:
                out += " mode=%s flags=%s ret=%d" % (adj_modes.get(aux2, str(aux2)),
                                                     bit_names(aux & mask56, adj_flag_bits), ret)
            elif kind == K_GROW_SHRINK:
                out += " flags=%s ret=%d" % (bit_names(aux & mask56, adj_flag_bits), ret)
            elif kind == K_CHANGE_PROTO:
                out += " proto=0x%04x ret=%d" % (((aux & 0xff) << 8) | ((aux >> 8) & 0xff), ret)
            else:
                mask = aux & 0xffffffff
                out += " mask=%s ret=%d" % (gso_text.get(mask) or get_gso_text(mask), ret)
        out += " gso_size=%s encap=%d" % (gsa if gsb == gsa else "%d->%d" % (gsb, gsa),
                                          1 if flags & f_encap else 0)
        # DetectorFormatter.markers(): tunnel_change() and the severity
        before, after = gtb & tunnel_mask, gta & tunnel_mask
        if after and not before:
            if last and not new_origin:
                out += " (nested: set by %s)" % last
            else:
                out += " [UDP_TUNNEL ADDED]"
        elif before and not after:
            out += " [UDP_TUNNEL REMOVED]"
        elif before and after and not last:
            out += " (nested: already set by an enclosing call)"
        if sev:
            marker = sev_markers.get(sev)
            if marker:
                out += " " + marker
        if reasons:
            out += " reasons=" + (reasons_text.get(reasons) or get_reasons(reasons))
        # DetectorFormatter.origin_text()
        if last:
            if new_origin:
                out += " origin=here (already set on entry)" if flags & f_on_entry else \
                    " origin=here"
            else:
                out += " origin=%s(+%dus)" % (last, int((ts - lts) / 1000.0) if lts else 0)
                if flags & f_on_entry:
                    out += "(already set there)"
                if flags & f_stale:
                    out += "(other head)"
        if flags & f_in_tnl_seg:
            out += " in=skb_udp_tunnel_segment"

        if verbose:
            flow = (flows.get((fam, l4, sa, da, sport, dport)) or
                    get_flow((fam, l4, sa, da, sport, dport))) if fam else None
            out += "\n  -> Flow: " + (flow or "not IP (protocol 0x%04x)" % proto)
            if ifam:
                inner = (flows.get((ifam, il4, isa, ida, isport, idport)) or
                         get_flow((ifam, il4, isa, ida, isport, idport)))
                if inner:
                    out += " | inner: " + inner
            out += line2_v % (length, dla, nfa, "0x%x" % fla if fla else "NULL",
                              1 if flags & f_cloned else 0, 1 if flags & f_encap else 0,
                              ifindex, iif)
        if stacks:
            out += stack_text(symbols(addrs) if addrs and symbols else [], stack_len)
        return out + "\n"

    return handle


def _detector_json(fmt, hooks_by_id, stats, symbols, verdict):
    texts = Texts(fmt, hooks_by_id)
    unpack = event.layout_struct(DETECTOR_JSON_FIELDS).unpack_from
    stacks = fmt.stacks
    count_no_stack = stats.stacks
    counts = stats.raw
    iso = fmt.clock.iso
    time_slot, offset, json_head = json_time_format(fmt.clock)
    second = [None, None, None]     # the second json_head() last gave, its head and zone
    tunnel_mask = fmt.gso.tunnel_mask()
    templates = {}
    by_setter = verdict.by_setter if verdict is not None else None

    def record_for(e, label, new_origin):
        """The template of DetectorFormatter._json(): to_dict() without
        "last", with its own keys; "virtio" sorts after "type": present or
        not, it closes the record. The age of the origin is a slot of its
        own, after head and before len."""
        last = texts.names.get(e.last_hook - 1)     # Record.last_function
        fj = FLAG_JSON[e.flags]
        before, after = e.gso_type_before & tunnel_mask, e.gso_type_after & tunnel_mask
        if after and not before:        # udp_tunnel.tunnel_change()
            change = udp_tunnel.ADDED_NESTED if last and not new_origin else udp_tunnel.ADDED
        elif before and not after:
            change = udp_tunnel.REMOVED
        elif before and after and not last:
            change = udp_tunnel.BY_ENCLOSING
        else:
            change = None
        if last is None:
            origin = b"null%s"
        else:
            origin = b'{"age_us": %s, "function": ' + lit(texts.names_json[e.last_hook - 1]) + \
                b', "here": ' + (b"true" if new_origin else b"false") + b', "on_entry": ' + \
                fj[5] + b', "other_head": ' + fj[4] + b"}"
        pairs = sorted(common_pairs(fmt, texts, e, stacks, time_slot) + [
            ("aux2", b"%d" % e.aux2), ("origin", origin),
            ("tunnel_added", b"true" if change == udp_tunnel.ADDED else b"false"),
            ("tunnel_change", jenc(change) if change else b"null")])
        out = record_template(pairs, close=False)
        if e.flags & event.F_VNET_VALID:
            out += b', "virtio": {"csum_offset": %d, "csum_start": %d, "flags": %d, ' \
                b'"gso_size": %d, "gso_type": %d, "gso_type_name": %s, "hdr_len": %d}' % (
                    e.vnet_csum_offset, e.vnet_csum_start, e.vnet_flags, e.vnet_gso_size,
                    e.vnet_gso_type, lit(jenc(udp_tunnel.vnet_gso_text(e.vnet_gso_type))),
                    e.vnet_hdr_len)
        return out + b"}\n"

    def entry(key, data):
        """(template, template when the event is its own origin or None,
        statistics key, has an "origin", counts as a tunnel metadata
        mismatch, the verdict's setter key) for the event's key."""
        e = Fields(data)
        label = texts.labels.get(e.event << 16 | e.hook_id) or texts.get_label(
            e.event << 16 | e.hook_id)
        # udp_tunnel.is_new_origin() but for ts_ns == last_ts_ns, which the
        # event itself tells
        may_be_origin = bool(e.last_hook) and e.last_hook - 1 == e.hook_id
        setter = None
        if may_be_origin:
            setter = ("C" if e.flags & event.F_ORIGIN_ON_ENTRY else
                      udp_tunnel.PATTERN_OF_EVENT.get(label.event, "C"), label.function)
        if len(templates) >= TEMPLATES_MAX:
            templates.clear()
        value = templates[key] = (
            record_for(e, label, False), record_for(e, label, True) if may_be_origin else None,
            e.hook_id | e.event << 16 | e.severity << 24,
            e.last_hook - 1 in texts.names,
            verdict is not None and bool(e.reasons & event.RSN_TUNNEL_MASK), setter)
        return value

    def handle(data):
        if len(data) < SIZE:
            raise ValueError("short event: %d bytes, expected %d" % (len(data), SIZE))
        (ts, skb, new_skb, flb, fla, head, ret, aux, lts, pid, cpu, length, dlb, dla, k1, fbytes,
         stack_len, k2, segs, k3, k4, k5, nfb, nfa, k6, k7) = unpack(data)
        addrs = stack_addrs(data, stack_len) if stack_len > 0 else None
        key = (k1, k2, k3, k4, k5, k6, k7)
        template, origin_template, skey, has_origin, mismatch, setter = \
            templates.get(key) or entry(key, data)
        counts[skey] = counts.get(skey, 0) + 1
        if count_no_stack and not addrs:
            why = stack_error(stack_len) or "empty"
            stats.no_stack[why] = stats.no_stack.get(why, 0) + 1
        if origin_template is not None and lts == ts:
            template = origin_template
            if by_setter is not None:
                by_setter[setter] = by_setter.get(setter, 0) + 1
        if mismatch:
            verdict.mismatches += 1
        if has_origin:
            age = b"%a" % ((ts - lts) / 1000.0) if lts else b"null"
        else:
            age = b""
        if offset is not None:      # Clock.json_time()
            t = ts / 1e9 + offset
            secs = int(t)
            if secs != second[0]:
                second[0], (second[1], second[2]) = secs, json_head(secs)
            t1, t2, t3 = second[1], int((t - secs) * 1e6), second[2]
        else:
            t1 = iso(ts)
            t1, t2, t3 = ENC(t1).encode("ascii") if t1 is not None else b"null", b"", b""
        if stacks:
            stack, error = stack_json(symbols(addrs) if addrs and symbols else [], stack_len)
            return template % (
                aux, cpu, dla, dlb, b'"0x%x"' % fla if fla else b"null",
                b'"0x%x"' % flb if flb else b"null", fbytes, segs, head, length,
                b'"0x%x"' % new_skb if new_skb else b"null", nfa, nfb, age, pid, ret, skb, stack,
                error, t1, t2, t3, ts)
        return template % (
            aux, cpu, dla, dlb, b'"0x%x"' % fla if fla else b"null",
            b'"0x%x"' % flb if flb else b"null", fbytes, segs, head, length,
            b'"0x%x"' % new_skb if new_skb else b"null", nfa, nfb, age, pid, ret, skb, t1, t2, t3, ts)

    return handle
