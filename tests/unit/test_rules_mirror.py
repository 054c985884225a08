"""skbtrace.kernel.rules.evaluate() must be the C of bpf/skb_common.h.

The bodies of frags_bytes(), crash_reasons() and eval_rules() are cut out of
the header by text and compiled with the host gcc against a small mock of
the kernel structs (just the fields they read); the program reads states on
stdin and prints what the C computes. Both families' KGSO_* values are
tried (skbtrace.kernel.gso: 6.1 with FRAGLIST, 4.18 without).
"""
import os
import random
import re
import shutil
import subprocess

import pytest

from skbtrace.kernel import event, gso, rules
from skbtrace import paths

try:
    from hypothesis import given, settings, HealthCheck, strategies as st
except ImportError:     # Debian: python3-hypothesis
    given = None

needs_gcc = pytest.mark.skipif(not shutil.which("gcc"),
                               reason="gcc not installed (make deps installs it)")

FIELDS = ("checks", "in_tnl", "len", "data_len", "encapsulation", "network_header",
          "inner_network_header", "nr_frags", "gso_size", "gso_type", "frag_list",
          "family", "l4proto")
NFRAGS = rules.MAX_SKB_FRAGS


def c_function(src, name):
    m = re.search(r"^static __always_inline \w+ %s\(.*?^\}\n" % name, src, re.M | re.S)
    assert m, "%s() not found in skb_common.h" % name
    return m.group(0)


def c_define(src, name):
    m = re.search(r"^#define %s\b.*$" % name, src, re.M)
    assert m, "#define %s not found" % name
    return m.group(0)


PRELUDE = r"""
#include <stdio.h>
#include <stdint.h>
typedef uint8_t u8; typedef uint16_t u16; typedef uint32_t u32; typedef uint64_t u64;
typedef int32_t s32; typedef int64_t s64;
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))
#define IPPROTO_UDP 17
#define MAX_SKB_FRAGS %(nfrags)d
#include "%(event_h)s"
%(kgso)s
typedef struct { void *bv_page; unsigned int bv_len; unsigned int bv_offset; } skb_frag_t;
static inline unsigned int skb_frag_size(const skb_frag_t *frag) { return frag->bv_len; }
struct sk_buff {
	unsigned int len, data_len;
	u8 encapsulation:1;
	u16 network_header, inner_network_header;
};
struct skb_shared_info {
	u8 nr_frags;
	unsigned short gso_size;
	struct sk_buff *frag_list;
	unsigned int gso_type;
	skb_frag_t frags[MAX_SKB_FRAGS];
};
struct scratch_t {
	struct skb_event ev;
	struct sk_buff skb;
	struct skb_shared_info sh;
};
"""

MAIN = r"""
int main(void)
{
	static struct scratch_t s;
	unsigned long long v[%(nvals)d];
	int i;

	for (;;) {
		for (i = 0; i < %(nvals)d; i++)
			if (scanf("%%llu", &v[i]) != 1)
				return 0;
		s.skb.len = v[2];
		s.skb.data_len = v[3];
		s.skb.encapsulation = v[4];
		s.skb.network_header = v[5];
		s.skb.inner_network_header = v[6];
		s.sh.nr_frags = v[7];
		s.sh.gso_size = v[8];
		s.sh.gso_type = v[9];
		s.sh.frag_list = (struct sk_buff *)(uintptr_t)v[10];
		s.ev.family = v[11];
		s.ev.l4proto = v[12];
		for (i = 0; i < MAX_SKB_FRAGS; i++)
			s.sh.frags[i].bv_len = v[13 + i];
		printf("%%u %%u %%u\n", frags_bytes(&s.sh), crash_reasons(&s, v[0]),
		       eval_rules(&s, v[0], (int)v[1]));
		fflush(stdout);
	}
}
"""


