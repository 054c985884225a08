"""What each consistency rule means, for the output and the docs.

The rules themselves run in the kernel (eval_rules() in bpf/skb_common.h);
the bit values come from bpf/skb_event.h through skbtrace.kernel.event. evaluate()
below mirrors them in Python for states read from a vmcore.
"""
from skbtrace.kernel import event, gso

TEXT = {
    "NULL_FRAGLIST_GSO": "frag_list NULL, gso_size>0, nr_frags 0, data_len 0 "
                         "(the seeds' rule; harmless while the head holds the payload)",
    "FRAGLIST_NO_LIST": "SKB_GSO_FRAGLIST set but frag_list is NULL",
    "TUNNEL_NO_ENCAP": "UDP_TUNNEL(_CSUM) set but skb->encapsulation is 0",
    "TUNNEL_INNER_EQ_OUTER": "UDP_TUNNEL(_CSUM) set but inner network header == outer",
    "TUNNEL_OUTER_NOT_UDP": "UDP_TUNNEL(_CSUM) set but the outer L4 protocol is not UDP",
    "SEG_NO_PAYLOAD": "skb_segment: no payload in the head, no frags, no frag_list "
                      "(dereferences the NULL frag_list)",
    "SEG_UNCOVERED": "skb_segment: data_len larger than the frags hold and no frag_list "
                     "(runs out of frags, dereferences the NULL frag_list)",
    "SEG_BY_FRAGS_NO_LIST": "skb_segment: gso_size GSO_BY_FRAGS without frag_list "
                            "(reads frag_list->len)",
    "SEGLIST_NO_LIST": "skb_segment_list: SKB_GSO_FRAGLIST skb without frag_list (the UDP "
                       "caller reads the missing second segment; fixed upstream by a1e40ac5b5e9)",
}

SEVERITY_TEXT = {
    event.SEV_WARNING: "state the kernel survives but worth knowing (e.g. seeds' rule with "
                       "the payload in the head, tunnel metadata mismatch)",
    event.SEV_CRITICAL: "segmentation would dereference the missing frag_list",
}


def describe(bits):
    return [(name, TEXT.get(name, "")) for name in event.reason_names(bits)]


# ---------------------------------------------------------------------------
# The rules in Python: a line-by-line mirror of frags_bytes(), crash_reasons()
# and eval_rules() in bpf/skb_common.h, for states read from a vmcore (the
# post-mortem tools). tests/unit/test_rules_mirror.py compiles the C bodies
# with gcc and compares both over generated states. The C works in u8/u16/u32:
# so does the mirror.

CHECK_SEGMENT = 2        # skb_segment() (the C's CHECK_SEGMENT)
CHECK_SEGMENT_LIST = 4   # skb_segment_list() (CHECK_SEGMENT_LIST)

# include/linux/skbuff.h: 65536/PAGE_SIZE + 1 with 4 KiB pages (6.1 and 4.18)
MAX_SKB_FRAGS = 17
GSO_BY_FRAGS = 0xFFFF
IPPROTO_UDP = 17

# The state fields each function reads. A state is any object with these
# attributes, or a dict with these keys. `frags_bytes` may be given instead
# of `frags` (the sizes of skb_shinfo()->frags[], in order).
STATE_FIELDS = ("len", "data_len", "gso_size", "gso_type", "frag_list", "nr_frags",
                "frags_bytes", "encapsulation", "network_header",
                "inner_network_header", "family", "l4proto")

_U8, _U16, _U32 = 0xff, 0xffff, 0xffffffff


class StateError(ValueError):
    """A state lacks a field the rules read (None or absent)."""


def _get(state, name):
    if isinstance(state, dict):
        return state.get(name)
    return getattr(state, name, None)


def _need(state, name, mask):
    v = _get(state, name)
    if v is None:
        raise StateError("state has no %s" % name)
    return int(v) & mask


