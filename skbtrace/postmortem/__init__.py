"""skb_postmortem: the command (cli.py) runs a Run (run.py): the inputs read
by content (sources.py, crash transcripts by crashdump.py), each address cut
into packets (story.py), the packets picked (selection.py), their stories
printed (report.py, with sections.py and timeline.py). No root, no bcc."""
