"""Command-line options both tools share, validated before anything loads."""
import argparse
import os
import sys

from skbtrace import __version__
from skbtrace.errors import UserError

DEFAULT_BUFFER_PAGES = 64


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2."""

    def error(self, message):
        sys.stderr.write("%s: error: %s (see --help)\n" % (self.prog, message))
        sys.exit(2)


def positive_power_of_two(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not a number" % text)
    if n <= 0 or n & (n - 1):
        raise argparse.ArgumentTypeError("%d is not a power of two (perf buffers need one)" % n)
    return n


# In every tool's --help and so in its manual page (skbtrace/manpage.py).
SIGNALS = """signals:
    SIGINT, SIGTERM  drain the buffers, print the statistics, flush, exit 0
    SIGHUP           with -o FILE: reopen FILE between two lines (logrotate:
                     rename the file, then send SIGHUP); without -o: ignored"""


def add_version(p):
    """--version from the package's one version (skbtrace.__version__), for
    every command of the package."""
    p.add_argument("--version", action="version",
                   version="%s (skbtrace) %s" % (p.prog, __version__))


def invoked_as(prog):
    """The name the user typed: the installed console script
    (skb_frag_list_watcher) or the clone's launcher (skb_frag_list_watcher.py),
    so --help, --version and errors name the command that ran."""
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return called if called.replace(".py", "") == prog.replace(".py", "") else prog


def make_parser(prog, description, examples):
    p = Parser(prog=invoked_as(prog), description=description, epilog=examples + "\n\n" + SIGNALS,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    f = p.add_argument_group("filters (compiled into the BPF program)")
    f.add_argument("--gso-only", action="store_true",
                   help="only skbs with gso_size > 0")
    f.add_argument("--src-ip", metavar="ADDR",
                   help="only packets from ADDR (IPv4 or IPv6; outer or inner header)")
    f.add_argument("--dst-ip", metavar="ADDR",
                   help="only packets to ADDR (IPv4 or IPv6; outer or inner header)")
    f.add_argument("--interface", metavar="IFNAME",
                   help="only skbs whose device or input interface is IFNAME "
                        "(resolved in the tool's network namespace)")
    o = p.add_argument_group("output")
    o.add_argument("-v", "--verbose", action="store_true",
                   help="add COMM, PID, frag_list and GSO columns and a flow line")
    o.add_argument("--stack-trace", action="store_true",
                   help="kernel stack under each event (costs a stack walk per event)")
    o.add_argument("--json", action="store_true",
                   help="one JSON object per line, each with host and boot_id "
                        "(schema: docs/schema/skbtrace-record.schema.json)")
    o.add_argument("-o", "--output", metavar="FILE",
                   help="append events and statistics to FILE (line-buffered)")
    o.add_argument("--buffer-pages", type=positive_power_of_two, default=DEFAULT_BUFFER_PAGES,
                   metavar="N", help="event buffer pages per CPU, a power of two (default %d); "
                   "a ring buffer is one of N x CPUs pages, rounded up to a power of two"
                   % DEFAULT_BUFFER_PAGES)
    o.add_argument("--buffer", choices=("auto", "perf", "ring"), default="auto",
                   help="how events reach user space: a perf buffer per CPU (any kernel) or "
                        "one BPF ring buffer shared by all CPUs (5.8+); auto takes the ring "
                        "buffer where the kernel and bcc have it (default auto)")
    p.add_argument("--backend", choices=("auto", "kprobe", "fentry"), default="auto",
                   help="how hooks attach: fentry/fexit (BPF trampolines, where the kernel "
                        "has them: x86-64 and BTF; no trap per hit) or kprobe/kretprobe "
                        "(any kernel, module functions); auto takes fentry where the kernel "
                        "and the hook allow it (default auto)")
    c = p.add_argument_group("crash reproduction")
    c.add_argument("--flight-recorder", nargs="?", const="crash", choices=("crash", "all"),
                   metavar="all",
                   help="also write crash findings (=all: every WARNING and tunnel-bit setter "
                        "too) into the kernel trace buffer from BPF, and turn "
                        "kernel.ftrace_dump_on_oops on (restored at exit), so an oops prints "
                        "them on the console (docs/crash-reproduction.md)")
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    return p


def run_main(real_main, argv=None):
    """Turn UserError into one line and an exit code; Ctrl-C before tracing
    started exits quietly."""
    prog = None
    try:
        return real_main(argv)
    except UserError as e:
        prog = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "skbtrace")
        sys.stderr.write("%s: error: %s\n" % (prog, e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130
