"""The verdict `make demo` ends with: two sentences computed from what the
two tools printed. The outputs here come from the tools' own formatters,
statistics and verdict table, fed with events as the lab's scenarios
produce them."""
import os
import re
import sys

from helpers import FixedClock, make_event, to_bytes
from skbtrace.kernel import decoder, event, gso, hooks
from skbtrace import detector
from skbtrace.kernel import udp_tunnel
from skbtrace.output import detector_formatter
from skbtrace.output.formatter import Formatter
from skbtrace.live.stats import Stats, WATCHER_EVENTS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "lab"))
import demo  # noqa: E402

WH = hooks.watcher_hooks()
DH = hooks.detector_hooks()
W = dict((h.name, h.hook_id) for h in WH)
D = dict((h.name, h.hook_id) for h in DH)


def tool_output(hs, names, formatter, events, verdict=None):
    dec = decoder.Decoder(hs)
    stats = Stats(hs, names)
    lines = formatter.header()
    for e in events:
        r = dec.decode(to_bytes(e))
        stats.add(r)
        if verdict:
            verdict.add(r)
        lines += formatter.lines(r)
    if verdict:
        stats.extra_lines = verdict.render()
    for h in hs:
        h.symbol = h.name
    return "\n".join(lines + stats.render({}, 0, {})) + "\n"


def watcher_out(severity):
    f = Formatter(FixedClock(), gso.DEFAULT)
    pulled = dict(last_hook=W["bpf_skb_pull_data"] + 1, last_ts_ns=900, ts_ns=1000)
    evs = [make_event(event=event.EV_CREATE, hook_id=W["skb_gro_receive_list"], frag_list_after=1),
           make_event(event=event.EV_CLEAR, hook_id=W["bpf_skb_pull_data"], frag_list_before=1,
                      severity=event.SEV_WARNING, reasons=event.RSN_NULL_FRAGLIST_GSO)]
    # two skbs, each flagged at two segmentation hooks
    for skb, hook in ((0xffff0001, "udp4_ufo_fragment"), (0xffff0001, "skb_segment"),
                      (0xffff0002, "udp4_ufo_fragment"), (0xffff0002, "skb_segment")):
        evs.append(make_event(event=event.EV_INCONSISTENT, hook_id=W[hook], severity=severity,
                              skb=skb,
                              reasons=event.RSN_NULL_FRAGLIST_GSO | event.RSN_FRAGLIST_NO_LIST |
                              (event.RSN_SEG_NO_PAYLOAD if severity == event.SEV_CRITICAL else 0),
                              gso_size_after=1000, gso_type_after=0x60000, **pulled))
    return tool_output(WH, WATCHER_EVENTS, f, evs)


def detector_out(with_setters=True):
    import test_detector
    f = detector_formatter.DetectorFormatter(FixedClock(), gso.DEFAULT, tool="skb_vxlan_source_detector")
    evs = [make_event(event=event.EV_VIRTIO_RX, hook_id=D["receive_buf"], gso_type_after=3,
                      flags=event.F_VNET_VALID, vnet_gso_type=1)]
    if with_setters:
        evs += test_detector.gro_tunnel_returns(10 ** 9)
        evs += test_detector.gro_tunnel_returns(2 * 10 ** 9)
        evs.append(make_event(event=event.EV_TUNNEL_XMIT, hook_id=D["iptunnel_handle_offloads"],
                              gso_type_before=1, gso_type_after=0x801, ts_ns=5,
                              last_hook=D["iptunnel_handle_offloads"] + 1, last_ts_ns=5))
    return tool_output(DH, detector.DETECTOR_EVENTS, f, evs, udp_tunnel.Verdict())


def test_verdict_of_the_demo_scenarios():
    v = demo.verdict(watcher_out(event.SEV_WARNING), detector_out())
    assert len(re.findall(r"\.(?:\s|$)", v)) == 2, v
    first, second = v.split(". ", 1)
    assert "saw 2 skbs reach segmentation without their frag_list, last changed by " \
           "bpf_skb_pull_data" in first and "WARNING, not the crash" in first
    assert ("udp_gro_complete (pattern B, GRO completion for a local UDP tunnel socket) on 2 "
            "skbs") in second
    assert "iptunnel_handle_offloads (pattern E, a kernel tunnel device transmitted) on 1 skb;" \
        in second
    assert "docs/skb_frag_list_watcher.md and docs/skb_vxlan_source_detector.md" in second


def test_verdict_of_a_crash_and_of_nothing():
    v = demo.verdict(watcher_out(event.SEV_CRITICAL), detector_out(with_setters=False))
    assert "caught 2 skbs entering segmentation without the frag_list that skb_segment would " \
           "dereference, last changed by bpf_skb_pull_data: that is the crash (CRITICAL)." in v
    assert "saw no packet gain the UDP_TUNNEL bit" in v
    healthy = tool_output(WH, WATCHER_EVENTS, Formatter(FixedClock(), gso.DEFAULT), [
        make_event(event=event.EV_CREATE, hook_id=W["skb_gro_receive_list"], frag_list_after=1)])
    assert demo.verdict(healthy, "").startswith(
        "The frag_list watcher saw 1 frag_list built and handled normally: no skb reached "
        "segmentation in a state that crashes skb_segment.")
