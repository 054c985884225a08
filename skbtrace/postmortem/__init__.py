"""skb_postmortem: the inputs a reproduction left behind (sources.py), the
crash session text (crashdump.py), each skb's life (story.py), the command
(cli.py). No root, no bcc."""
