"""A packet's timeline: every observation printed as its tool printed it
(text log lines verbatim; --json records and flight records through the
tools' own formatters, rebuilt as the decoder's Records)."""
from skbtrace.kernel import decoder, event
from skbtrace.postmortem import sources as src


class _TimeClock(object):
    """A clock for the formatters that prints the time the record carried."""

    def __init__(self):
        self.text = {}

    def hms(self, ts_ns):
        return self.text.get(ts_ns, "?")

    def iso(self, ts_ns):
        return self.text.get(ts_ns)


def json_record(d, tool):
    """A --json event back as the decoder's Record, for the tools' own
    formatters: JSON inputs print as the text the tool would have written."""

    class JsonRecord(decoder.Record):
        flow = None
        inner_flow = None
        last_age_us = None

    hooks_by_name = src.HOOKS[tool]
    e = event.SkbEvent()
    hook = hooks_by_name.get(d.get("function"))
    e.hook_id = hook.hook_id if hook else 0xffff
    e.ts_ns = int(d.get("ts_ns") or 0)
    e.cpu = int(d.get("cpu") or 0)
    e.pid = int(d.get("pid") or 0)
    e.comm = str(d.get("comm") or "").encode("utf-8", "replace")[:15]
    e.event = src.EVENT_NUMBERS.get(d.get("event"), 0)
    e.severity = {"WARNING": 1, "CRITICAL": 2}.get(d.get("severity"), 0)
    e.reasons = sum(event.REASON_NAMES.get(r, 0) for r in d.get("reasons") or [])
    for k in ("skb", "new_skb", "head", "frag_list_before", "frag_list_after"):
        v = d.get(k)
        setattr(e, k, int(v, 16) if isinstance(v, str) else 0)
    for k in ("gso_size_before", "gso_size_after", "gso_type_before", "gso_type_after",
              "gso_segs", "len", "data_len_before", "data_len_after", "nr_frags_before",
              "nr_frags_after", "frags_bytes", "ifindex", "iif", "protocol", "ret", "aux",
              "aux2"):
        v = d.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            try:
                setattr(e, k, v)
            except (TypeError, OverflowError):
                pass
    flags = 0
    flags |= event.F_ENCAP if d.get("encapsulation") else 0
    flags |= event.F_CLONED if d.get("cloned") else 0
    flags |= event.F_AFTER_UNREADABLE if d.get("after_readable") is False else 0
    flags |= event.F_IN_TNL_SEG if d.get("in_tunnel_segment") else 0
    hist = d.get("last") if tool == src.WATCHER else d.get("origin")
    if isinstance(hist, dict):
        flags |= event.F_LAST_STALE if hist.get("other_head") else 0
        flags |= event.F_ORIGIN_ON_ENTRY if hist.get("on_entry") else 0
    v = d.get("virtio")
    if isinstance(v, dict):
        flags |= event.F_VNET_VALID
        for k, attr in (("gso_type", "vnet_gso_type"), ("gso_size", "vnet_gso_size"),
                        ("hdr_len", "vnet_hdr_len"), ("csum_start", "vnet_csum_start"),
                        ("csum_offset", "vnet_csum_offset"), ("flags", "vnet_flags")):
            if isinstance(v.get(k), int):
                setattr(e, attr, v[k])
    e.flags = flags
    r = JsonRecord(e, dict((h.hook_id, h) for h in hooks_by_name.values()))
    r.function = d.get("function") or "?"
    r.flow = d.get("flow")
    r.inner_flow = d.get("inner_flow")
    r.last_function = None
    if isinstance(hist, dict) and isinstance(hist.get("function"), str):
        r.last_function = hist["function"]
        age = hist.get("age_us")
        if hist.get("here"):
            e.last_hook = e.hook_id + 1
            e.last_ts_ns = e.ts_ns
            r.last_age_us = 0
        else:
            h = hooks_by_name.get(hist["function"])
            e.last_hook = (h.hook_id + 1) if h else 0xffff
            if isinstance(age, (int, float)):
                r.last_age_us = age
                e.last_ts_ns = max(1, e.ts_ns - int(age * 1000))
    return r
