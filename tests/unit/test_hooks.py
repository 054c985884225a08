import os
import re

import pytest

from skbtrace.kernel import hooks


def test_ids_and_names_unique():
    hs = hooks.watcher_hooks()
    assert [h.hook_id for h in hs] == list(range(len(hs)))
    assert len(set(h.name for h in hs)) == len(hs)
    assert len(hs) <= 64  # MAX_HOOKS in bpf/skb_event.h


def test_issue_hook_list_is_covered():
    names = set(h.name for h in hooks.watcher_hooks())
    for n in ("skb_gro_receive_list", "skb_gro_receive", "skb_segment_list", "__pskb_pull_tail",
              "pskb_expand_head", "___pskb_trim", "pskb_carve", "pskb_extract", "ip_do_fragment",
              "ip6_fragment", "skb_condense", "bpf_skb_pull_data", "__pskb_copy_fclone",
              "skb_realloc_headroom", "skb_copy", "skb_copy_expand", "udp4_ufo_fragment",
              "skb_segment"):
        assert n in names, n


def test_symbol_regex_is_anchored():
    seg = [h for h in hooks.watcher_hooks() if h.name == "skb_segment"][0]
    rx = re.compile(seg.symbol_regex())
    assert rx.match("skb_segment")
    assert rx.match("skb_segment.isra.0")
    assert rx.match("skb_segment.constprop.3")
    assert not rx.match("skb_segment_list")
    assert not rx.match("__skb_segment")
    udp = [h for h in hooks.watcher_hooks() if h.name == "udp4_ufo_fragment"][0]
    assert re.match(udp.symbol_regex(), "udp4_gso_segment")


def test_c_lines():
    hs = hooks.by_id(hooks.watcher_hooks())
    lines = [h.c_line() for h in hs.values()]
    assert "HOOK_SEGMENT(KPROBE, skb_segment, 19, PT_REGS_PARM1(ctx), 0, 0, 3, " \
        "PT_REGS_RC(ctx))" in lines
    frag = [h for h in hs.values() if h.name == "ip_do_fragment"][0]
    assert frag.c_line().startswith("HOOK_CONSUME(KPROBE, ip_do_fragment, %d, PT_REGS_PARM3(ctx)" % frag.hook_id)
    pull = [h for h in hs.values() if h.name == "__pskb_pull_tail"][0]
    args = "(KPROBE, __pskb_pull_tail, %d, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0, 0, " \
        "PT_REGS_RC(ctx))" % pull.hook_id
    # entry and return programs come from separate macro expansions (bcc 0.18)
    assert pull.c_line() == "HOOK_MUTATE%s\nHOOK_MUTATE_RET%s" % (args, args)


def test_fentry_lines_follow_the_kprobe_ones():
    hs = dict((h.name, h) for h in hooks.watcher_hooks())
    udp = hs["udp4_ufo_fragment"]
    udp.symbol, udp.backend, udp.nargs = "udp4_gso_segment", hooks.FENTRY, 2
    lines = udp.c_line().splitlines()
    # the kprobe program stays (the fallback); fentry names the kernel function
    assert lines[0].startswith("HOOK_SEGMENT(KPROBE, udp4_ufo_fragment, ")
    assert lines[1] == "HOOK_SEGMENT(FENTRY, udp4_gso_segment, %d, ctx[0], 0, 0, %d, ctx[2])" % (
        udp.hook_id, udp.flags)
    pull = hs["__pskb_pull_tail"]
    pull.symbol, pull.backend, pull.nargs = "__pskb_pull_tail", hooks.FENTRY, 2
    args = "(FENTRY, __pskb_pull_tail, %d, ctx[0], ctx[1], 0, 0, ctx[2])" % pull.hook_id
    assert pull.c_line().splitlines()[2:] == ["HOOK_MUTATE%s" % args, "HOOK_MUTATE_RET%s" % args]
    gro = hs["skb_gro_receive"]
    gro.skb, gro.symbol, gro.backend, gro.nargs = hooks.GRO_HEAD_PP, "skb_gro_receive", \
        hooks.FENTRY, 2
    assert "deref_skb_pp((void *)PT_REGS_PARM1(ctx))" in gro.c_line().splitlines()[0]
    assert "deref_skb_pp((void *)ctx[0])" in gro.c_line().splitlines()[2]


def test_scan_kallsyms(tmp_path):
    from skbtrace.live import loader
    ks = tmp_path / "kallsyms"
    ks.write_text("\n".join([
        "ffffffff81000000 T skb_segment",
        "ffffffff81000100 T skb_segment_list",
        "ffffffff81000200 t udp4_gso_segment.isra.0",
        "ffffffff81000300 t receive_buf\t[virtio_net]",
        "ffffffff81000400 t dup_fn",
        "ffffffff81000500 t dup_fn",
        "ffffffff81000600 t skb_copy.cold",
        "ffffffff81000700 T __init_begin",
        "ffffffff81000800 T pskb_expand_head",
        "ffffffff81000900 T __init_end",
        "ffffffff81000a00 D skb_copy",
    ]) + "\n")
    pats = [r"^(skb_segment)$", r"^(udp4_ufo_fragment|udp4_gso_segment)(\.(isra|constprop|part|cold|llvm)\.\d+)*$",
            r"^(receive_buf)$", r"^(dup_fn)$", r"^(pskb_expand_head)$", r"^(skb_copy)(\.cold)?$"]
    found, counts, modules = loader.scan_kallsyms(pats, str(ks))
    assert found[pats[0]] == ["skb_segment"]          # not skb_segment_list
    assert found[pats[1]] == ["udp4_gso_segment.isra.0"]
    assert found[pats[2]] == ["receive_buf"] and modules["receive_buf"] == "virtio_net"
    assert counts["dup_fn"] == 2
    assert found[pats[4]] == []                        # init section
    assert found[pats[5]] == []                        # .cold and data symbols


