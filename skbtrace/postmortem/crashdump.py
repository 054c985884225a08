"""Read the output of the `crash` utility (a vmcore session transcript).

What it reads, in any order, with or without `crash> ` prompts, among WARNING
and blank lines and anything else (kept out):
- `struct sk_buff ADDR`, `struct skb_shared_info ADDR` (also `-x`, the
  `struct TYPE.member[,member] ADDR` form, `p *(struct TYPE *)ADDR`), as
  crash prints them: nested anonymous unions and structs, 6.1's `headers`
  group, 4.18's flat layout, frags as bio_vec (bv_len) or 4.x's skb_frag_t
  (size); values in decimal or hex. `//` and `#` comments and `...` lines
  (field notes) are skipped. Of skb->cb, printed as gdb prints a char array
  (escapes, host-charset characters, `<repeats N times>`), the int at
  cb + 32: SKB_GSO_CB(skb)->mac_offset, where the outer headers start while
  the skb is inside __skb_gso_segment (skb_findings decodes them from there
  at a crash on the GSO path);
- `rd -8 ADDR N` byte dumps, `rd ADDR N` 64-bit word dumps (little endian;
  also -16/-32) and the stack words of `bt -f`: into .memory, adjacent ranges
  merged;
- `bt` (`bt -f`): the frames, the exception RIP and its registers;
- `p`/`p/x` values (`$N = ...`, with the object and member when the command
  names them as `((struct TYPE *)ADDR)->member`) and `eval` results;
- the kernel log (`log`): oops/panic lines, the call trace and the release.

parse() never raises on the content of its input: what it cannot use is
skipped and said in .errors. It raises CrashParseError, its only error, when
the input is not text or holds nothing that crash prints.

On 64-bit kernels (NET_SKBUFF_DATA_USES_OFFSET, include/linux/skbuff.h of
4.18 and 6.1) head and data are pointers, tail and end offsets from head,
and struct skb_shared_info sits at head + end: a shared info is attached to
the skb whose head + end is its address.
"""
import re

from skbtrace.kernel import event, gso, packet, rules

MAX_LINE = 65536
MAX_ERRORS = 500
MAX_DEPTH = 64


class CrashParseError(ValueError):
    """The input is not text, or holds nothing `crash` prints."""


# ---------------------------------------------------------------------------
# states

SKB_FIELDS = ("len", "data_len", "head", "data", "tail", "end", "mac_header",
              "network_header", "transport_header", "inner_mac_header",
              "inner_network_header", "inner_transport_header", "encapsulation",
              "protocol", "cloned")
SHINFO_FIELDS = ("nr_frags", "gso_size", "gso_type", "gso_segs", "frag_list")
CB_SIZE = 48                 # sizeof(skb->cb), include/linux/skbuff.h (4.18, 6.1)
SKB_GSO_CB_OFFSET = 32       # struct skb_gso_cb { int mac_offset; int encap_level; ... }


class SkbState(object):
    """One skb as the vmcore shows it; None where the session does not say.
    protocol is in host order (0x0800 for IPv4; crash prints the __be16 as
    stored, 8 on x86). frags: sizes of skb_shinfo()->frags[] as printed
    (all MAX_SKB_FRAGS entries, stale ones too); frags_bytes: what the first
    nr_frags of them hold. family/l4proto: the IP version and protocol at
    network_header, what the live tools' fill_state() reads (filled by
    skb_findings when the memory holds that header). gso_mac_offset: the int
    at skb->cb + 32 (SKB_GSO_CB_OFFSET), SKB_GSO_CB(skb)->mac_offset while
    the skb is inside __skb_gso_segment() (another layer's bytes elsewhere:
    skb_findings uses it only at a crash on the GSO path)."""

    __slots__ = ("addr", "shinfo_addr") + SKB_FIELDS + SHINFO_FIELDS + (
        "frags", "frags_bytes", "family", "l4proto", "gso_mac_offset", "notes")

    def __init__(self, addr=None):
        for name in self.__slots__:
            setattr(self, name, None)
        self.addr = addr
        self.notes = []

    def as_dict(self):
        return dict((n, getattr(self, n)) for n in self.__slots__)

    def offsets(self):
        """The header offsets and flags packet.decode() wants."""
        out = dict((n, getattr(self, n)) for n in (
            "mac_header", "network_header", "transport_header", "inner_mac_header",
            "inner_network_header", "inner_transport_header", "encapsulation",
            "protocol", "tail"))
        return out

    def data_offset(self):
        if self.data is None or self.head is None:
            return None
        return self.data - self.head

    def __repr__(self):
        parts = []
        for n in self.__slots__:
            v = getattr(self, n)
            if v is None or v == []:
                continue
            if isinstance(v, int) and n in ("addr", "head", "data", "frag_list",
                                            "shinfo_addr", "protocol"):
                v = hex(v)
            parts.append("%s=%s" % (n, v))
        return "SkbState(%s)" % ", ".join(parts)


class Frame(object):
    """A `bt` frame, or the exception RIP line (exception=True; function and
    offset from `[exception RIP: fn+off]`, regs from the lines below it)."""

    __slots__ = ("index", "sp", "function", "offset", "address", "module", "exception",
                 "regs", "text")

    def __init__(self, text, function, index=None, sp=None, address=None, module=None,
                 exception=False, offset=None):
        self.text = text
        self.function = function
        self.index = index
        self.sp = sp
        self.address = address
        self.module = module
        self.exception = exception
        self.offset = offset
        self.regs = {}

    def __repr__(self):
        return "Frame(%r)" % self.text


class CrashSession(object):
    """What parse() found. skbs: addr -> SkbState; orphans: SkbStates printed
    without an address (or shared infos no skb claims); shinfos: addr -> dict
    of the struct skb_shared_info fields printed; memory: start -> bytes;
    backtrace: frame strings of the panic task's `bt` (with the exception
    RIP); frames: the same as Frame objects; backtraces: every distinct `bt`
    (lists of strings); panic: oops/panic lines; log_trace: function names of
    the log's call trace; values: (command or None, text) of `p` and `eval`;
    release: the kernel release when the session says it; errors."""

    def __init__(self):
        self.skbs = {}
        self.orphans = []
        self.shinfos = {}
        self.memory = {}
        self.backtrace = []
        self.frames = []
        self.backtraces = []
        self.panic = []
        self.log_trace = []
        self.log_rip = None
        self.values = []
        self.release = None
        self.commands = []
        self.errors = []
        self._dropped = 0

    def note(self, msg):
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(msg)
        else:
            self._dropped += 1

    def read(self, addr, n):
        """n bytes at addr when the memory holds them all, else None."""
        for start, data in self.memory.items():
            if start <= addr and addr + n <= start + len(data):
                return data[addr - start:addr - start + n]
        return None

    def segment(self, addr):
        """(start, bytes) of the memory range holding addr, or None."""
        for start, data in self.memory.items():
            if start <= addr < start + len(data):
                return start, data
        return None

    def crash_site(self):
        """(function, offset text or None, where) of the faulting instruction:
        the first exception RIP of the backtrace, else the log's RIP line."""
        for f in self.frames:
            if f.exception:
                return f.function, f.offset, "bt"
        if self.log_rip:
            return self.log_rip[0], self.log_rip[1], "log"
        return None

    def callers(self):
        """Function names below the crash site (its callers, across stack
        switches, up to the next exception frame), from `bt`, or else from
        the log's call trace."""
        out = []
        seen = False
        for f in self.frames:
            if f.exception:
                if seen:
                    break
                seen = True
                continue
            if seen and f.function:
                out.append(f.function)
        if seen:
            return out
        return list(self.log_trace)


