"""skbtrace: skb_frag_list_watcher, skb_vxlan_source_detector and skb_postmortem.

kernel/ what both sides know about the kernel (no bcc); output/ Record ->
line, sink, clock; live/ the tracing pipeline (live/loader.py is the only
bcc import); postmortem/ the offline story. watcher.py and detector.py are
the tools. docs/architecture.md follows one event and one input through them.
"""

__version__ = "0.1.0"
