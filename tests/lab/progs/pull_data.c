/* tc ingress on the router: pull a whole fraglist GRO skb into its head, the
 * way NAT64 / policy programs do before reading deep headers. The pull eats
 * frag_list (CLEAR) and leaves a GSO skb with a modified geometry, which
 * __udp_gso_segment then hands to skb_segment (fixes a1e40ac5b5e9,
 * 3382a1ed7f77). Only GSO skbs are touched. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

int pull_all(struct __sk_buff *skb)
{
	if (skb->gso_segs > 1)
		bpf_skb_pull_data(skb, skb->len);
	return TC_ACT_OK;
}