def frags_bytes(frag_sizes, nr_frags, max_frags=MAX_SKB_FRAGS):
    """What frags_bytes() adds up: the first nr_frags (a u8) of the frags'
    sizes, never past MAX_SKB_FRAGS; a size missing from frag_sizes counts 0."""
    total = 0
    n = int(nr_frags) & _U8
    for i in range(max_frags):
        if i < n and i < len(frag_sizes):
            total = (total + (int(frag_sizes[i]) & _U32)) & _U32
    return total


def _frags_bytes_of(state):
    sizes = _get(state, "frags")
    if sizes is not None:
        return frags_bytes(sizes, _need(state, "nr_frags", _U8))
    return _need(state, "frags_bytes", _U32)


def _kgso(gso_table):
    if gso_table is None:
        gso_table = gso.DEFAULT
    return (gso_table.bit("FRAGLIST"), gso_table.tunnel_mask())


def crash_reasons(state, checks, gso_table=None):
    """crash_reasons(): the crash rule for the function(s) named by checks."""
    kgso_fraglist, _tunnel = _kgso(gso_table)
    gso_size = _need(state, "gso_size", _U16)
    if gso_size == 0 or _need(state, "frag_list", ~0):
        return 0
    r = 0
    if (checks & CHECK_SEGMENT_LIST) and (_need(state, "gso_type", _U32) & kgso_fraglist):
        r |= event.RSN_SEGLIST_NO_LIST
    if checks & CHECK_SEGMENT:
        length = _need(state, "len", _U32)
        data_len = _need(state, "data_len", _U32)
        headlen = (length - data_len) & _U32
        if gso_size == GSO_BY_FRAGS:
            r |= event.RSN_SEG_BY_FRAGS_NO_LIST
        elif headlen == 0 and _need(state, "nr_frags", _U8) == 0:
            r |= event.RSN_SEG_NO_PAYLOAD
        elif data_len > _frags_bytes_of(state):
            r |= event.RSN_SEG_UNCOVERED
    return r


def evaluate(state, checks, in_tnl_seg=False, gso_table=None):
    """eval_rules(): the RSN_* bits for state entering the function(s) named
    by checks (CHECK_SEGMENT, CHECK_SEGMENT_LIST; other bits ignored), with
    in_tnl_seg true inside skb_udp_tunnel_segment() (the tunnel rules are then
    the kernel's doing and stay quiet). KGSO_* bits come from gso_table
    (default: the 6.1 table). family/l4proto None mean "not parsed" (the C's
    family 0: the rule on the outer protocol stays quiet). StateError when
    the state lacks another field read (evaluate_partial() takes those)."""
    kgso_fraglist, kgso_tunnel = _kgso(gso_table)
    gt = _need(state, "gso_type", _U32)
    gs = _need(state, "gso_size", _U16)
    if gs == 0:
        return 0
    r = 0
    frag_list = _need(state, "frag_list", ~0)
    if not frag_list and _need(state, "nr_frags", _U8) == 0 and \
            _need(state, "data_len", _U32) == 0:
        r |= event.RSN_NULL_FRAGLIST_GSO
    if (gt & kgso_fraglist) and not frag_list:
        r |= event.RSN_FRAGLIST_NO_LIST
    if (gt & kgso_tunnel) and not in_tnl_seg:
        if not _need(state, "encapsulation", 1):
            r |= event.RSN_TUNNEL_NO_ENCAP
        if _need(state, "inner_network_header", _U16) == _need(state, "network_header", _U16):
            r |= event.RSN_TUNNEL_INNER_EQ_OUTER
        family = _get(state, "family")     # None: not parsed, the C's 0
        if family and (int(family) & _U8) and \
                (int(_get(state, "l4proto") or 0) & _U8) != IPPROTO_UDP:
            r |= event.RSN_TUNNEL_OUTER_NOT_UDP
    return r | crash_reasons(state, checks, gso_table)


# Partial states (a vmcore rarely has every field printed): the same rules in
# three-valued logic, None standing for "not known". A bit is decided when
# every completion of the unknown fields gives it the same value.

