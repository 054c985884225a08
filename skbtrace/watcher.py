"""skb_frag_list_watcher: who creates, clears or changes
skb_shinfo(skb)->frag_list, and when an skb is in a state skb_segment()
would crash on."""
from skbtrace import cli
from skbtrace.kernel import hooks
from skbtrace.live import runner
from skbtrace.live.filters import Filters
from skbtrace.live.stats import WATCHER_EVENTS

PROG = "skb_frag_list_watcher.py"

DESCRIPTION = """Trace every change to skb_shinfo(skb)->frag_list and flag skbs in the
state that crashes skb_segment() (frag_list NULL with gso_size set).

Events: CREATE, CLEAR [!!], MODIFY, PROPAGATE, COPY_FAIL, ACCESS, INCONSISTENT.
Markers: [WARNING] odd state the kernel survives; [CRITICAL] skb_segment would
dereference the missing frag_list. Each INCONSISTENT line names the last hook
that changed that skb (last=)."""

EXAMPLES = """examples:
    sudo ./skb_frag_list_watcher.py                      # every frag_list change
    sudo ./skb_frag_list_watcher.py --gso-only | grep INCONSISTENT
    sudo ./skb_frag_list_watcher.py --src-ip 198.18.1.1  # one sender (outer or inner)
    sudo ./skb_frag_list_watcher.py --dst-ip 2001:db8::2 --interface eth0
    sudo ./skb_frag_list_watcher.py --gso-only --verbose -o /var/log/skbtrace/fraglist.log
    sudo ./skb_frag_list_watcher.py --gso-only --stack-trace
    sudo ./skb_frag_list_watcher.py --json | jq 'select(.severity=="CRITICAL")'"""


class Watcher(runner.Tool):
    name = "skb_frag_list_watcher"
    c_file = "skb_frag_list_watcher.c"
    event_names = WATCHER_EVENTS
    stages = ("enter", "mutate_return", "copy_return", "consume_enter", "consume_return",
              "segment")

    def make_hooks(self):
        return hooks.watcher_hooks()


def make_parser(prog=PROG):
    return cli.make_parser(prog, DESCRIPTION, EXAMPLES)


def parse_args(argv=None):
    return make_parser().parse_args(argv)


def _main(argv=None):
    args = parse_args(argv)
    filters = Filters.from_args(args)
    return runner.run(Watcher(args, filters))


def main(argv=None):
    return cli.run_main(_main, argv)
