"""What each consistency rule means, for the output and the docs.

The rules themselves run in the kernel (eval_rules() in bpf/skb_common.h);
the bit values come from bpf/skb_event.h through skbtrace.event.
"""
from skbtrace import event

TEXT = {
    "NULL_FRAGLIST_GSO": "frag_list NULL, gso_size>0, nr_frags 0, data_len 0 "
                         "(the seeds' rule; harmless while the head holds the payload)",
    "FRAGLIST_NO_LIST": "SKB_GSO_FRAGLIST set but frag_list is NULL",
    "TUNNEL_NO_ENCAP": "UDP_TUNNEL(_CSUM) set but skb->encapsulation is 0",
    "TUNNEL_INNER_EQ_OUTER": "UDP_TUNNEL(_CSUM) set but inner network header == outer",
    "TUNNEL_OUTER_NOT_UDP": "UDP_TUNNEL(_CSUM) set but the outer L4 protocol is not UDP",
    "SEG_NO_PAYLOAD": "skb_segment: no payload in the head, no frags, no frag_list "
                      "(dereferences the NULL frag_list)",
    "SEG_UNCOVERED": "skb_segment: data_len larger than the frags hold and no frag_list "
                     "(runs out of frags, dereferences the NULL frag_list)",
    "SEG_BY_FRAGS_NO_LIST": "skb_segment: gso_size GSO_BY_FRAGS without frag_list "
                            "(reads frag_list->len)",
    "SEGLIST_NO_LIST": "skb_segment_list: SKB_GSO_FRAGLIST skb without frag_list (the UDP "
                       "caller reads the missing second segment; fixed upstream by a1e40ac5b5e9)",
}

SEVERITY_TEXT = {
    event.SEV_WARNING: "state the kernel survives but worth knowing (e.g. seeds' rule with "
                       "the payload in the head, tunnel metadata mismatch)",
    event.SEV_CRITICAL: "segmentation would dereference the missing frag_list",
}


def describe(bits):
    return [(name, TEXT.get(name, "")) for name in event.reason_names(bits)]
