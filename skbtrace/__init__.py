"""skbtrace: shared code of skb_frag_list_watcher and skb_vxlan_source_detector.

Pipeline: bpf/*.c -> loader (the only module importing bcc) -> decoder ->
filters (in-kernel, from filters.py) -> formatter -> sink, with stats on exit;
the runner takes each event through fastpath (the same, in one call).
"""

__version__ = "0.1.0"