# ---------------------------------------------------------------------------
# line patterns

_PROMPT = re.compile(r"^\s*crash>\s?(.*)$")
_STRUCT_HEAD = re.compile(r"^\s*(?:\$\d+\s*=\s*)?struct\s+(\w+)\s*\{")
_P_STRUCT_HEAD = re.compile(r"^\s*\$(\d+)\s*=\s*(?:\([^)]*\)\s*)?\{")
_P_VALUE = re.compile(r"^\s*\$(\d+)\s*=\s*(.*?)\s*$")
_FRAME = re.compile(r"^\s*#(\d+)\s+\[([0-9a-fA-F]+)\]\s+(\S+)\s+at\s+([0-9a-fA-F]+)"
                    r"(?:\s+\[([^\]]+)\])?")
_EXC_RIP = re.compile(r"\[exception RIP:\s*([^\]+\s]+)(?:\+(\w+))?\s*\]")
_PID = re.compile(r"^\s*PID:\s*(\d+)\s+TASK:\s*([0-9a-fA-F]+)")
_REGS = re.compile(r"\b([A-Z][A-Z0-9_]*):\s+([0-9a-fA-F]{4,16})\b")
_REG_LINE = re.compile(r"^\s*(?:[A-Z][A-Z0-9_]*:\s+[0-9a-fA-F]{4,16}\s*)+$")
_STACK_SWITCH = re.compile(r"^\s*---\s*<[^>]+>\s*---\s*$")
_MEM = re.compile(r"^\s*([0-9a-fA-F]{8,16}):\s+(.*)$")
_MEMBER = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(.*?)\s*,?\s*$")
_EVAL = re.compile(r"^\s*(hexadecimal|decimal|octal|binary):\s*(\S+)")
_CRASH_ERR = re.compile(r"^\s*(?:rd|struct|p|print|bt|eval|gdb|crash|dis|sym|log):\s+(.*)$")
_LOG_TS = re.compile(r"^\s*\[\s*\d+\.\d+\]\s?")
_PANIC = re.compile(r"(BUG: |Oops: |Kernel panic - not syncing|general protection fault|"
                    r"kernel BUG at|Unable to handle kernel|RIP: [0-9a-f]{4}:|#PF: |"
                    r"^\s*PANIC:\s)")
_LOG_RIP = re.compile(r"RIP: [0-9a-f]{4}:([A-Za-z_][\w.]*)\+(0x[0-9a-f]+)/0x[0-9a-f]+")
_LOG_FRAME = re.compile(r"^\s*(\?\s+)?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
_RELEASE = re.compile(r"(?:Linux version|RELEASE:)\s+(\d+\.\d+\S*)")
_ADDR_ARG = re.compile(r"^(?:0x)?([0-9a-fA-F]{8,16})$")
_CAST_MEMBER = re.compile(r"\(\s*\(\s*struct\s+(\w+)\s*\*\s*\)\s*(?:0x)?([0-9a-fA-F]+)\s*\)"
                          r"\s*->\s*(\w+)")
_CAST_DEREF = re.compile(r"\*\s*\(\s*struct\s+(\w+)\s*\*\s*\)\s*(?:0x)?([0-9a-fA-F]+)")

_LOOKS = [
    re.compile(r"^\s*crash>", re.M),
    re.compile(r"^\s*struct\s+(?:sk_buff|skb_shared_info)\s*\{", re.M),
    re.compile(r"^\s*#\d+\s+\[[0-9a-fA-F]+\]\s+\S+\s+at\s+[0-9a-fA-F]+", re.M),
    re.compile(r"\[exception RIP:"),
    re.compile(r"^\s*[0-9a-fA-F]{16}:\s+(?:[0-9a-fA-F]{2}\s){8}", re.M),
    re.compile(r"^\s*[0-9a-fA-F]{16}:\s+[0-9a-fA-F]{16}(?:\s|$)", re.M),
]


def _text_of(obj):
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, str):
        return obj
    return None


def looks_like(text):
    """True when text holds crash output: prompts, struct sk_buff /
    skb_shared_info blocks, bt frames, rd dump lines. A console log (an oops
    with `Call Trace:`) is not crash output."""
    t = _text_of(text)
    if t is None:
        try:
            t = "\n".join(_text_of(x) or "" for x in text)
        except TypeError:
            return False
    return any(p.search(t) for p in _LOOKS)


def _lines_of(lines):
    t = _text_of(lines)
    if t is not None:
        return t.splitlines()
    try:
        out = []
        for x in lines:
            s = _text_of(x)
            if s is None:
                raise CrashParseError("line %d is %s, not text" % (len(out) + 1,
                                                                   type(x).__name__))
            out.extend(s.splitlines() or [""])
        return out
    except TypeError:
        raise CrashParseError("input is %s, not text or lines" % type(lines).__name__)