def test_every_hook_line_has_its_macros():
    """Each HOOK_<KIND>(...) line the loader generates must find a macro that
    defines exactly one function (bcc 0.18 drops the second function of a
    macro expansion), and a _RET macro where the kind has a return probe."""
    from skbtrace import paths
    for c_file, hs in (("skb_frag_list_watcher.c", hooks.watcher_hooks()),
                       ("skb_vxlan_source_detector.c", hooks.detector_hooks())):
        with open(os.path.join(paths.bpf_dir(), c_file)) as f:
            text = f.read()
        macros = dict(re.findall(
            r"#define (HOOK_\w+)\(B, fn, id, SKB, AUX, AUX2, \w+, RET\) \\\n(.*)\n", text))
        assert macros, c_file
        for name, body in macros.items():
            # one function: B##_ENTER(fn) or B##_LEAVE(fn), which the backend
            # macros of skb_common.h turn into a single program each
            want = "B##_LEAVE(fn)" if name.endswith("_RET") else "B##_ENTER(fn)"
            assert body.startswith(want + " {") and body.count("(fn)") == 1, body
        for h in hooks.table(hs):
            for line in h.c_line().split("\n"):
                assert line.split("(")[0] in macros, (c_file, line)
            assert ("HOOK_%s_RET" % h.kind in macros) == h.has_return(), h


def module_tree(tmp_path, builtin=(), dep=()):
    rel = tmp_path / "6.1.0-test"
    rel.mkdir()
    (rel / "modules.builtin").write_text("".join("kernel/%s.ko\n" % m for m in builtin))
    (rel / "modules.dep").write_text("".join("kernel/net/%s.ko.xz: \n" % m for m in dep))
    return str(tmp_path)


def test_hooks_in_modules():
    # net/ipv4/Makefile: udp_tunnel-y := udp_tunnel_core.o; net/ipv6/Makefile:
    # obj-$(CONFIG_NET_UDP_TUNNEL) += ip6_udp_tunnel.o (6.1 and 4.18)
    mods = dict((h.name, h.module) for h in hooks.detector_hooks() if h.module)
    assert mods == {"receive_buf": "virtio_net", "udp_tunnel_xmit_skb": "udp_tunnel",
                    "udp_tunnel6_xmit_skb": "ip6_udp_tunnel"}


@pytest.mark.parametrize("builtin,dep,reason", [
    ((), ("ipv4/udp_tunnel", "ipv6/ip6_udp_tunnel"),
     "module udp_tunnel not loaded: restart the tool after `modprobe udp_tunnel` (or after the "
     "first vxlan, geneve or fou device is created) (a kprobe cannot wait for a module)"),
    (("net/ipv4/udp_tunnel",), (), "not in this kernel (absent, renamed or inlined)"),
    ((), ("ipv6/ip6_udp_tunnel",), "module udp_tunnel does not exist for this kernel (6.1.0-test)"),
])
def test_hook_in_a_module_that_is_not_loaded(monkeypatch, tmp_path, builtin, dep, reason):
    from skbtrace.live import loader
    monkeypatch.setattr(loader, "MODULES_DIR", module_tree(tmp_path, builtin, dep))
    monkeypatch.setattr(loader.platform, "release", lambda: "6.1.0-test")
    monkeypatch.setattr(loader, "loaded_modules", lambda: set(["virtio_net"]))
    monkeypatch.setattr(loader, "scan_kallsyms", lambda pats: (
        dict((p, ["skb_segment"] if "skb_segment" in p else []) for p in pats), {}, {}))
    hs = [h for h in hooks.detector_hooks() if h.name in ("udp_tunnel_xmit_skb", "skb_segment",
                                                          "receive_buf")]
    loader.resolve_hooks(None, hs)
    why = dict((h.name, h.skip_reason) for h in hs)
    assert why["udp_tunnel_xmit_skb"] == reason
    assert why["skb_segment"] is None
    # loaded, yet its symbol missing: the usual reason
    assert why["receive_buf"] == "not in this kernel (absent, renamed or inlined)"


def test_module_loaded_later_is_announced_once(monkeypatch):
    from skbtrace.live import loader
    now = [100.0]
    loaded = [set()]
    monkeypatch.setattr(loader, "loaded_modules", lambda: loaded[0])
    hs = hooks.detector_hooks()
    for h in hs:
        h.symbol = None if h.module else h.name
        h.skip_reason = "module %s not loaded: restart ..." % h.module if h.module else None
    w = loader.ModuleWatch(hs, clock=lambda: now[0])
    assert w.check() == []                       # not due yet
    now[0] += 5
    assert w.check() == []                       # due, nothing loaded
    loaded[0] = set(["udp_tunnel"])
    now[0] += 1
    assert w.check() == []                       # checked 1 s ago: not due
    now[0] += 5
    assert w.check() == ["module udp_tunnel was loaded after the start: restart the tool to "
                         "trace udp_tunnel_xmit_skb"]
    now[0] += 5
    assert w.check() == []                       # said once
    assert sorted(w.waiting) == ["ip6_udp_tunnel", "virtio_net"]
