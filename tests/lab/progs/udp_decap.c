/* tc ingress on the receiving host: undo udp_encap.c (outer IPv4 + UDP to
 * UDP_ENCAP_PORT) by shrinking the room after the MAC header, so the inner
 * TCP flow keeps going and the router keeps encapsulating (a lab stand-in for
 * the other Calico node). Everything else passes untouched. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

#define UDP_ENCAP_PORT 6081
#define BSWAP16(x) __builtin_bswap16(x)

int udp_decap(struct __sk_buff *skb)
{
	struct iphdr ip = {};
	struct udphdr udp = {};

	if (skb->protocol != BSWAP16(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 ||
	    ip.protocol != IPPROTO_UDP || ip.ihl != 5)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(ip), &udp, sizeof(udp)) < 0 ||
	    udp.dest != BSWAP16(UDP_ENCAP_PORT))
		return TC_ACT_OK;
	if (bpf_skb_adjust_room(skb, -(int)(sizeof(ip) + sizeof(udp)), BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