# ---------------------------------------------------------------------------
# struct values

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>//.*|\#.*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"?)
  | (?P<chr>'(?:[^'\\\n]|\\.)*'?)
  | (?P<lb>\{)
  | (?P<rb>\})
  | (?P<comma>,)
  | (?P<eq>=)
  | (?P<word>[^\s{}=,"']+)
""", re.X)


def _tokens(text):
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        if kind == "word" and set(m.group()) == {"."}:
            continue                      # "..." in field notes
        yield kind, m.group()


class _Node(object):
    """A braced value: items are (name or None, value), value a _Node or the
    scalar's text."""
    __slots__ = ("items",)

    def __init__(self):
        self.items = []


def _parse_tree(text, notes, what):
    """The members of a brace block (text from after its opening brace).
    Returns (root _Node, closed?)."""
    toks = list(_tokens(text))
    root = _Node()
    stack = [root]
    skip_depth = 0
    i = 0
    n = len(toks)
    while i < n:
        kind, val = toks[i]
        if skip_depth:
            if kind == "lb":
                skip_depth += 1
            elif kind == "rb":
                skip_depth -= 1
            i += 1
            continue
        if kind == "rb":
            if len(stack) == 1:
                return root, True
            stack.pop()
            i += 1
            continue
        if kind in ("comma", "eq"):
            i += 1
            continue
        name = None
        if kind == "word" and i + 1 < n and toks[i + 1][0] == "eq":
            name = val
            i += 2
            if i >= n:
                stack[-1].items.append((name, ""))
                break
            kind, val = toks[i]
        if kind == "lb":
            if len(stack) >= MAX_DEPTH:
                notes.append("%s: nested deeper than %d levels: inner part skipped"
                             % (what, MAX_DEPTH))
                skip_depth = 1
                i += 1
                continue
            node = _Node()
            stack[-1].items.append((name, node))
            stack.append(node)
            i += 1
            continue
        if kind == "rb":                   # "name = }": empty value
            stack[-1].items.append((name, ""))
            continue
        parts = []
        while i < n:
            kind, val = toks[i]
            if kind in ("comma", "rb", "lb"):
                break
            if kind == "word" and parts and i + 1 < n and toks[i + 1][0] == "eq":
                break                      # a new member, the comma was missing
            parts.append(val)
            i += 1
        while parts and _char_array_piece(parts) and _char_array_piece_at(toks, i + 1):
            i += 1                         # gdb's char array: "ab", '\000' <repeats 9 times>
            parts.append(",")
            while i < n and toks[i][0] not in ("comma", "rb", "lb"):
                parts.append(toks[i][1])
                i += 1
        stack[-1].items.append((name, " ".join(parts)))
        if i < n and toks[i][0] == "lb":
            i += 1
            skip_depth = 1                 # "x = 0x1 {": not crash's, skipped
    return root, False


def _char_array_piece(parts):
    """True when a value's tokens are one piece of a char array as gdb prints
    it: a string, or a char with `<repeats N times>`."""
    first = parts[0]
    return first.startswith('"') or (first.startswith("'") and len(parts) > 1 and
                                      parts[1] == "<repeats")


def _char_array_piece_at(toks, i):
    """Whether toks[i] starts another piece of a char array (after a comma)."""
    if i >= len(toks) or toks[i - 1][0] != "comma":
        return False
    kind = toks[i][0]
    if kind == "str":
        return True
    return kind == "chr" and i + 1 < len(toks) and toks[i + 1][1] == "<repeats"


_PIECE = re.compile(r'"((?:[^"\\]|\\.)*)"'
                    r"|'((?:[^'\\]|\\.)+)'\s*<repeats\s+(\d+)\s+times>")
_CHAR_ESC = re.compile(r"\\([0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)", re.S)


def _c_string_bytes(text):
    """The bytes of one string piece as gdb prints it: octal (or hex)
    escapes, C escapes, other characters as the host charset (UTF-8) bytes
    they were printed from. None when an escape is unknown."""
    out = bytearray()
    pos = 0
    for m in _CHAR_ESC.finditer(text):
        out += text[pos:m.start()].encode("utf-8")
        e = m.group(1)
        if e[0] in "01234567":
            out.append(int(e, 8) & 0xff)
        elif e[0] == "x" and len(e) > 1:
            out.append(int(e[1:], 16))
        elif e in _ESCAPES and e != "0":
            out.append(_ESCAPES[e])
        else:
            return None
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def _gdb_chars(value):
    """The bytes of a char array as gdb prints it (`"\\324\\v\\000...",
    '\\000' <repeats 15 times>, "..."`), or None when the text is not that
    or holds a character the reader replaced (U+FFFD: not the bytes printed).
    gdb leaves out one trailing NUL of a char array: the caller knows the
    array's size."""
    if not isinstance(value, str) or "\ufffd" in value:
        return None
    out = bytearray()
    pos = 0
    for m in _PIECE.finditer(value):
        if value[pos:m.start()].strip(" ,"):
            return None
        if m.group(1) is not None:
            b = _c_string_bytes(m.group(1))
        else:
            b = _c_string_bytes(m.group(2))
            if b is not None:
                if len(b) != 1:
                    return None
                b = b * min(int(m.group(3)), 1 << 20)
        if b is None:
            return None
        out += b
        pos = m.end()
    if pos == 0 or value[pos:].strip(" ,."):
        return None
    return bytes(out)


_ESCAPES = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "a": 7, "b": 8, "e": 27,
            "\\": 92, "'": 39, '"': 34, "0": 0}


def _num(value):
    """The integer a scalar's text starts with: 2948, 0xb84, -5, '0 \\'\\\\000\\'',
    'x' char literals, true/false. None when it starts with none."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if not v:
        return None
    first = v.split()[0]
    try:
        if first.lower().startswith(("0x", "-0x")):
            return int(first, 16)
        if re.match(r"^-?\d+$", first):
            return int(first, 10)
    except ValueError:
        return None
    if first in ("true", "false"):
        return int(first == "true")
    m = re.match(r"^'(\\(?:[0-7]{1,3}|.)|[^\\])'$", first)
    if m:
        c = m.group(1)
        if c.startswith("\\"):
            if re.match(r"^\\[0-7]{1,3}$", c):
                return int(c[1:], 8)
            return _ESCAPES.get(c[1:], None)
        return ord(c)
    return None


def _flatten(node, depth=0, out=None):
    """{leaf name: (depth, value)}, the shallowest occurrence of each name
    (the first among equals: 6.1's `headers` group repeats the anonymous
    struct beside it)."""
    if out is None:
        out = {}
    queue = [(node, 0)]
    while queue:
        cur, d = queue.pop(0)
        for name, value in cur.items:
            if name is not None and name not in out:
                out[name] = (d, value)
            if isinstance(value, _Node):
                queue.append((value, d + 1))
    return out


def _frag_sizes(node):
    sizes = []
    for _name, elem in node.items:
        if not isinstance(elem, _Node):
            sizes.append(_num(elem) or 0)
            continue
        flat = _flatten(elem)
        size = None
        for key in ("bv_len", "size", "len"):
            if key in flat and not isinstance(flat[key][1], _Node):
                size = _num(flat[key][1])
                break
        sizes.append(size or 0)
    return sizes


# ---------------------------------------------------------------------------
# the parser

class _Object(object):
    """A struct printed once: its type, address (None if unknown), fields."""

    def __init__(self, typ, addr, where):
        self.typ = typ
        self.addr = addr
        self.where = where
        self.fields = {}
        self.frags = None
        self.notes = []


class _StructReader(object):
    """`struct sk_buff ADDR`, `sk_buff.len,data_len ADDR`, `p *(struct T *)ADDR`,
    `p ((struct T *)ADDR)->member`: the objects printed, with the address the
    command named."""

    def __init__(self, session):
        self.s = session
        self.objects = []
        self.start("")

    def start(self, cmd):
        """A new command: what type and addresses its output is about."""
        self.cmd_addrs = []
        self.cmd_type = None
        self.cmd_members = None
        self.cmd_p = None
        self.blocks_in_cmd = 0
        words = cmd.split()
        if not words:
            return
        verb = words[0]
        if verb in ("p", "print", "px", "pd") or verb.startswith("p/"):
            m = _CAST_MEMBER.search(cmd)
            if m:
                self.cmd_p = (m.group(1), int(m.group(2), 16), m.group(3))
            else:
                m = _CAST_DEREF.search(cmd)
                if m:
                    self.cmd_type = m.group(1)
                    self.cmd_addrs = [int(m.group(2), 16)]
            return
        if verb == "struct" or verb in ("sk_buff", "skb_shared_info") or \
                verb.startswith(("sk_buff.", "skb_shared_info.")):
            args = words[1:] if verb == "struct" else words
            for a in args:
                if a.startswith("-"):
                    continue
                am = _ADDR_ARG.match(a)
                if self.cmd_type is None and not am:
                    typ, _, members = a.partition(".")
                    self.cmd_type = typ
                    self.cmd_members = members.split(",") if members else None
                elif am and self.cmd_type is not None:
                    self.cmd_addrs.append(int(am.group(1), 16))

    def new_object(self, typ, lineno):
        addr = None
        if self.blocks_in_cmd < len(self.cmd_addrs):
            addr = self.cmd_addrs[self.blocks_in_cmd]
        self.blocks_in_cmd += 1
        obj = _Object(typ, addr, "line %d" % lineno)
        self.objects.append(obj)
        return obj

    def fill_object(self, obj, root):
        flat = _flatten(root)
        for name, (_d, value) in flat.items():
            if isinstance(value, _Node):
                if name == "frags":
                    obj.frags = _frag_sizes(value)
                continue
            if name == "cb" and obj.typ == "sk_buff":
                self.gso_cb(obj, value)
                continue
            if name in SKB_FIELDS or name in SHINFO_FIELDS:
                v = _num(value)
                if v is None:
                    obj.notes.append("%s = %r: not a number, ignored" % (name, value))
                else:
                    obj.fields[name] = v

    def gso_cb(self, obj, value):
        """skb->cb (char[48] in 4.18 and 6.1) as gdb prints it: keeps the int
        at SKB_GSO_CB_OFFSET (32), struct skb_gso_cb's mac_offset."""
        cb = _gdb_chars(value)
        if cb is not None and len(cb) == CB_SIZE - 1:
            cb += b"\0"                   # gdb drops a char array's trailing NUL
        if cb is None or len(cb) != CB_SIZE:
            obj.notes.append("cb printed as %s: not the %d bytes of skb->cb, not read"
                             % ("%d bytes" % len(cb) if cb is not None else "text it cannot "
                                "read back into bytes", CB_SIZE))
            return
        obj.fields["gso_mac_offset"] = int.from_bytes(
            cb[SKB_GSO_CB_OFFSET:SKB_GSO_CB_OFFSET + 4], "little", signed=True)

    def struct_block(self, lines, i, typ, lineno):
        """Collect a brace block starting at lines[i]; returns the next index."""
        first = lines[i]
        body = [first[first.index("{") + 1:]]
        depth = 1 + _depth_delta(body[0])
        j = i + 1
        while depth > 0 and j < len(lines):
            line = lines[j]
            if _PROMPT.match(line):
                break
            if len(line) > MAX_LINE:
                self.s.note("line %d: longer than %d characters, skipped" % (j + 1, MAX_LINE))
                j += 1
                continue
            body.append(line)
            depth += _depth_delta(line)
            j += 1
        obj = self.new_object(typ, lineno)
        notes = []
        root, closed = _parse_tree("\n".join(body), notes, "struct %s at %s" % (typ, obj.where))
        for n in notes:
            self.s.note(n)
        if not closed:
            self.s.note("struct %s at line %d: output ends before its closing brace "
                        "(truncated): the members printed are used" % (typ, lineno))
        self.fill_object(obj, root)
        if typ not in ("sk_buff", "skb_shared_info"):
            return j
        if not obj.fields and obj.frags is None:
            self.s.note("struct %s at line %d: no member read" % (typ, lineno))
            return j
        if obj.addr is None:
            self.s.note("struct %s at line %d: no address (no `crash> struct %s ADDR` line "
                        "before it)" % (typ, lineno, typ))
        return j

    def p_member(self, num, lineno):
        """`p ((struct T *)ADDR)->member`'s `$n = value`."""
        if self.cmd_p and num is not None:
            typ, addr, member = self.cmd_p
            obj = _Object(typ, addr, "line %d" % lineno)
            obj.fields[member] = num
            self.objects.append(obj)

    def member_line(self, name, num, lineno):
        """`struct sk_buff.len,data_len ADDR` output, one member a line."""
        typ = self.cmd_type or ("skb_shared_info" if name in SHINFO_FIELDS else "sk_buff")
        addr = self.cmd_addrs[0] if self.cmd_addrs else None
        for obj in reversed(self.objects):
            if obj.typ == typ and obj.addr == addr and obj.where.startswith("member"):
                obj.fields[name] = num
                return
        obj = _Object(typ, addr, "member line %d" % lineno)
        obj.fields[name] = num
        self.objects.append(obj)
        if addr is None:
            self.s.note("line %d: `%s = ...` without a command naming its %s" % (
                lineno, name, typ))


class _BacktraceReader(object):
    """`bt`: PID lines, #N frames, [exception RIP: ...], stack switches, the
    registers under a frame. The backtrace with the exception frame wins."""

    def __init__(self, session):
        self.s = session
        self.bt = None
        self.bt_pid = None
        self.last_frame = None

    def end(self):
        if self.bt:
            key = [f.text for f in self.bt]
            if key not in self.s.backtraces:
                self.s.backtraces.append(key)
                has_exc = any(f.exception for f in self.bt)
                if not self.s.frames or (has_exc and not any(f.exception
                                                             for f in self.s.frames)):
                    self.s.frames = list(self.bt)
        self.bt = None
        self.last_frame = None

    def _add(self, f):
        if self.bt is None:
            self.bt = []
        self.bt.append(f)
        self.last_frame = f

    def line(self, line, stripped):
        """True if the line is backtrace output."""
        m = _PID.match(line)
        if m:
            self.end()
            self.bt = []
            self.bt_pid = int(m.group(1))
            return True
        m = _FRAME.match(line)
        if m:
            fn, _plus, off = m.group(3).partition("+")      # `bt -s`: fn+off
            self._add(Frame(stripped, fn, index=int(m.group(1)), sp=int(m.group(2), 16),
                            address=int(m.group(4), 16), module=m.group(5), offset=off or None))
            return True
        m = _EXC_RIP.search(line)
        if m:
            self._add(Frame(stripped, m.group(1), exception=True, offset=m.group(2)))
            return True
        return False

    def quiet_line(self, line, stripped):
        """Stack switches and register lines: backtrace output, but not
        output that shows the input is crash's."""
        if _STACK_SWITCH.match(line):
            if self.bt is not None:
                self._add(Frame(stripped, None))
            return True
        if self.bt is not None and _REG_LINE.match(line):
            if self.last_frame is not None:
                for reg, val in _REGS.findall(line):
                    self.last_frame.regs.setdefault(reg, int(val, 16))
            return True
        return False


class _MemoryReader(object):
    """`rd -8 ADDR N` (and -16/-32/-64): byte chunks, merged by address."""

    def __init__(self, session):
        self.s = session
        self.mem_chunks = []

    def memory_line(self, addr, rest, lineno):
        part = re.split(r"\s{2,}", rest.strip(), 1)[0]
        toks = part.split()
        if not toks:
            return False
        width = len(toks[0])
        if width not in (2, 4, 8, 16):
            return False
        data = bytearray()
        for t in toks:
            if len(t) != width or not _is_hex(t):
                break
            v = int(t, 16)
            data += v.to_bytes(width // 2, "little")
        if not data:
            return False
        if width == 2 and len(data) > 16:
            return False
        self.mem_chunks.append((addr, bytes(data), lineno))
        return True

    def merge(self):
        chunks = sorted(self.mem_chunks, key=lambda c: (c[0], c[2]))
        merged = []
        conflicts = 0
        for addr, data, _ln in chunks:
            if merged and addr <= merged[-1][0] + len(merged[-1][1]):
                start, buf = merged[-1]
                off = addr - start
                overlap = buf[off:off + len(data)]
                if overlap != data[:len(overlap)]:
                    conflicts += 1
                buf[off:off + len(data)] = data
            else:
                merged.append((addr, bytearray(data)))
        if conflicts:
            self.s.note("memory: %d dump lines disagree with an earlier dump of the same "
                        "addresses; the later one is kept" % conflicts)
        self.s.memory = dict((a, bytes(b)) for a, b in merged)


class _LogReader(object):
    """`log` (or a console capture): the release, the panic lines with the
    oops' RIP, the first call trace."""

    def __init__(self, session):
        self.s = session
        self.trace_state = None

    def panic_line(self, line, body):
        """True if the line says the kernel died."""
        s = self.s
        if s.release is None:
            m = _RELEASE.search(line)
            if m:
                s.release = m.group(1)
        if not (_PANIC.search(body) and "RIP: 0033:" not in body):
            return False
        text = body.strip()
        if text not in s.panic:
            s.panic.append(text)
        m = _LOG_RIP.search(body)
        if m and s.log_rip is None:
            s.log_rip = (m.group(1), m.group(2))
        return True

    def log_line(self, body):
        """The first call trace of the kernel log, function names only
        (`? ` entries are unreliable and left out)."""
        if self.trace_state == "done":
            return
        text = body.strip()
        if self.trace_state is None:
            if text.startswith("Call Trace:"):
                self.trace_state = "in"
            return
        if text in ("<IRQ>", "</IRQ>", "<TASK>", "</TASK>", "<NMI>", "</NMI>"):
            return
        m = _LOG_FRAME.match(text)
        if m:
            if not m.group(1):
                self.s.log_trace.append(m.group(2))
            return
        self.trace_state = "done"


class _Parser(object):
    """One pass over the text: each prompt starts a command, each line goes
    to the reader of the command output it looks like."""

    def __init__(self):
        self.s = CrashSession()
        self.cmd = None
        self.seen_any = False
        self.structs = _StructReader(self.s)
        self.bt = _BacktraceReader(self.s)
        self.memory = _MemoryReader(self.s)
        self.log = _LogReader(self.s)

    def command(self, text):
        self.cmd = text.strip()
        self.s.commands.append(self.cmd)
        self.bt.end()
        self.structs.start(self.cmd)

    def run(self, lines):
        i = 0
        n = len(lines)
        while i < n:
            line = lines[i]
            lineno = i + 1
            if len(line) > MAX_LINE:
                self.s.note("line %d: longer than %d characters, skipped" % (lineno, MAX_LINE))
                i += 1
                continue
            line = line.replace("\x00", "")
            m = _PROMPT.match(line)
            if m:
                self.seen_any = True
                self.command(m.group(1))
                i += 1
                continue
            m = _STRUCT_HEAD.match(line)
            if m:
                self.seen_any = True
                self.bt.end()
                i = self.structs.struct_block(lines, i, m.group(1), lineno)
                continue
            m = _P_STRUCT_HEAD.match(line)
            if m:
                self.seen_any = True
                typ = self.structs.cmd_type or "unknown"
                i = self.structs.struct_block(lines, i, typ, lineno)
                continue
            i += 1
            self.line(line, lineno)
        self.bt.end()

    def line(self, line, lineno):
        s = self.s
        stripped = line.strip()
        if not stripped or stripped.startswith("WARNING:"):
            return
        body = _LOG_TS.sub("", line)
        if self.log.panic_line(line, body):
            self.seen_any = True
            return
        if len(body) != len(line):
            self.log.log_line(body)         # a kernel log line: nothing else in it
            return
        if self.bt.line(line, stripped):
            self.seen_any = True
            return
        if self.bt.quiet_line(line, stripped):
            return
        m = _MEM.match(line)
        if m:
            addr = int(m.group(1), 16)
            if self.memory.memory_line(addr, m.group(2), lineno):
                self.seen_any = True
                return
        m = _EVAL.match(line)
        if m and self.cmd and self.cmd.split()[0] == "eval":
            self.seen_any = True
            kind, val = m.group(1), m.group(2)
            if kind == "hexadecimal" and _is_hex(val):
                s.values.append((self.cmd, int(val, 16)))
            return
        m = _P_VALUE.match(line)
        if m:
            self.seen_any = True
            val = m.group(2)
            num = _num(val)
            if num is None:
                tail = val.split(")")[-1].strip() if val.startswith("(") else ""
                num = _num(tail)
            s.values.append((self.cmd, num if num is not None else val))
            self.structs.p_member(num, lineno)
            return
        m = _MEMBER.match(line)
        if m and (self.structs.cmd_type or self.cmd is None):
            name, val = m.group(1), m.group(2)
            if name in SKB_FIELDS or name in SHINFO_FIELDS:
                num = _num(val)
                if num is not None:
                    self.seen_any = True
                    self.structs.member_line(name, num, lineno)
                    return
        m = _CRASH_ERR.match(line)
        if m and ("invalid" in line or "not" in line or "error" in line.lower()):
            s.note("crash said (line %d): %s" % (lineno, stripped))
            return
        self.log.log_line(body)

    def finish(self):
        self.memory.merge()
        return _assemble(self.s, self.structs.objects)


# ---------------------------------------------------------------------------
# the objects printed -> one SkbState per skb

def _assemble(s, objects):
    skbs = {}
    shinfos = {}
    orphan_skbs = []
    orphan_shinfos = []
    for obj in objects:
        if not obj.fields and obj.frags is None:
            continue
        if obj.typ == "sk_buff":
            target = skbs.setdefault(obj.addr, SkbState(obj.addr)) \
                if obj.addr is not None else None
            if target is None:
                target = SkbState(None)
                orphan_skbs.append(target)
            _apply_skb(target, obj)
        elif obj.typ == "skb_shared_info":
            if obj.addr is None:
                st = SkbState(None)
                _apply_shinfo(st, obj)
                orphan_shinfos.append(st)
                continue
            d = shinfos.setdefault(obj.addr, {})
            for k, v in obj.fields.items():
                if k in SHINFO_FIELDS:
                    if k in d and d[k] != v:
                        s.note("skb_shared_info 0x%x: %s printed as %d and as %d; "
                               "keeping the later" % (obj.addr, k, d[k], v))
                    d[k] = v
            if obj.frags is not None:
                d["frags"] = obj.frags
        else:
            continue
    claimed = set()
    for st in list(skbs.values()) + orphan_skbs:
        _normalise(st)
        sh = _shinfo_addr(st)
        st.shinfo_addr = sh
        if sh is not None and sh in shinfos:
            claimed.add(sh)
            for k, v in shinfos[sh].items():
                if getattr(st, k) is not None and getattr(st, k) != v:
                    st.notes.append("%s: struct sk_buff printed %s, skb_shared_info %s; "
                                    "using skb_shared_info's" % (k, getattr(st, k), v))
                setattr(st, k, v)
    for addr, d in shinfos.items():
        if addr in claimed:
            continue
        st = SkbState(None)
        st.shinfo_addr = addr
        for k, v in d.items():
            setattr(st, k, v)
        st.notes.append("struct skb_shared_info 0x%x: no skb printed whose head + end "
                        "is this address" % addr)
        orphan_shinfos.append(st)
    for st in orphan_shinfos:
        if st.shinfo_addr is None:
            st.notes.append("struct skb_shared_info printed without an address: "
                            "attached to no skb")
    for st in list(skbs.values()) + orphan_skbs + orphan_shinfos:
        _frags_bytes(st)
    s.skbs = skbs
    s.orphans = orphan_skbs + orphan_shinfos
    s.shinfos = shinfos
    if s.frames:
        s.backtrace = [f.text for f in s.frames]
    if s._dropped:
        s.errors.append("... and %d more notes" % s._dropped)
    return s


def _apply_skb(st, obj):
    for k, v in obj.fields.items():
        if k in SHINFO_FIELDS:
            st.notes.append("%s printed inside struct sk_buff (%s): it is a struct "
                            "skb_shared_info member in 4.18 and 6.x; taken as given"
                            % (k, obj.where))
        old = getattr(st, k)
        if old is not None and old != v:
            st.notes.append("%s printed as %d and as %d; keeping the later" % (k, old, v))
        setattr(st, k, v)
    if obj.frags is not None:
        st.frags = obj.frags
    st.notes.extend(obj.notes)


def _apply_shinfo(st, obj):
    for k, v in obj.fields.items():
        if k in SHINFO_FIELDS:
            setattr(st, k, v)
    if obj.frags is not None:
        st.frags = obj.frags
    st.notes.extend(obj.notes)


def _normalise(st):
    if st.protocol is not None:
        st.protocol = ((st.protocol & 0xff) << 8) | ((st.protocol >> 8) & 0xff)
    if st.encapsulation is not None:
        st.encapsulation &= 1
    for k in ("tail", "end"):
        v = getattr(st, k)
        if v is not None and st.head is not None and v >= st.head and v > 0xffffffff:
            setattr(st, k, v - st.head)
            st.notes.append("%s printed as a pointer (0x%x): taken as offset %d from head"
                            % (k, v, v - st.head))


def _shinfo_addr(st):
    if st.head is None or st.end is None:
        return None
    return (st.head + st.end) & 0xffffffffffffffff


def _frags_bytes(st):
    if st.frags is not None and st.nr_frags is not None:
        st.frags_bytes = rules.frags_bytes(st.frags, st.nr_frags)
        if (st.nr_frags & 0xff) > len(st.frags):
            st.notes.append("nr_frags %d but %d frags printed" % (st.nr_frags,
                                                                   len(st.frags)))
    elif st.nr_frags == 0:
        st.frags_bytes = 0


def _is_hex(t):
    return bool(t) and all(c in "0123456789abcdefABCDEF" for c in t)


def _depth_delta(line):
    d = 0
    for kind, _v in _tokens(line):
        if kind == "lb":
            d += 1
        elif kind == "rb":
            d -= 1
    return d


def parse(lines):
    """A CrashSession from crash output: a str, bytes, or an iterable of
    lines (str or bytes). CrashParseError when it is none of these or holds
    nothing crash prints."""
    text_lines = _lines_of(lines)
    p = _Parser()
    try:
        p.run(text_lines)
        session = p.finish()
    except RecursionError:
        raise CrashParseError("input nested too deeply to read")
    if not p.seen_any:
        raise CrashParseError("no crash output found (no crash> prompt, struct sk_buff, "
                              "bt frame, rd dump or panic line)")
    return session


# ---------------------------------------------------------------------------
# findings

SEGMENT_SITES = ("skb_segment",)
SEGMENT_LIST_SITES = ("skb_segment_list", "__udp_gso_segment_list",
                      "__udpv4_gso_segment_list_csum", "__udpv6_gso_segment_list_csum")
TUNNEL_SEGMENT = ("skb_udp_tunnel_segment", "__skb_udp_tunnel_segment")
# __skb_gso_segment() sets SKB_GSO_CB(skb)->mac_offset and calls
# skb_mac_gso_segment(), whose every caller runs inside it (net/core/dev.c,
# gre_offload.c, mpls_gso.c, nsh.c in 6.1): a crash below either is on the GSO
# path, where skb->cb holds struct skb_gso_cb.
GSO_ENTRY = ("__skb_gso_segment", "skb_mac_gso_segment")


class SkbFinding(object):
    """What a session says about one skb.
    skb: the SkbState; text: its state, one line per topic, gso names in;
    gso_names, gso_family_dependent; family: the kernel family used;
    checks: rules.CHECK_* applied (the crash site's function); in_tunnel_segment;
    reasons: RSN_* bits decided; undecided: bits the session lacks fields for;
    reason_names, severity (event.SEV_*); layers: packet.decode() of the head
    (None when the memory does not hold it); packet: a packet.PcapPacket or
    None; notes: everything worth saying that is not a value."""

    def __init__(self, skb):
        self.skb = skb
        self.text = []
        self.gso_names = None
        self.gso_family_dependent = False
        self.family = None
        self.checks = 0
        self.in_tunnel_segment = False
        self.reasons = 0
        self.undecided = 0
        self.reason_names = []
        self.undecided_names = []
        self.severity = event.SEV_NONE
        self.layers = None
        self.packet = None
        self.notes = []

    def as_dict(self):
        return {
            "skb": self.skb.addr, "state": self.skb.as_dict(), "text": list(self.text),
            "gso_names": self.gso_names, "gso_family_dependent": self.gso_family_dependent,
            "family": self.family, "checks": self.checks,
            "in_tunnel_segment": self.in_tunnel_segment, "reasons": self.reasons,
            "reason_names": list(self.reason_names), "undecided": self.undecided,
            "undecided_names": list(self.undecided_names),
            "severity": event.SEVERITY_NAMES.get(self.severity, ""),
            "layers": self.layers, "packet_notes": self.packet.notes if self.packet else None,
            "notes": list(self.notes)}


def guess_family(session):
    """("4.18" | "6" | None, why)."""
    fam = gso.family_of_release(session.release)
    if fam:
        return fam, "kernel release %s" % session.release
    return None, "the session names no kernel release"


def _fmt(v, hexa=False):
    if v is None:
        return "?"
    return ("0x%x" % v) if hexa else str(v)


def _state_text(st, table):
    lines = []
    head = "skb 0x%x" % st.addr if st.addr is not None else "skb (address not printed)"
    linear = None
    if st.len is not None and st.data_len is not None:
        linear = (st.len - st.data_len) & 0xffffffff
    lines.append("%s: len=%s data_len=%s%s" % (
        head, _fmt(st.len), _fmt(st.data_len),
        " (linear %d)" % linear if linear is not None else ""))
    frag_list = st.frag_list
    lines.append("nr_frags=%s frags_bytes=%s frag_list=%s" % (
        _fmt(st.nr_frags), _fmt(st.frags_bytes),
        "NULL" if frag_list == 0 else _fmt(frag_list, True)))
    gt = st.gso_type
    lines.append("gso_size=%s gso_segs=%s gso_type=%s" % (
        _fmt(st.gso_size), _fmt(st.gso_segs),
        "?" if gt is None else "0x%x(%s)" % (gt, table.names(gt))))
    lines.append("encapsulation=%s protocol=%s cloned=%s" % (
        _fmt(st.encapsulation), _fmt(st.protocol, True) if st.protocol is not None else "?",
        _fmt(st.cloned)))
    if st.head is not None:
        lines.append("head=0x%x data=%s tail=%s end=%s shinfo=%s" % (
            st.head, "head+%d" % st.data_offset() if st.data is not None else "?",
            _fmt(st.tail), _fmt(st.end), _fmt(st.shinfo_addr, True)))
    lines.append("mac_header=%s network_header=%s transport_header=%s" % (
        _fmt(st.mac_header), _fmt(st.network_header), _fmt(st.transport_header)))
    lines.append("inner_mac_header=%s inner_network_header=%s inner_transport_header=%s" % (
        _fmt(st.inner_mac_header), _fmt(st.inner_network_header),
        _fmt(st.inner_transport_header)))
    return lines


_REASON_FIELDS = {
    "NULL_FRAGLIST_GSO": ("gso_size", "frag_list", "nr_frags", "data_len"),
    "FRAGLIST_NO_LIST": ("gso_size", "gso_type", "frag_list"),
    "TUNNEL_NO_ENCAP": ("gso_size", "gso_type", "encapsulation"),
    "TUNNEL_INNER_EQ_OUTER": ("gso_size", "gso_type", "inner_network_header",
                              "network_header"),
    "TUNNEL_OUTER_NOT_UDP": ("gso_size", "gso_type", "family", "l4proto"),
    "SEG_NO_PAYLOAD": ("gso_size", "frag_list", "len", "data_len", "nr_frags"),
    "SEG_UNCOVERED": ("gso_size", "frag_list", "len", "data_len", "nr_frags", "frags_bytes"),
    "SEG_BY_FRAGS_NO_LIST": ("gso_size", "frag_list"),
    "SEGLIST_NO_LIST": ("gso_size", "gso_type", "frag_list"),
}


_MISSING = {"family": "the outer IP header (memory at head + network_header)",
            "l4proto": "the outer IP header (memory at head + network_header)",
            "frags_bytes": "the frags[] sizes (struct skb_shared_info)"}


def _head_view(session, st, first=None):
    """(bytes, start offset from head) of the memory range that holds the
    start of the skb's packet (at `first` when given, else at the first of
    mac_header and network_header), or (None, first offset wanted)."""
    if st.head is None:
        return None, None
    want = [o for o in (st.mac_header, st.network_header) if o is not None and o != 0xffff]
    if first is None:
        first = min(want) if want else st.data_offset()
    if first is None:
        return None, None
    seg = session.segment(st.head + first)
    if seg is None:
        return None, first
    start, data = seg
    lo = max(start, st.head)
    return data[lo - start:], lo - st.head


def skb_findings(session, family=None):
    """A SkbFinding for each skb of the session (addressed ones by address,
    then the orphans). family: "4.18" or "6"; None: from the session's kernel
    release, else "6" (said in the notes)."""
    fam_note = None
    if family is None:
        family, why = guess_family(session)
        if family is None:
            family = "6"
            fam_note = "kernel family assumed 6 (5.6 and later): %s" % why
        else:
            fam_note = "kernel family %s from the %s" % (family, why)
    table = gso.for_family(family)
    site = session.crash_site()
    callers = session.callers()
    site_fn = site[0] if site else None
    checks = 0
    if site_fn in SEGMENT_SITES:
        checks = rules.CHECK_SEGMENT
    elif site_fn in SEGMENT_LIST_SITES:
        checks = rules.CHECK_SEGMENT_LIST
    in_tnl = any(fn in TUNNEL_SEGMENT for fn in callers)
    states = [session.skbs[a] for a in sorted(session.skbs)] + list(session.orphans)
    crash_skb = _crash_skb(session, states)
    out = []
    for st in states:
        f = SkbFinding(st)
        f.family = family
        if fam_note:
            f.notes.append(fam_note)
        f.notes.extend(st.notes)
        f.text = _state_text(st, table)
        if st.gso_type is not None:
            f.gso_names = table.names(st.gso_type)
            f.gso_family_dependent = gso.family_dependent(st.gso_type)
            if f.gso_family_dependent:
                f.notes.append("gso_type bits 0x%x are named differently by kernel family "
                               "(4.18: %s, 6: %s); a RHEL 8 kernel may have FRAGLIST backported"
                               % (gso.family_dependent_bits(st.gso_type),
                                  gso.for_family("4.18").names(st.gso_type),
                                  gso.for_family("6").names(st.gso_type)))
        applies = crash_skb is None or crash_skb is st
        on_gso = crash_skb is st and (site_fn in GSO_ENTRY or
                                      any(fn in GSO_ENTRY for fn in callers))
        _decode_into(session, st, f, on_gso)
        here = checks if applies else 0
        if checks and not applies:
            f.notes.append("not the skb in the crash frame's registers: crash rule not applied")
        elif checks and crash_skb is None:
            f.notes.append("the crash frame's registers name none of the skbs: the crash "
                           "rule is applied to each")
        f.checks = here
        f.in_tunnel_segment = applies and in_tnl
        if site:
            f.notes.append("crash site %s%s (from %s)%s" % (
                site[0], "+" + site[1] if site[1] else "", site[2],
                "; called from skb_udp_tunnel_segment: tunnel rules are the kernel's doing "
                "there and stay quiet (as the live tools' F_IN_TNL_SEG)"
                if f.in_tunnel_segment else ""))
        decided, undecided = rules.evaluate_partial(st, here, f.in_tunnel_segment, table)
        f.reasons, f.undecided = decided, undecided
        f.reason_names = event.reason_names(decided)
        f.undecided_names = event.reason_names(undecided)
        f.severity = rules.severity(decided)
        for name in f.undecided_names:
            missing = [_MISSING.get(k, k) for k in _REASON_FIELDS.get(name, ())
                       if getattr(st, k) is None]
            f.notes.append("%s undecided: the session lacks %s" % (
                name, ", ".join(sorted(set(missing))) or "a field"))
        if here & rules.CHECK_SEGMENT:
            _pushed_note(st, f)
        out.append(f)
    return out


def _crash_skb(session, states):
    addressed = [st for st in states if st.addr is not None]
    if len(states) == 1:
        return states[0]
    regs = {}
    for fr in session.frames:
        if fr.exception:
            regs = fr.regs
            break
    hits = [st for st in addressed if st.addr in regs.values()]
    if len(hits) == 1:
        return hits[0]
    return None


def _gso_outer(session, st, f, on_gso):
    """(offset, held): where the outer headers a tunnel GSO handler pulled
    start (SKB_GSO_CB(skb)->mac_offset, packet._pulled) and whether the
    memory holds them up to mac_header; (None, False) when there are none."""
    mo, mac = st.gso_mac_offset, st.mac_header
    if mo is None or mac is None or mac == 0xffff or st.head is None:
        return None, False
    if not on_gso:
        return None, False             # skb->cb is another layer's there
    if mo == mac:
        return None, False             # nothing pulled since __skb_gso_segment
    if not 0 <= mo < mac:
        f.notes.append("SKB_GSO_CB(skb)->mac_offset %d (skb->cb + 32) is not before "
                       "mac_header %d: not used" % (mo, mac))
        return None, False
    return mo, session.read(st.head + mo, mac - mo) is not None


def _rd_hint(st, first):
    return "`rd -8 0x%x %d` in crash adds it" % (st.head + first, max(0, st.tail - first))


def _decode_into(session, st, f, on_gso=False):
    outer, held = _gso_outer(session, st, f, on_gso)
    data, start = _head_view(session, st, outer if held else None)
    if data is None:
        if outer is not None and st.tail is not None:
            start = outer
        if st.head is not None and start is not None and st.tail is not None:
            f.notes.append("the memory does not hold the packet (head+%d..head+%d): %s"
                           % (start, st.tail, _rd_hint(st, start)))
        elif st.head is None:
            f.notes.append("skb->head unknown: no packet to decode")
        return
    if outer is not None and not held:
        f.notes.append("the memory holds the packet from head+%d, not the outer headers a "
                       "tunnel GSO handler pulled (head+%d..head+%d, from "
                       "SKB_GSO_CB(skb)->mac_offset): decoded from the skb's offsets; %s"
                       % (start, outer, st.mac_header,
                          _rd_hint(st, outer) if st.tail is not None else
                          "`rd -8 0x%x %d` in crash adds them" % (st.head + outer,
                                                                 st.mac_header - outer)))
    offsets = st.offsets()
    if outer is not None:
        offsets["gso_mac_offset"] = outer
    f.layers = packet.decode(data, offsets, start)
    f.notes.extend("packet: %s" % n for n in f.layers.notes)
    for layer in f.layers:
        # the header at network_header, as fill_state() reads it (the inner
        # one when a tunnel GSO handler moved the offsets)
        at_nh = layer["offset"] == st.network_header if st.network_header is not None \
            else not layer["inner"]
        if at_nh and layer["name"] in ("ipv4", "ipv6") and not layer["truncated"]:
            st.family = 4 if layer["name"] == "ipv4" else 6
            st.l4proto = layer["fields"].get("protocol",
                                             layer["fields"].get("next_header"))
            break
    if st.protocol is not None and st.protocol not in (packet.ETH_P_IP, packet.ETH_P_IPV6):
        st.family, st.l4proto = 0, 0    # fill_state() parses IP only
    skb = {"mac_header": st.mac_header, "network_header": st.network_header,
           "data": st.data_offset(), "tail": st.tail, "len": st.len,
           "gso_mac_offset": f.layers.gso_mac_offset}
    f.packet, notes = packet.skb_packet(data, skb, start)
    if f.packet is None:
        f.notes.extend(notes)
    elif st.data_len and st.frag_list == 0 and st.frags_bytes is not None and \
            st.frags_bytes < st.data_len:
        # the rest should be in the frags or the frag_list: say that it is not
        f.packet.notes = [n.split(": the rest is in page frags")[0] + (
            ": the rest should be in page frags or the frag_list, but the frags hold %d of "
            "data_len %d and frag_list is NULL" % (st.frags_bytes, st.data_len))
            if n.startswith("captured ") else n for n in f.packet.notes]


def _pushed_note(st, f):
    """At a fault inside skb_segment() the head skb is already pushed back to
    its MAC header (__skb_push(head_skb, doffset), net/core/skbuff.c): the
    dump's len - data_len counts the headers again, which the live tools,
    at skb_segment's entry, did not see."""
    if st.data_offset() is None or st.mac_header is None or st.mac_header == 0xffff:
        return
    if st.data_offset() != st.mac_header:
        return
    linear = None if st.len is None or st.data_len is None else st.len - st.data_len
    f.notes.append("skb->data is at mac_header: skb_segment() had already pushed the "
                   "headers back (__skb_push(head_skb, doffset)), so len - data_len = %s "
                   "counts them; at skb_segment's entry, where the live tools check, it "
                   "was smaller by doffset. An skb whose head held headers only shows "
                   "there as SEG_NO_PAYLOAD and here as SEG_UNCOVERED: the same NULL "
                   "frag_list dereference" % _fmt(linear))
