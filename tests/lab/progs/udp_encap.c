/* tc egress on a host with no tunnel device: wrap GSO TCP/IPv4 packets in an
 * outer IPv4 + UDP header with bpf_skb_adjust_room(ENCAP_L3_IPV4 |
 * ENCAP_L4_UDP), as Calico's eBPF dataplane does for VXLAN NodePort/DSR. That
 * helper sets SKB_GSO_UDP_TUNNEL|DODGY and skb->encapsulation itself. The
 * outer destination port is UDP_ENCAP_PORT: nothing listens there, so the
 * packets are dropped by the receiving namespace; only the sender matters. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

#define UDP_ENCAP_PORT 6081
#define BSWAP16(x) __builtin_bswap16(x)

struct outer {
	struct iphdr ip;
	struct udphdr udp;
} __attribute__((packed));

static __always_inline u16 ip_csum(struct iphdr *ip)
{
	u16 *w = (u16 *)ip;
	u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

int udp_encap(struct __sk_buff *skb)
{
	struct iphdr inner = {};
	struct outer h = {};
	u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
		    BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
	u16 tot;

	if (skb->protocol != BSWAP16(ETH_P_IP) || skb->gso_segs <= 1)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &inner, sizeof(inner)) < 0)
		return TC_ACT_OK;
	if (inner.protocol != IPPROTO_TCP || inner.ihl != 5)
		return TC_ACT_OK;
	tot = BSWAP16(inner.tot_len) + sizeof(h);
	if (bpf_skb_adjust_room(skb, sizeof(h), BPF_ADJ_ROOM_MAC, flags))
		return TC_ACT_SHOT;
	h.ip = inner;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.tot_len = BSWAP16(tot);
	h.ip.check = 0;
	h.ip.check = ip_csum(&h.ip);
	h.udp.source = BSWAP16(40000);
	h.udp.dest = BSWAP16(UDP_ENCAP_PORT);
	h.udp.len = BSWAP16(tot - sizeof(struct iphdr));
	h.udp.check = 0;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