def build(tmp_path, table, tag):
    with open(os.path.join(paths.bpf_dir(), "skb_common.h")) as f:
        src = f.read()
    parts = [PRELUDE % {"nfrags": NFRAGS,
                        "event_h": os.path.join(paths.bpf_dir(), "skb_event.h"),
                        "kgso": "\n".join(table.c_defines())}]
    parts += [c_define(src, "GSO_BY_FRAGS"), c_define(src, "KGSO_TUNNEL_BITS"),
              c_define(src, "CHECK_SEGMENT"), c_define(src, "CHECK_SEGMENT_LIST")]
    parts += [c_function(src, n) for n in ("frags_bytes", "crash_reasons", "eval_rules")]
    parts.append(MAIN % {"nvals": len(FIELDS) + NFRAGS})
    c = tmp_path / ("rules_%s.c" % tag)
    c.write_text("\n".join(parts))
    exe = tmp_path / ("rules_%s" % tag)
    subprocess.check_call(["gcc", "-O1", "-Wall", "-Werror", "-Wno-unknown-pragmas",
                           "-o", str(exe), str(c)])
    return str(exe)


def line_of(state):
    return " ".join(str(state[k]) for k in FIELDS) + " " + " ".join(
        str(x) for x in state["frags"])


def python_of(state, table):
    fb = rules.frags_bytes(state["frags"], state["nr_frags"])
    return (fb, rules.crash_reasons(state, state["checks"], table),
            rules.evaluate(state, state["checks"], state["in_tnl"], table))


EDGE32 = (0, 1, 52, 1448, 2896, 2948, 2990, 65535, 65536, 0x7fffffff, 0xffffffff)
EDGE16 = (0, 1, 14, 268, 1348, 1448, 0xfffe, 0xffff)


def random_state(rnd, table):
    def pick(edges, bits):
        return rnd.choice(edges) if rnd.random() < 0.6 else rnd.getrandbits(bits)
    length = pick(EDGE32, 32)
    data_len = pick(EDGE32, 32) if rnd.random() < 0.5 else \
        (length - rnd.choice((0, 0, 52, 1, 94))) & 0xffffffff
    names = [b for _, b in table.bits]
    gso_type = rnd.getrandbits(32) if rnd.random() < 0.2 else \
        sum(b for b in names if rnd.random() < 0.25) | rnd.choice((0, 0, 1 << 18, 0x403))
    frags = [rnd.choice((0, 1448, 4096, 0xffffffff, rnd.getrandbits(32)))
             if rnd.random() < 0.7 else 0 for _ in range(NFRAGS)]
    return {
        "checks": rnd.choice((0, 1, 2, 4, 6, 8, 0x2 | 0x10, rnd.getrandbits(8))),
        "in_tnl": rnd.choice((0, 1)),
        "len": length, "data_len": data_len,
        "encapsulation": rnd.choice((0, 1)),
        "network_header": pick(EDGE16, 16),
        "inner_network_header": pick(EDGE16, 16),
        "nr_frags": rnd.choice((0, 0, 1, 2, 16, 17, 18, 255, rnd.getrandbits(8))),
        "gso_size": pick(EDGE16, 16),
        "gso_type": gso_type,
        "frag_list": rnd.choice((0, 0, 0xffff888007ce9f00)),
        "family": rnd.choice((0, 4, 6, rnd.getrandbits(8))),
        "l4proto": rnd.choice((0, 6, 17, 4, rnd.getrandbits(8))),
        "frags": frags,
    }


TABLES = [("6", gso.for_family("6")), ("4_18", gso.for_family("4.18"))]


@needs_gcc
@pytest.mark.parametrize("tag,table", TABLES)
def test_mirror_equals_c_seeded(tmp_path, tag, table):
    exe = build(tmp_path, table, tag)
    rnd = random.Random(20261130)
    states = [random_state(rnd, table) for _ in range(20000)]
    out = subprocess.run([exe], input="\n".join(line_of(s) for s in states).encode(),
                         stdout=subprocess.PIPE, check=True).stdout.decode().splitlines()
    assert len(out) == len(states)
    fired = 0
    for state, line in zip(states, out):
        c = tuple(int(x) for x in line.split())
        assert python_of(state, table) == c, state
        fired |= c[2]
        # the three-valued version agrees when everything is known
        assert rules.evaluate_partial(state, state["checks"], state["in_tnl"], table) == \
            (c[2], 0)
    # every rule fired at least once (FRAGLIST ones only where the family has the bit)
    want = 0
    for _bit, name in event.REASON_BITS:
        want |= event.REASON_NAMES[name]
    if not table.bit("FRAGLIST"):
        want &= ~(event.RSN_FRAGLIST_NO_LIST | event.RSN_SEGLIST_NO_LIST)
    assert fired == want


