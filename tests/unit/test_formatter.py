"""Golden lines for every watcher event type and marker."""
import json

from skbtrace.kernel import decoder, event, gso, hooks
from skbtrace.output.formatter import Formatter
from skbtrace.live.stats import Stats, WATCHER_EVENTS

from helpers import FixedClock, ip4, make_event, to_bytes

HOOKS = hooks.watcher_hooks()
ID = dict((h.name, h.hook_id) for h in HOOKS)
SKB = "0xffff888abc123000"
FL = 0xffff888def456000


def rec(**kw):
    return decoder.Decoder(HOOKS).decode(to_bytes(make_event(**kw)))


def fmt(verbose=False, json_mode=False):
    return Formatter(FixedClock(), gso.DEFAULT, verbose=verbose, json_mode=json_mode)


def line(**kw):
    out = fmt().lines(rec(**kw))
    assert len(out) == 1
    return out[0]


def test_header():
    h = fmt().header()
    assert h[0].split() == ["TIME", "CPU", "EVENT", "FUNCTION", "|", "SKB", "|", "CHANGE"]
    assert set(h[1]) == {"-"}
    hv = fmt(verbose=True).header()[0].split()
    assert hv[:6] == ["TIME", "CPU", "COMM", "PID", "EVENT", "FUNCTION"]
    assert fmt(json_mode=True).header() == []


def test_create():
    assert line(event=event.EV_CREATE, hook_id=ID["skb_gro_receive_list"], frag_list_after=FL,
                ts_ns=3723123456000) == (
        "01:02:03.123456 2   CREATE       skb_gro_receive_list     | %s | NULL -> 0xffff888def456000"
        % SKB)


def test_clear_marker_and_last():
    s = line(event=event.EV_CLEAR, hook_id=ID["skb_segment_list"], frag_list_before=FL,
             last_hook=ID["skb_gro_receive_list"] + 1, ts_ns=2000000000, last_ts_ns=1999990000)
    assert s.endswith("| 0xffff888def456000 -> NULL [!!] last=skb_gro_receive_list(+10us)")
    assert " CLEAR " in s


def test_modify():
    s = line(event=event.EV_MODIFY, hook_id=ID["__pskb_pull_tail"], frag_list_before=FL,
             frag_list_after=FL + 0x100)
    assert "| 0xffff888def456000 -> 0xffff888def456100 last=none" in s


def test_inconsistent_critical():
    s = line(event=event.EV_INCONSISTENT, hook_id=ID["skb_segment"], severity=event.SEV_CRITICAL,
             reasons=event.RSN_NULL_FRAGLIST_GSO | event.RSN_SEG_NO_PAYLOAD,
             gso_size_before=1348, gso_size_after=1348, gso_type_before=0x403,
             gso_type_after=0x403, len=0, last_hook=ID["bpf_skb_pull_data"] + 1,
             last_ts_ns=500000000, ts_ns=500050000)
    assert s == ("00:00:00.500050 2   INCONSISTENT skb_segment              | %s | NULL (no change) "
                 "[CRITICAL] reasons=NULL_FRAGLIST_GSO,SEG_NO_PAYLOAD gso_size=1348 "
                 "gso_type=0x403(TCPV4|DODGY|UDP_TUNNEL) len=0 data_len=0 nr_frags=0 "
                 "frags_bytes=0 last=bpf_skb_pull_data(+50us)" % SKB)


def test_inconsistent_warning_and_stale_last():
    s = line(event=event.EV_INCONSISTENT, hook_id=ID["skb_segment"], severity=event.SEV_WARNING,
             reasons=event.RSN_NULL_FRAGLIST_GSO, gso_size_after=1000, gso_type_after=0x60000,
             last_hook=ID["skb_segment_list"] + 1, last_ts_ns=1, ts_ns=1001,
             flags=event.F_LAST_STALE)
    assert "[WARNING] reasons=NULL_FRAGLIST_GSO gso_size=1000 gso_type=0x60000(UDP_L4|FRAGLIST)" in s
    assert s.endswith("last=skb_segment_list(+1us)(other head)")


def test_access_consume_has_ret():
    s = line(event=event.EV_ACCESS, hook_id=ID["ip_do_fragment"], frag_list_before=FL,
             flags=event.F_AFTER_UNREADABLE, ret=-22)
    assert "| 0xffff888def456000 (no change) ret=-22 last=none" in s


def test_propagate_and_copy_fail():
    s = line(event=event.EV_PROPAGATE, hook_id=ID["__pskb_copy_fclone"], frag_list_after=FL,
             new_skb=0xffff888000000100)
    assert s.endswith("| 0xffff888def456000 new_skb=0xffff888000000100")
    s = line(event=event.EV_COPY_FAIL, hook_id=ID["skb_copy"], frag_list_before=FL,
             gso_type_before=0x60000, flags=event.F_AFTER_UNREADABLE)
    assert s.endswith("| 0xffff888def456000 new_skb=NULL gso_type=0x60000(UDP_L4|FRAGLIST) "
                      "(the copy refuses SKB_GSO_FRAGLIST)")


