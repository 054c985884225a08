"""docs/schema/skbtrace-record.schema.json against what the tools write: the
run loop with the fake bcc, the formatters, the statistics and the STATIC
section from recorded netlink messages produce every record here. (The lab
validates real output from a real kernel too.)"""
import json
import os
import sys

import pytest

from helpers import fake_flight_system, ip4, make_event, to_bytes
from skbtrace import detector
from skbtrace.kernel import udp_tunnel
from skbtrace.kernel import event, hooks
from skbtrace.live.stats import WATCHER_EVENTS

if sys.version_info < (3, 7):
    # the run on the default interpreter checks the records against the schema
    pytest.skip("no jsonschema with Draft 2020-12 (4.0+) for Python 3.6",
                allow_module_level=True)
jsonschema = pytest.importorskip("jsonschema", reason="python3-jsonschema (make deps)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA_PATH = os.path.join(ROOT, "docs", "schema", "skbtrace-record.schema.json")
W = dict((h.name, h.hook_id) for h in hooks.watcher_hooks())
D = dict((h.name, h.hook_id) for h in hooks.detector_hooks())
FL = 0xffff888def456000


@pytest.fixture(scope="module")
def schema():
    with open(SCHEMA_PATH) as f:
        s = json.load(f)
    jsonschema.Draft202012Validator.check_schema(s)
    return s


def validate(schema, obj):
    jsonschema.Draft202012Validator(schema).validate(obj)


def lines_of(text):
    return [json.loads(l) for l in text.splitlines()]


def test_enums_follow_the_code(schema):
    d = schema["$defs"]
    assert d["reason"]["enum"] == [n for _v, n in event.REASON_BITS]
    assert d["watcher_event"]["properties"]["event"]["enum"] == WATCHER_EVENTS
    assert d["detector_event"]["properties"]["event"]["enum"] == detector.DETECTOR_EVENTS
    assert d["detector_event"]["properties"]["tunnel_change"]["enum"] == [
        udp_tunnel.ADDED, udp_tunnel.ADDED_NESTED, udp_tunnel.BY_ENCLOSING, udp_tunnel.REMOVED, None]
    pattern = d["statistics"]["properties"]["verdict"]["properties"]["setters"]["items"]
    assert pattern["properties"]["pattern"]["enum"] == list(udp_tunnel.PATTERNS)


def watcher_script():
    last = dict(last_hook=W["skb_gro_receive_list"] + 1, last_ts_ns=999000000)
    return [[
        make_event(event=event.EV_CREATE, hook_id=W["skb_gro_receive_list"], frag_list_after=FL,
                   gso_size_after=1000, gso_type_after=0x60000, family=4, l4proto=17,
                   saddr=ip4("198.18.1.1"), daddr=ip4("198.18.2.1"), sport=1, dport=9000),
        make_event(event=event.EV_CLEAR, hook_id=W["bpf_skb_pull_data"], frag_list_before=FL,
                   severity=event.SEV_WARNING, reasons=event.RSN_NULL_FRAGLIST_GSO |
                   event.RSN_FRAGLIST_NO_LIST, flags=event.F_LAST_STALE, **last),
        make_event(event=event.EV_MODIFY, hook_id=W["__pskb_pull_tail"], frag_list_before=FL,
                   frag_list_after=FL + 0x100, aux=1400),
    ], [
        make_event(event=event.EV_PROPAGATE, hook_id=W["__pskb_copy_fclone"], frag_list_after=FL,
                   new_skb=0xffff888000000100, **last),
        make_event(event=event.EV_COPY_FAIL, hook_id=W["skb_copy"], frag_list_before=FL,
                   gso_type_before=0x60000, flags=event.F_AFTER_UNREADABLE, ret=0),
        make_event(event=event.EV_ACCESS, hook_id=W["ip_do_fragment"], frag_list_before=FL,
                   flags=event.F_AFTER_UNREADABLE, ret=-22),
        make_event(event=event.EV_INCONSISTENT, hook_id=W["skb_segment"],
                   severity=event.SEV_CRITICAL, reasons=event.RSN_SEG_NO_PAYLOAD,
                   gso_size_after=1348, gso_type_after=0x403, flags=event.F_IN_TNL_SEG, **last),
    ]]


def test_watcher_records(schema, fake, capsys, tmp_path, monkeypatch):
    fake_flight_system(tmp_path, monkeypatch)
    fake.BPF.available = [h.name for h in hooks.watcher_hooks() if h.name != "pskb_carve"]
    fake.BPF.script = [[to_bytes(e) for e in poll] for poll in watcher_script()]
    fake.BPF.percpu = {("counters", event.CNT_FR_WRITTEN): [1, 0]}
    from skbtrace.watcher import main
    assert main(["--json", "--flight-recorder"]) == 0
    objs = lines_of(capsys.readouterr().out)
    assert sorted(set(o["event"] for o in objs[:-1])) == sorted(WATCHER_EVENTS)
    assert objs[-1]["type"] == "statistics" and objs[-1]["flight_recorder"]["written"] == 1
    for o in objs:
        validate(schema, o)


def test_lost_record(schema, fake, capsys):
    fake.BPF.percpu = {("counters", event.CNT_SUBMIT_FAIL): [2, 0]}
    fake.BPF.script = [[3]]
    from skbtrace.watcher import main
    assert main(["--json"]) == 0
    objs = lines_of(capsys.readouterr().out)
    assert objs[0]["type"] == "lost" and objs[0]["lost"] == 3 and objs[0]["per_cpu"] == [2, 0]
    for o in objs:
        validate(schema, o)


def test_watcher_stack_records(schema, fake, capsys):
    import struct
    ev = make_event(event=event.EV_CLEAR, hook_id=W["skb_segment_list"], frag_list_before=FL,
                    stack_len=1)
    bare = make_event(event=event.EV_CLEAR, hook_id=W["skb_segment_list"], frag_list_before=FL,
                      stack_len=-14)
    pad = struct.pack("<%dQ" % event.STACK_FRAMES, *([0xffffffff81000010] + [0] * 47))
    fake.BPF.script = [[to_bytes(ev) + pad, to_bytes(bare) + pad]]
    from skbtrace.watcher import main
    assert main(["--json", "--stack-trace"]) == 0
    objs = lines_of(capsys.readouterr().out)
    assert objs[0]["stack"] == ["fake_fn+0x10"] and objs[1]["stack_error"] == "EFAULT"
    assert objs[-1]["events_without_stack"] == {"EFAULT": 1}
    for o in objs:
        validate(schema, o)


def detector_script():
    import test_detector
    origin = dict(last_hook=D["bpf_skb_adjust_room"] + 1, last_ts_ns=7000000)
    return [[
        make_event(event=event.EV_VIRTIO_RX, hook_id=D["receive_buf"], gso_type_after=0x3,
                   gso_size_after=1448, flags=event.F_VNET_VALID, vnet_gso_type=1,
                   vnet_gso_size=1448, vnet_hdr_len=66, vnet_csum_start=34, vnet_csum_offset=16,
                   vnet_flags=1),
        make_event(event=event.EV_BPF_HELPER, hook_id=D["bpf_skb_adjust_room"],
                   gso_type_before=1, gso_type_after=0x403, aux=0x13, aux2=1, ts_ns=7000000,
                   **origin),
        make_event(event=event.EV_TUNNEL_XMIT, hook_id=D["iptunnel_handle_offloads"],
                   gso_type_before=1, gso_type_after=0x801, aux=0x800, ts_ns=8000000,
                   last_hook=D["iptunnel_handle_offloads"] + 1, last_ts_ns=8000000),
        make_event(event=event.EV_GSO_SET, hook_id=D["skb_segment"], gso_type_before=0x403,
                   gso_type_after=0x403, severity=event.SEV_CRITICAL,
                   reasons=event.RSN_SEG_NO_PAYLOAD | event.RSN_TUNNEL_NO_ENCAP, ts_ns=9000000,
                   **origin),
        make_event(event=event.EV_BPF_HELPER, hook_id=D["bpf_skb_change_proto"],
                   gso_type_before=0x403, gso_type_after=1, ts_ns=9500000),
    ], test_detector.gro_tunnel_returns(10 ** 9)]


def test_detector_records(schema, fake, capsys, monkeypatch):
    from skbtrace.live import static_check
    import test_static_check
    monkeypatch.setattr(static_check, "collect", lambda netns=None: test_static_check.report("all"))
    fake.BPF.available = [h.name for h in hooks.detector_hooks()]
    fake.BPF.script = [[to_bytes(e) for e in poll] for poll in detector_script()]
    from skbtrace.detector import main
    assert main(["--json"]) == 0
    objs = lines_of(capsys.readouterr().out)
    assert objs[0]["type"] == "static" and objs[0]["tool"] == "skb_vxlan_source_detector"
    assert objs[-1]["type"] == "statistics" and objs[-1]["verdict"]["setters"]
    events = objs[1:-1]
    assert set(o["event"] for o in events) == set(detector.DETECTOR_EVENTS) - set(["INCONSISTENT"])
    assert set(o["tunnel_change"] for o in events) == set(
        [udp_tunnel.ADDED, udp_tunnel.ADDED_NESTED, udp_tunnel.BY_ENCLOSING, udp_tunnel.REMOVED, None])
    for o in objs:
        validate(schema, o)


def test_static_only_record(schema, capsys, monkeypatch):
    from skbtrace.live import static_check
    import test_static_check
    monkeypatch.setattr(static_check, "collect", lambda netns=None: test_static_check.report("fou"))
    assert detector.main(["--static-only", "--json"]) == 0
    (obj,) = lines_of(capsys.readouterr().out)
    validate(schema, obj)


def test_schema_rejects_drift(schema, fake, capsys):
    """The schema is strict: a record without its node, or with a key the
    manuals do not list, fails; the tests above would notice either."""
    fake.BPF.script = [[to_bytes(make_event(event=event.EV_CREATE, hook_id=W["skb_gro_receive_list"],
                                            frag_list_after=FL))]]
    from skbtrace.watcher import main
    assert main(["--json"]) == 0
    ev, stats = lines_of(capsys.readouterr().out)
    for broken in (dict(ev, new_key=1), dict((k, v) for k, v in ev.items() if k != "host"),
                   dict(ev, tool="skb_vxlan_source_detector"), dict(stats, events_lost=3),
                   dict(ev, reasons=["NO_SUCH_REASON"])):
        with pytest.raises(jsonschema.ValidationError):
            validate(schema, broken)