class _Runner(object):
    def __init__(self, exe):
        self.p = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, state):
        self.p.stdin.write((line_of(state) + "\n").encode())
        self.p.stdin.flush()
        return tuple(int(x) for x in self.p.stdout.readline().split())

    def close(self):
        self.p.stdin.close()
        self.p.wait()


if given is not None:
    u32 = st.one_of(st.sampled_from(EDGE32), st.integers(0, 0xffffffff))
    u16 = st.one_of(st.sampled_from(EDGE16), st.integers(0, 0xffff))
    u8 = st.integers(0, 255)
    states = st.fixed_dictionaries({
        "checks": st.one_of(st.sampled_from((0, 2, 4, 6)), u8),
        "in_tnl": st.integers(0, 1), "len": u32, "data_len": u32,
        "encapsulation": st.integers(0, 1), "network_header": u16,
        "inner_network_header": u16,
        "nr_frags": st.one_of(st.integers(0, 3), st.sampled_from((16, 17, 18)), u8),
        "gso_size": u16,
        "gso_type": st.one_of(st.sampled_from((0x403, 0x40000, 0x40403, 0x800, 0x20000)),
                              st.integers(0, 0xffffffff)),
        "frag_list": st.sampled_from((0, 0xffff888007ce9f00)),
        "family": st.sampled_from((0, 4, 6)), "l4proto": st.sampled_from((6, 17, 4, 0)),
        "frags": st.lists(st.one_of(st.sampled_from((0, 1448, 0xffffffff)),
                                    st.integers(0, 0xffffffff)),
                          min_size=NFRAGS, max_size=NFRAGS),
    })


@needs_gcc
@pytest.mark.skipif(given is None, reason="hypothesis not installed (Debian python3-hypothesis)")
@pytest.mark.parametrize("tag,table", TABLES)
def test_mirror_equals_c_hypothesis(tmp_path, tag, table):
    runner = _Runner(build(tmp_path, table, tag))

    @settings(max_examples=500, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(states)
    def check(state):
        assert python_of(state, table) == runner.ask(state)

    try:
        check()
    finally:
        runner.close()


def test_partial_decides_only_what_every_completion_agrees_on():
    """A bit evaluate_partial() decides is the same for every value of the
    unknown fields; an undecided one differs for at least one of them in
    most cases (checked by sampling)."""
    rnd = random.Random(7)
    table = gso.for_family("6")
    optional = [f for f in FIELDS if f not in ("checks", "in_tnl")] + ["frags"]
    for _ in range(3000):
        full = random_state(rnd, table)
        hidden = [f for f in optional if rnd.random() < 0.3]
        partial = dict(full)
        for f in hidden:
            partial[f] = None
        decided, undecided = rules.evaluate_partial(partial, full["checks"], full["in_tnl"],
                                                    table)
        assert decided & undecided == 0
        for _ in range(8):
            filled = dict(partial)
            other = random_state(rnd, table)
            for f in hidden:
                filled[f] = other[f]
            got = rules.evaluate(filled, full["checks"], full["in_tnl"], table)
            assert got & ~undecided == decided, (partial, filled)


def test_evaluate_reads_only_what_it_needs():
    """gso_size 0 ends the rules before anything else is read, as in the C."""
    state = {"gso_size": 0, "gso_type": 0x403}
    assert rules.evaluate(state, rules.CHECK_SEGMENT) == 0
    with pytest.raises(rules.StateError):
        rules.evaluate({"gso_size": 1448, "gso_type": 0x403}, rules.CHECK_SEGMENT)
    assert rules.CHECK_SEGMENT == 2 and rules.CHECK_SEGMENT_LIST == 4