def test_verbose_two_lines_with_flows():
    r = rec(event=event.EV_CREATE, hook_id=ID["skb_gro_receive_list"], frag_list_after=FL,
            gso_size_after=1348, gso_type_before=0, gso_type_after=0x60000, gso_segs=3,
            family=4, l4proto=17, saddr=ip4("198.18.1.1"), daddr=ip4("198.18.2.1"),
            sport=5201, dport=35678, inner_family=4, inner_l4proto=6,
            inner_saddr=ip4("198.18.5.1"), inner_daddr=ip4("198.18.6.1"), inner_sport=1,
            inner_dport=2, data_len_before=0, data_len_after=1400, ifindex=3, iif=3,
            flags=event.F_ENCAP)
    out = fmt(verbose=True).lines(r)
    assert len(out) == 2
    assert "ksoftirqd/2      25      CREATE       skb_gro_receive_list" in out[0]
    assert "| NULL -> 0xffff888def456000" in out[0]
    assert out[0].endswith("type=0x0(NONE)->0x60000(UDP_L4|FRAGLIST) size=0->1348 segs=3")
    assert out[1] == ("  -> Flow: 198.18.1.1:5201 -> 198.18.2.1:35678 udp | inner: "
                      "198.18.5.1:1 -> 198.18.6.1:2 tcp | len=1400 data_len=0->1400 "
                      "nr_frags=0 cloned=0 encap=1 dev=3 iif=3")


def test_stack_lines():
    r = rec(event=event.EV_CLEAR, hook_id=ID["pskb_expand_head"], frag_list_before=FL)
    r.stack = ["pskb_expand_head+0x5", "ip_forward+0x10"]
    f = fmt()
    assert f.lines(r)[1:] == []          # stacks not asked for: none printed
    f.stacks = True
    assert f.lines(r)[1:] == ["        pskb_expand_head+0x5", "        ip_forward+0x10"]
    bare = rec(event=event.EV_CLEAR, hook_id=ID["pskb_expand_head"], frag_list_before=FL,
               stack_len=-14)
    assert f.lines(bare)[1:] == ["        [no stack: EFAULT]"]


def test_json_schema():
    r = rec(event=event.EV_INCONSISTENT, hook_id=ID["skb_segment"], severity=event.SEV_CRITICAL,
            reasons=event.RSN_SEG_UNCOVERED, gso_size_after=1348, gso_type_after=0x403,
            family=6, l4proto=6, saddr=[0x20, 1, 0xd, 0xb8] + [0] * 11 + [1],
            daddr=[0x20, 1, 0xd, 0xb8] + [0] * 11 + [2], sport=1, dport=2)
    d = json.loads(fmt(json_mode=True).lines(r)[0])
    assert d["type"] == "event" and d["event"] == "INCONSISTENT"
    assert d["severity"] == "CRITICAL" and d["reasons"] == ["SEG_UNCOVERED"]
    assert d["gso_type_names"] == "TCPV4|DODGY|UDP_TUNNEL"
    assert d["flow"] == "[2001:db8::1]:1 -> [2001:db8::2]:2 tcp"
    assert d["skb"] == SKB and d["frag_list_before"] is None and d["last"] is None


def test_stats_table():
    st = Stats(HOOKS, WATCHER_EVENTS)
    st.add(rec(event=event.EV_CREATE, hook_id=ID["skb_gro_receive_list"]))
    st.add(rec(event=event.EV_INCONSISTENT, hook_id=ID["skb_segment"], severity=2, reasons=0x20))
    # a CLEAR with a WARNING: a finding, but not an INCONSISTENT event
    st.add(rec(event=event.EV_CLEAR, hook_id=ID["bpf_skb_pull_data"], severity=1, reasons=1))
    for h in HOOKS:
        h.symbol = h.name if h.name != "pskb_carve" else None
        h.skip_reason = "not in this kernel (absent, renamed or inlined)" if not h.symbol else None
    kern = {"FILTERED": [3, 4], "SUBMIT_FAIL": [0, 2], "UNPAIRED": [0, 0], "ENTRY_FULL": [0, 0]}
    text = "\n".join(st.render(kern, 5, {ID["skb_segment"]: 9}))
    assert "--- Statistics ---" in text
    assert "Total events:       3" in text
    assert "  CREATE events:    1" in text
    lines = text.split("\n")
    assert "  INCONSISTENT:     1" in lines
    assert "  Findings:         CRITICAL 1, WARNING 1 (any event type)" in lines
    assert "  Filtered out:     7" in text
    assert "Lost events:        5 (kernel side, per CPU buffer: cpu0=0 cpu1=2; user side" in text
    assert "skipped: not in this kernel" in text
    seg = [l for l in text.split("\n") if l.strip().startswith("skb_segment ")][0]
    assert seg.split()[:3] == ["skb_segment", "9", "1"]
    d = st.to_dict(kern, 5, {})
    assert d["lost_per_cpu"] == [0, 2] and d["events"]["INCONSISTENT"] == 1
    assert d["severity"] == {"CRITICAL": 1, "WARNING": 1}


def test_json_identity_read_once(monkeypatch, tmp_path):
    from skbtrace.output import record
    boot = tmp_path / "boot_id"
    boot.write_text("6f1c4f7e-0000-4000-8000-000000000001\n")
    monkeypatch.setattr(record, "BOOT_ID", str(boot))
    monkeypatch.setattr(record, "_identity", [])
    monkeypatch.setattr(record.socket, "gethostname", lambda: "node-a")
    r = rec(event=event.EV_CREATE, hook_id=ID["skb_gro_receive_list"], frag_list_after=FL)
    d = json.loads(fmt(json_mode=True).lines(r)[0])
    assert (d["host"], d["boot_id"]) == ("node-a", "6f1c4f7e-0000-4000-8000-000000000001")
    boot.write_text("changed\n")
    monkeypatch.setattr(record.socket, "gethostname", lambda: "node-b")
    d = json.loads(fmt(json_mode=True).lines(r)[0])
    assert (d["host"], d["boot_id"]) == ("node-a", "6f1c4f7e-0000-4000-8000-000000000001")
    # no boot id (not Linux, /proc not mounted): null, not a crash
    monkeypatch.setattr(record, "_identity", [])
    monkeypatch.setattr(record, "BOOT_ID", str(tmp_path / "missing"))
    assert json.loads(record.dumps({"type": "x"}))["boot_id"] is None
