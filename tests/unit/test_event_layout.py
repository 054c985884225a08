"""The Python mirror of struct skb_event must match what a C compiler makes
of bpf/skb_event.h, field by field."""
import ctypes
import os
import shutil
import subprocess

import pytest

from skbtrace.kernel import event
from skbtrace import paths


def test_size_is_fixed_and_aligned():
    assert ctypes.sizeof(event.SkbEvent) == 256
    assert ctypes.sizeof(event.SkbEvent) % 8 == 0


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc not installed (make deps installs it)")
def test_offsets_match_gcc(tmp_path):
    fields = [name for name, _ in event.FIELDS]
    src = ['typedef unsigned char u8; typedef unsigned short u16; typedef unsigned int u32;',
           'typedef unsigned long long u64; typedef int s32; typedef long long s64;',
           '#include <stdio.h>', '#include <stddef.h>',
           '#include "%s"' % os.path.join(paths.bpf_dir(), "skb_event.h"),
           'int main(void) {', 'printf("size %zu\\n", sizeof(struct skb_event));']
    for f in fields:
        src.append('printf("%s %%zu %%zu\\n", offsetof(struct skb_event, %s), '
                   'sizeof(((struct skb_event *)0)->%s));' % (f, f, f))
    src.append("return 0; }")
    c = tmp_path / "layout.c"
    c.write_text("\n".join(src))
    exe = tmp_path / "layout"
    subprocess.check_call(["gcc", "-Wall", "-Werror", "-o", str(exe), str(c)])
    out = subprocess.check_output([str(exe)]).decode().split("\n")
    assert out[0] == "size %d" % ctypes.sizeof(event.SkbEvent)
    for line in out[1:]:
        if not line:
            continue
        name, off, size = line.split()
        field = getattr(event.SkbEvent, name)
        assert (field.offset, field.size) == (int(off), int(size)), name


def test_constants_parsed():
    assert event.EV_CREATE == 1 and event.EV_INCONSISTENT == 7 and event.EV_GSO_SET == 12
    assert event.RSN_CRASH_MASK == (event.RSN_SEG_NO_PAYLOAD | event.RSN_SEG_UNCOVERED |
                                    event.RSN_SEG_BY_FRAGS_NO_LIST | event.RSN_SEGLIST_NO_LIST)
    assert event.EVENT_NAMES[event.EV_CLEAR] == "CLEAR"
    assert event.reason_names(0x100) == ["SEGLIST_NO_LIST"]
    assert event.reason_names(0x21) == ["NULL_FRAGLIST_GSO", "SEG_NO_PAYLOAD"]
    assert "CRASH" not in "".join(n for _, n in event.REASON_BITS)


def test_every_reason_has_text():
    from skbtrace.kernel import rules
    for _bit, name in event.REASON_BITS:
        assert rules.TEXT.get(name), name