def _and3(*terms):
    if any(t is False for t in terms):
        return False
    if all(t is True for t in terms):
        return True
    return None


def _not3(t):
    return None if t is None else not t


def _opt(state, name, mask):
    v = _get(state, name)
    return None if v is None else int(v) & mask


def _cmp3(a, b, op):
    if a is None or b is None:
        return None
    return op(a, b)


def evaluate_partial(state, checks, in_tnl_seg=False, gso_table=None):
    """(decided bits, undecided bits) for a state whose fields may be None.
    With every field known this is (evaluate(...), 0)."""
    kgso_fraglist, kgso_tunnel = _kgso(gso_table)
    gt = _opt(state, "gso_type", _U32)
    gs = _opt(state, "gso_size", _U16)
    fl = _opt(state, "frag_list", ~0)
    nr = _opt(state, "nr_frags", _U8)
    length = _opt(state, "len", _U32)
    data_len = _opt(state, "data_len", _U32)
    gs_on = None if gs is None else gs != 0
    no_list = None if fl is None else fl == 0

    def bit(mask):
        return None if gt is None else bool(gt & mask)

    cond = {}
    cond[event.RSN_NULL_FRAGLIST_GSO] = _and3(
        gs_on, no_list, _cmp3(nr, 0, lambda a, b: a == b),
        _cmp3(data_len, 0, lambda a, b: a == b))
    cond[event.RSN_FRAGLIST_NO_LIST] = _and3(gs_on, bit(kgso_fraglist), no_list)
    tunnel = _and3(gs_on, bit(kgso_tunnel), not in_tnl_seg)
    encap = _opt(state, "encapsulation", 1)
    cond[event.RSN_TUNNEL_NO_ENCAP] = _and3(tunnel, _cmp3(encap, 0, lambda a, b: a == b))
    cond[event.RSN_TUNNEL_INNER_EQ_OUTER] = _and3(tunnel, _cmp3(
        _opt(state, "inner_network_header", _U16), _opt(state, "network_header", _U16),
        lambda a, b: a == b))
    family = _opt(state, "family", _U8)
    cond[event.RSN_TUNNEL_OUTER_NOT_UDP] = _and3(
        tunnel, _cmp3(family, 0, lambda a, b: a != b),
        _cmp3(_opt(state, "l4proto", _U8), IPPROTO_UDP, lambda a, b: a != b))
    crash = _and3(gs_on, no_list)
    cond[event.RSN_SEGLIST_NO_LIST] = _and3(crash, bool(checks & CHECK_SEGMENT_LIST),
                                            bit(kgso_fraglist))
    seg = _and3(crash, bool(checks & CHECK_SEGMENT))
    by_frags = None if gs is None else gs == GSO_BY_FRAGS
    headlen = None if length is None or data_len is None else (length - data_len) & _U32
    no_payload = _and3(_cmp3(headlen, 0, lambda a, b: a == b),
                       _cmp3(nr, 0, lambda a, b: a == b))
    try:
        fb = _frags_bytes_of(state)
    except StateError:
        fb = None
    uncovered = _cmp3(data_len, fb, lambda a, b: a > b)
    cond[event.RSN_SEG_BY_FRAGS_NO_LIST] = _and3(seg, by_frags)
    cond[event.RSN_SEG_NO_PAYLOAD] = _and3(seg, _not3(by_frags), no_payload)
    cond[event.RSN_SEG_UNCOVERED] = _and3(seg, _not3(by_frags), _not3(no_payload), uncovered)
    decided = undecided = 0
    for b, c in cond.items():
        if c is True:
            decided |= b
        elif c is None:
            undecided |= b
    return decided, undecided


def severity(bits):
    """severity_of(): SEV_CRITICAL for a crash reason, SEV_WARNING for others."""
    if bits & event.RSN_CRASH_MASK:
        return event.SEV_CRITICAL
    return event.SEV_WARNING if bits else event.SEV_NONE
