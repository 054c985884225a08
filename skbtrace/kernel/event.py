"""The event record, read from bpf/skb_event.h so C and Python cannot drift.

The header is parsed once at import: its #define constants become module
attributes (EV_CREATE, RSN_SEG_NO_PAYLOAD, ...) and struct skb_event becomes
the ctypes class SkbEvent. tests/unit check the layout against gcc.
"""
import ctypes
import os
import re
import struct

from skbtrace import paths

_CTYPES = {
    "u8": ctypes.c_uint8,
    "u16": ctypes.c_uint16,
    "u32": ctypes.c_uint32,
    "u64": ctypes.c_uint64,
    "s32": ctypes.c_int32,
    "s64": ctypes.c_int64,
    "char": ctypes.c_char,
}

_DEFINE_RE = re.compile(r"^#define\s+([A-Z][A-Z0-9_]*)\s+(\(?[^/\n]*?\)?)\s*(?:/\*.*)?$")
_FIELD_RE = re.compile(r"^\s*(u8|u16|u32|u64|s32|s64|char)\s+(\w+)(?:\[(\d+)\])?;")


def header_path():
    return os.path.join(paths.bpf_dir(), "skb_event.h")


def _eval_define(expr, known):
    expr = expr.strip()
    if not expr:
        return None
    m = re.match(r'^"([^"\\]*)"$', expr)
    if m:
        return m.group(1)           # a string constant (FR_PREFIX)
    names = re.findall(r"\b[A-Za-z_]\w*", re.sub(r"\b0[xX][0-9a-fA-F]+\b", "0", expr))
    if any(n not in known for n in names):
        return None
    try:
        return int(eval(expr, {"__builtins__": {}}, dict(known)))  # noqa: S307 - our own header
    except Exception:
        return None


def parse_header(text):
    """Return (constants dict, [(field, ctype)]) from the header text."""
    consts = {}
    fields = []
    in_struct = False
    for line in text.splitlines():
        if line.startswith("struct skb_event {"):
            in_struct = True
            continue
        if in_struct:
            if line.startswith("};"):
                in_struct = False
                continue
            m = _FIELD_RE.match(line)
            if m:
                ctype = _CTYPES[m.group(1)]
                if m.group(3):
                    ctype = ctype * int(m.group(3))
                fields.append((m.group(2), ctype))
            continue
        m = _DEFINE_RE.match(line)
        if m and m.group(1) != "SKB_EVENT_H":
            value = _eval_define(m.group(2), consts)
            if value is not None:
                consts[m.group(1)] = value
    return consts, fields


with open(header_path()) as _f:
    CONSTANTS, FIELDS = parse_header(_f.read())

globals().update(CONSTANTS)


class SkbEvent(ctypes.Structure):
    _fields_ = FIELDS


def _names(prefix):
    return dict((v, k[len(prefix):]) for k, v in CONSTANTS.items()
                if k.startswith(prefix) and not k.endswith("_MASK") and isinstance(v, int))


EVENT_NAMES = _names("EV_")          # 1 -> "CREATE"
REASON_NAMES = dict((v, k) for k, v in _names("RSN_").items())  # "SEG_NO_PAYLOAD" -> bit
REASON_BITS = sorted((v, k[4:]) for k, v in CONSTANTS.items()
                     if k.startswith("RSN_") and not k.endswith("_MASK"))
SEVERITY_NAMES = {0: "", 1: "WARNING", 2: "CRITICAL"}


def reason_names(bits):
    return [name for value, name in REASON_BITS if bits & value]


_STRUCT_CODES = {
    ctypes.c_uint8: "B", ctypes.c_uint16: "H", ctypes.c_uint32: "I", ctypes.c_uint64: "Q",
    ctypes.c_int32: "i", ctypes.c_int64: "q",
}


def layout_struct(names):
    """A struct.Struct that unpacks the named fields of struct skb_event, in
    the header's order, and skips the others: the fast path reads only what
    it needs. Arrays (addresses, comm) come out as bytes, in full;
    "first:last" is the raw bytes from field first through field last, as
    one bytes object (a cache key). names: a list or a space-separated
    string, in the header's order."""
    if isinstance(names, str):
        names = names.split()
    wanted = [n.split(":", 1) if ":" in n else [n] for n in names]
    fmt = ["="]
    pos = 0
    skip = 0
    chunk = None        # [last field, bytes so far] of a "first:last" range
    for name, ctype in FIELDS:
        offset = getattr(SkbEvent, name).offset
        size = ctypes.sizeof(ctype)
        if offset != pos:
            raise ValueError("struct skb_event: implicit padding before %s" % name)
        pos += size
        if chunk is not None:
            chunk[1] += size
            if name == chunk[0]:
                fmt.append("%ds" % chunk[1])
                chunk = None
            continue
        if not wanted or wanted[0][0] != name:
            skip += size
            continue
        want = wanted.pop(0)
        if skip:
            fmt.append("%dx" % skip)
            skip = 0
        if len(want) == 2 and want[1] != name:
            chunk = [want[1], size]
        elif hasattr(ctype, "_length_") or len(want) == 2:
            fmt.append("%ds" % size)
        else:
            fmt.append(_STRUCT_CODES[ctype])
    if wanted or chunk is not None:
        raise ValueError("not fields of struct skb_event, or out of the header's order: %s"
                         % " ".join(":".join(w) for w in wanted or [chunk[:1]]))
    if skip:
        fmt.append("%dx" % skip)
    s = struct.Struct("".join(fmt))
    if s.size != ctypes.sizeof(SkbEvent):
        raise ValueError("layout_struct: %d bytes, struct skb_event has %d"
                         % (s.size, ctypes.sizeof(SkbEvent)))
    return s
