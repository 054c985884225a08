"""skb_postmortem: from saved logs, a console capture or a `crash` session to
the story of one skb.

Reads any mix of both tools' logs (text or --json, gzipped or not), consoles,
dmesg, journalctl -k, trace files (flight records, oopses) and `crash`
transcripts, recognised by content. Two passes over the tool logs keep the
memory bounded (docs/skb_postmortem.md, OVERHEAD): the first cuts every
address's observations into packets and keeps a summary per packet, the
second keeps the observations of the packets it tells.
"""
import argparse
import os

from skbtrace import cli
from skbtrace.errors import UserError
from skbtrace.kernel import packet
from skbtrace.output.sink import OutputError, ReaderGone, Sink, check_output, open_output
from skbtrace.postmortem import crashrun
from skbtrace.postmortem.report import Report
from skbtrace.postmortem.run import Run

PROG = "skb_postmortem.py"
DEFAULT_MAX = 5

DESCRIPTION = """Read what a reproduction left behind and tell the story of the skb that
matters: who set UDP_TUNNEL, who cleared or changed frag_list, what state it
reached skb_segment in, and what the packet was.

Inputs, in any mix and order, recognised by content (gzip too; - is stdin):
both tools' logs (text and --json), consoles / dmesg / journalctl -k /
trace files with flight records and an oops, text saved from `crash` (bt,
bt -f, struct sk_buff, struct skb_shared_info, rd -8, p, eval, log).

Each skb address is cut into the packets it carried (an address is reused
every few ms); by default the packets told are the oops's, else those with
a CRITICAL finding, else those with a UDP_TUNNEL setter (a frag_list
clearer too first). A table counts packets by (UDP_TUNNEL setter, frag_list
clearer) with the users' decision tree's advice."""

EXAMPLES = """examples:
    skb_postmortem.py /var/log/skbtrace/frag_list.log /var/log/skbtrace/vxlan.log
    skb_postmortem.py frag_list.log.1.gz vxlan.log.1.gz console.log --skb 0xffff888007ce9f00
    skb_postmortem.py vmcore-dmesg.txt crash-session.txt --pcap skb.pcap
    skb_postmortem.py --vmcore /var/crash/127.0.0.1-2024-05-02-10:11:12/vmcore \
        --vmlinux /usr/lib/debug/lib/modules/$(uname -r)/vmlinux --save-transcript crash.txt
    kubectl logs ds/skbtrace -c watcher | skb_postmortem.py - --node worker-3
    skb_postmortem.py --json *.json.gz | jq 'select(.type=="postmortem_summary")'"""


class NotFound(UserError):
    """Readable inputs, but nothing of what was asked for: exit 1."""
    exit_code = 1


def make_parser(prog=PROG):
    p = cli.Parser(prog=prog, description=DESCRIPTION, epilog=EXAMPLES,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_version(p)
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="a tool log, console capture, dmesg, trace file or crash transcript "
                        "(gzip is read as such; - reads stdin)")
    s = p.add_argument_group("selection")
    s.add_argument("--skb", action="append", metavar="ADDR", type=parse_addr,
                   help="tell the packets of this skb address (0xffff... or ffff...); "
                        "may be repeated")
    s.add_argument("--max", type=non_negative, default=DEFAULT_MAX, metavar="N",
                   help="tell at most N packets (default %d; 0: all)" % DEFAULT_MAX)
    s.add_argument("--node", metavar="HOST",
                   help="only records of this host (JSON records' host); records without "
                        "a host (text logs, consoles, crash) are taken to be from it")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="one JSON object per line, each with host and boot_id (where "
                        "skb_postmortem ran; the skb's own is under node)")
    o.add_argument("--pcap", metavar="FILE",
                   help="write every packet rebuilt from crash's rd -8 bytes to FILE "
                        "(pcap, Ethernet)")
    o.add_argument("--kernel", metavar="RELEASE",
                   help="name gso_type bits for this kernel release (default: the one an "
                        "oops or crash names)")
    crashrun.add_arguments(p)
    return p


def parse_addr(text):
    t = text.lower()
    if t.startswith("0x"):
        t = t[2:]
    try:
        v = int(t, 16)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not an skb address (hex)" % text)
    if not 0 < v < 1 << 64:
        raise argparse.ArgumentTypeError("'%s' is not a 64-bit address" % text)
    return v


def non_negative(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not a number" % text)
    if n < 0:
        raise argparse.ArgumentTypeError("%d is negative" % n)
    return n


def write_pcap(run, path):
    """Every packet the crash output let us rebuild; returns how many."""
    packets = [o.raw.packet for o in run.crash_obs if o.raw.packet is not None]
    try:
        with os.fdopen(open_output(path, append=False), "wb") as f:
            return packet.write_pcap(f, packets)
    except OutputError as e:
        raise UserError("--pcap: %s" % e)
    except (IOError, OSError) as e:
        raise UserError("--pcap: cannot write %s: %s" % (path, e.strerror or e))


def _main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    crashrun.check_arguments(parser, args)
    # files root writes, checked before hours of reading (or of crash), not after
    for opt, path in (("--pcap", args.pcap), ("--save-transcript", args.save_transcript)):
        if path:
            try:
                check_output(path)
            except OutputError as e:
                raise UserError("%s: %s" % (opt, e))
    spool = None
    if args.vmcore:
        path, temporary, _, _ = crashrun.from_vmcore(args)
        args.files = list(args.files) + [path]
        spool = path if temporary else None
    try:
        return _tell(args)
    finally:
        if spool:
            os.unlink(spool)
            os.rmdir(os.path.dirname(spool))


def _tell(args):
    run = Run(args)
    sink = None
    try:
        run.read()
        run.pass1()
        run.check_inputs()
        if args.node and not run.kept and not run.flights and not run.sessions:
            raise NotFound("--node %s: no record of this host in the inputs (hosts: %s)" % (
                args.node, ", ".join(sorted(h for h in run.hosts if h)) or "none named"))
        if args.skb and not run.picked:
            raise NotFound("--skb %s: no packet of this address in the inputs%s" % (
                ", ".join("0x%x" % a for a in args.skb),
                " of node %s" % args.node if args.node else ""))
        run.pass2()
        sink = Sink()
        out = Report(run, sink)
        out.header()
        counts = {}
        for life in run.picked:
            key = (life.node, life.addr)
            counts[key] = run.tracker.count.get(key, 0)
        for life in run.picked:
            out.story(life, counts[(life.node, life.addr)])
        out.summary()
        if args.pcap:
            n = write_pcap(run, args.pcap)
            if args.json:
                out.dump({"type": "postmortem_pcap", "path": args.pcap, "packets": n})
            elif n:
                out.write("pcap: %d packet%s written to %s" % (n, "" if n == 1 else "s",
                                                               args.pcap))
            else:
                out.write("pcap: no packet could be rebuilt (%s): %s holds the pcap header "
                          "only" % ("the crash output does not hold the packet bytes; the "
                                    "crash: lines say what to read" if run.crash_obs else
                                    "no crash output among the inputs", args.pcap))
    except ReaderGone:
        pass
    finally:
        run.cleanup()
        if sink is not None:
            sink.close()
    return 0


def main(argv=None):
    return cli.run_main(_main, argv)
