"""skb_vxlan_source_detector: where SKB_GSO_UDP_TUNNEL(_CSUM) first appears
on an skb, plus a static check of the host's tunnel devices and BPF programs."""
from skbtrace import cli
from skbtrace.kernel import event, hooks
from skbtrace.kernel.udp_tunnel import Verdict
from skbtrace.live import runner, static_check
from skbtrace.live.filters import Filters
from skbtrace.live.stats import Stats
from skbtrace.output import record
from skbtrace.output.detector_formatter import DetectorFormatter
from skbtrace.output.sink import Sink

PROG = "skb_vxlan_source_detector.py"

DESCRIPTION = """Find the hook that first set SKB_GSO_UDP_TUNNEL (or _CSUM) on a packet:
virtio_net receive (VIRTIO_RX), GRO completion (GRO_COMPLETE), kernel tunnel
transmit (TUNNEL_XMIT), BPF helpers such as bpf_skb_adjust_room (BPF_HELPER),
or already set when segmentation saw it (GSO_SET). A STATIC section first lists
tunnel devices, tc/XDP BPF programs and tunnel offloads (netlink, no bcc)."""

EXAMPLES = """examples:
    sudo ./skb_vxlan_source_detector.py                     # static check, then trace
    sudo ./skb_vxlan_source_detector.py --gso-changes-only  # only where gso_type changes
    sudo ./skb_vxlan_source_detector.py --static-only       # no bcc needed
    sudo ./skb_vxlan_source_detector.py --src-ip 198.18.1.1 --verbose
    sudo ./skb_vxlan_source_detector.py --no-static --json -o /var/log/skbtrace/vxlan.json
    sudo ./skb_vxlan_source_detector.py --gso-changes-only | grep UDP_TUNNEL"""

DETECTOR_EVENTS = [event.EVENT_NAMES[v] for v in (
    event.EV_VIRTIO_RX, event.EV_GRO_COMPLETE, event.EV_TUNNEL_XMIT, event.EV_BPF_HELPER,
    event.EV_GSO_SET, event.EV_INCONSISTENT)]


class Detector(runner.Tool):
    name = "skb_vxlan_source_detector"
    c_file = "skb_vxlan_source_detector.c"
    event_names = DETECTOR_EVENTS
    stages = ("change_enter", "change_return", "observe", "virtio_skb")

    def __init__(self, args, filters):
        runner.Tool.__init__(self, args, filters)
        self.verdict = Verdict()

    def make_hooks(self):
        return hooks.detector_hooks()

    def config_lines(self):
        return runner.Tool.config_lines(self) + [
            "#define GSO_CHANGES_ONLY %d" % (1 if self.args.gso_changes_only else 0)]

    def on_record(self, record):
        self.verdict.add(record)

    def handler(self, formatter, hooks_by_id, stats, symbols=None):
        if type(self).on_record is not Detector.on_record or \
                not isinstance(formatter, DetectorFormatter):
            return None
        return formatter.handler(hooks_by_id, stats, symbols, verdict=self.verdict)

    def extra_stats(self, stats):
        stats.extra_lines = self.verdict.render()
        stats.extra_dict = {"verdict": self.verdict.to_dict()}

    def before_trace(self, sink):
        if not self.args.no_static:
            write_static(self.args, sink)


def write_static(args, sink):
    report = static_check.collect()
    if args.json:
        d = report.to_dict()
        d["type"] = "static"
        d["tool"] = Detector.name
        d["verdict"] = static_check.verdict(report)
        sink.write(record.dumps(d))
    else:
        for line in static_check.render_lines(report, verbose=args.verbose):
            sink.write(line)
        sink.write("")


def make_parser(prog=PROG):
    p = cli.make_parser(prog, DESCRIPTION, EXAMPLES)
    d = p.add_argument_group("detector")
    d.add_argument("--gso-changes-only", action="store_true",
                   help="only hits where gso_type changed, or first seen with a tunnel bit")
    m = d.add_mutually_exclusive_group()
    m.add_argument("--no-static", action="store_true", help="skip the STATIC section")
    m.add_argument("--static-only", action="store_true",
                   help="print the STATIC section and exit (no bcc, no tracing)")
    return p


def parse_args(argv=None):
    return make_parser().parse_args(argv)


def _main(argv=None):
    args = parse_args(argv)
    filters = Filters.from_args(args)
    if args.static_only:
        sink = Sink(args.output)
        try:
            write_static(args, sink)
        finally:
            sink.close()
        return 0
    tool = Detector(args, filters)
    return runner.run(tool, formatter_cls=DetectorFormatter,
                      stats=Stats(tool.hooks, tool.event_names))


def main(argv=None):
    return cli.run_main(_main, argv)
