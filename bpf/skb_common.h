/*
 * skb_common.h - BPF helpers shared by both tools.
 *
 * The loader (skbtrace/live/loader.py) inlines this file and skb_event.h into the
 * program text and prepends the CONFIG block: the FILTER_* and KGSO_* macros,
 * whose values come from the command line and from the running kernel's BTF.
 *
 * Every kernel read goes through bpf_probe_read() into a per-CPU scratch copy:
 * whole struct sk_buff and struct skb_shared_info are copied once per hook hit,
 * then read as plain memory. That keeps bcc's rewriter out of the way, lets the
 * compiler handle bitfields (encapsulation, cloned) and skb_frag_t layouts of
 * every kernel version, and costs two small copies per event.
 */
#include <uapi/linux/ptrace.h>
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>

#include "skb_event.h"

#ifndef GSO_BY_FRAGS
#define GSO_BY_FRAGS 0xFFFF
#endif

#define KGSO_TUNNEL_BITS (KGSO_UDP_TUNNEL | KGSO_UDP_TUNNEL_CSUM)

/* KEEPS_NESTING (a tool's, before this file): with fentry the task's depth
 * counts its kept calls only for a tool that asks whether a call is nested
 * (the detector); the kprobe backend pairs entries and returns by it anyway. */
#ifndef KEEPS_NESTING
#define KEEPS_NESTING 0
#endif

/* What a hook stub hands to its stage program (see stage() below). */
struct call_t {
	u64 skb;
	u64 aux;
	u64 ret;	/* return stubs: the traced function's return value */
	u64 tag;	/* by_arg: the first argument (see "Entry/return pairing") */
	u32 hook_id;
	u32 hflags;
	u8  aux2;
	u8  stack_skip;	/* frames of the hook's own making atop its stack */
	u8  by_arg;	/* fentry/fexit: an entry pairs with its return by argument */
	u8  pad[5];
};

/* Entry state, kept from entry to return of one hook call. */
struct entry_t {
	u64 skb;
	u64 frag_list;
	u64 head;
	u64 aux;
	u64 ts_ns;
	u32 data_len;
	u32 gso_type;
	u32 reasons;
	s32 stack_len;
	u16 gso_size;
	u16 hook_id;
	u8  nr_frags;
	u8  flags;
	u8  aux2;
	u8  pad[5];
#if STACK_TRACES
	u64 stack[STACK_FRAMES];   /* taken at entry: the event is sent at return */
#endif
};

/* An event and its stack, as one perf record: the stack must follow ev. */
struct record_t {
	struct skb_event ev;
	u64 stack[STACK_FRAMES];
};

#if STACK_TRACES
#define RECORD_SIZE sizeof(struct record_t)
#else
#define RECORD_SIZE sizeof(struct skb_event)
#endif

struct scratch_t {
	struct skb_event ev;
	u64 stack[STACK_FRAMES];   /* sent with ev: see struct record_t */
	struct entry_t entry;
	struct call_t call;
	struct sk_buff skb;
	struct skb_shared_info sh;
};

/* Idle tasks share pid 0 on every CPU, so they are told apart by CPU. Other
 * tasks keep their key when they sleep and migrate inside a hook. */
struct task_key_t {
	u32 tid;
	u32 cpu;
};

/* One running call of a hook: recursive and nested hooks
 * (bpf_skb_pull_data -> __pskb_pull_tail -> pskb_expand_head, or
 * __pskb_pull_tail on a frag_list member) keep one entry record each. kprobe:
 * the task's nesting depth tells them apart; fentry: the hook and its first
 * argument (see "Entry/return pairing"). */
struct entry_key_t {
	u32 tid;
	u32 cpu;
	u32 depth;
	u32 hook_id;
	u64 tag;
};

/* Last change seen per skb address, for the "last=" column. */
struct last_t {
	u64 ts_ns;
	u64 head;
	u16 hook_id;
	u8  flags;   /* detector: F_ORIGIN_ON_ENTRY */
	u8  pad[5];
};

/* Scratch by nesting level. kprobe programs never nest on a CPU (the kernel
 * skips a kprobe program while another runs there), fentry/fexit programs
 * do: a softirq arriving while a hook runs in a task runs its own hooks on
 * the same CPU. Each running hook takes the next level, so the interrupted
 * one finds its scratch intact; deeper nesting is counted and not traced. */
#define SCRATCH_LEVELS 4

/* RINGBUF_PAGES (the CONFIG block, --buffer): one ring buffer shared by the
 * CPUs (5.8+), else a perf buffer per CPU. Both refuse a record when full;
 * submit() counts it. */
#if RINGBUF_PAGES
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
/* All levels in one value: a hook takes and gives back its level with the
 * one lookup (a helper call each, which is most of a hit's cost). */
struct scratches_t {
	u32 level;	/* hooks running now on this CPU */
	u32 pad;
	struct scratch_t s[SCRATCH_LEVELS];
};

BPF_PERCPU_ARRAY(scratch, struct scratches_t, 1);
BPF_PROG_ARRAY(stages, NR_STAGES);
BPF_PERCPU_ARRAY(counters, u64, NR_COUNTERS);
/* Per hook, one lookup counts a hit and, when the filters drop it, that too:
 * a dropped hit costs little more than the lookup (see hit_passes()). */
struct hook_count_t {
	u64 hits;
	u64 filtered;
};
BPF_PERCPU_ARRAY(hook_hits, struct hook_count_t, MAX_HOOKS);
BPF_PERCPU_ARRAY(hook_lost, u64, MAX_HOOKS);	/* perf_submit failures, by hook */
/* LRU: a task's depth stays at 0 between calls (no insert and delete per
 * call) and ages out when the task is gone; an entry whose return never came
 * ages out too. */
BPF_TABLE("lru_hash", struct task_key_t, u32, depths, 10240);
BPF_TABLE("lru_hash", struct entry_key_t, struct entry_t, entries, 10240);
BPF_TABLE("lru_hash", u64, struct last_t, last_change, LAST_CHANGE_ENTRIES);
/* Entry records saved and not yet taken back, by hook (entries and the
 * watcher's pending): a return of a hook with none skips its lookup, which
 * is every return when a filter matches nothing. Shared by the CPUs (a call
 * may return on another one), changed atomically; an entry the LRU evicts
 * keeps its count, which only costs lookups. A plain array: the verifier
 * inlines its lookup. */
BPF_ARRAY(kept_calls, u64, MAX_HOOKS);
/* Depth pushes not yet popped, all tasks together: at 0 no task has a depth,
 * so a filtered kprobe entry and its return need no lookup of their own.
 * Drifts only up (a missed kretprobe, an LRU eviction): that costs lookups,
 * never a wrong pairing. */
BPF_ARRAY(live_pushes, u64, 1);

static __always_inline void count(u32 idx)
{
	u64 *v = counters.lookup(&idx);
	if (v)
		(*v)++;
}

static __always_inline void count_hit(u32 hook_id)
{
	struct hook_count_t *v = hook_hits.lookup(&hook_id);
	if (v)
		v->hits++;
}

static __always_inline void kept_add(u32 hook_id, s64 n)
{
	u64 *v = kept_calls.lookup(&hook_id);

	if (v)
		__sync_fetch_and_add(v, n);
}

static __always_inline int kept_any(u32 hook_id)
{
	u64 *v = kept_calls.lookup(&hook_id);

	return v && *v;
}

static __always_inline void pushes_add(s64 n)
{
	u32 zero = 0;
	u64 *v = live_pushes.lookup(&zero);

	if (v)
		__sync_fetch_and_add(v, n);
}

static __always_inline int pushes_any(void)
{
	u32 zero = 0;
	u64 *v = live_pushes.lookup(&zero);

	return v && *v;
}

static __always_inline struct scratches_t *scratches(void)
{
	u32 zero = 0;

	return scratch.lookup(&zero);
}

/* A hook starts: take the next scratch level. NULL when nested too deep. */
static __always_inline struct scratch_t *level_enter(struct scratches_t *all)
{
	u32 idx;

	if (!all)
		return 0;
	idx = all->level;
	if (idx >= SCRATCH_LEVELS) {
		count(CNT_TOO_DEEP);
		return 0;
	}
	all->level = idx + 1;
	return &all->s[idx];
}

/* The scratch of the hook running now on this CPU (see SCRATCH_LEVELS):
 * for the kprobe backend's stage programs, which the stub's tail call reaches
 * without it. */
static __always_inline struct scratch_t *level_current(struct scratches_t *all)
{
	u32 idx;

	if (!all || all->level == 0)
		return 0;
	idx = all->level - 1;
	if (idx >= SCRATCH_LEVELS)
		return 0;
	return &all->s[idx];
}

static __always_inline void level_leave(struct scratches_t *all)
{
	if (all && all->level)
		all->level--;
}

static __always_inline void task_key(struct task_key_t *k)
{
	k->tid = (u32)bpf_get_current_pid_tgid();
	k->cpu = k->tid ? 0 : bpf_get_smp_processor_id();
}

/*
 * Inside skb_udp_tunnel_segment(): __skb_udp_tunnel_segment() clears
 * encapsulation and moves the outer offsets to the inner ones before the inner
 * segmentation, so the tunnel rules do not hold there (eval_rules()). Its
 * entry and return bracket the task; open_brackets counts the open ones over
 * all tasks, so that a hook asks the task's own only while one is open
 * anywhere (almost never: it costs the lookup the rest of the time).
 */
BPF_HASH(tnl_seg, struct task_key_t, u32, 1024);
BPF_ARRAY(open_brackets, u64, 1);

static __always_inline int in_tunnel_segment(void)
{
	struct task_key_t tk = {};
	u32 zero = 0, *v;
	u64 *open = open_brackets.lookup(&zero);

	if (!open || !*open)
		return 0;
	task_key(&tk);
	v = tnl_seg.lookup(&tk);
	return v && *v;
}

static __always_inline int tnl_bracket(int delta)
{
	struct task_key_t tk = {};
	u32 zero = 0, *v, n;
	u64 *open = open_brackets.lookup(&zero);

	task_key(&tk);
	v = tnl_seg.lookup(&tk);
	n = v ? *v : 0;
	if (delta < 0 && n == 0)
		return 0;
	n += delta;
	if (n)
		tnl_seg.update(&tk, &n);
	else
		tnl_seg.delete(&tk);
	if (open)
		__sync_fetch_and_add(open, (s64)delta);
	return 0;
}

/* Copy skb and its shared info into scratch. Returns 0 on success. */
static __always_inline int read_skb(struct scratch_t *s, struct sk_buff *skb)
{
	unsigned char *shp;

	if (!skb)
		return -1;
	if (bpf_probe_read(&s->skb, sizeof(s->skb), skb))
		return -1;
#ifdef NET_SKBUFF_DATA_USES_OFFSET
	shp = s->skb.head + s->skb.end;
#else
	shp = s->skb.end;
#endif
	if (bpf_probe_read(&s->sh, sizeof(s->sh), shp))
		return -1;
	return 0;
}

/* skb_gro_receive(struct sk_buff **head, ...) before 4.19 */
static __always_inline struct sk_buff *deref_skb_pp(void *pp)
{
	struct sk_buff *p = 0;

	bpf_probe_read(&p, sizeof(p), pp);
	return p;
}

static __always_inline u32 frags_bytes(struct skb_shared_info *sh)
{
	u32 total = 0;
	int i;
	u8 n = sh->nr_frags;

#pragma unroll
	for (i = 0; i < MAX_SKB_FRAGS; i++) {
		if (i < n)
			total += skb_frag_size(&sh->frags[i]);
	}
	return total;
}

/* Parse IPv4/IPv6 at head+nh; fill addresses, L4 protocol and ports.
 * Returns the L4 protocol (IPPROTO_IPIP / IPPROTO_IPV6 for IP-in-IP). */
static __always_inline u8 parse_l3(unsigned char *head, u16 nh, u16 th,
				   u8 *family, u8 *proto, u8 *saddr, u8 *daddr,
				   u16 *sport, u16 *dport, u16 *next_nh)
{
	/* the IPv4 header read whole tells the version too; IPv6 reads again */
	union {
		struct iphdr v4;
		struct ipv6hdr v6;
	} ip = {};
	u16 l4;
	u16 ports[2] = {};

	if (bpf_probe_read(&ip.v4, sizeof(ip.v4), head + nh))
		return 0;
	if (ip.v4.version == 4) {
		*family = 4;
		*proto = ip.v4.protocol;
		__builtin_memcpy(saddr, &ip.v4.saddr, 4);
		__builtin_memcpy(daddr, &ip.v4.daddr, 4);
		l4 = nh + ip.v4.ihl * 4;
	} else if (ip.v4.version == 6) {
		if (bpf_probe_read(&ip.v6, sizeof(ip.v6), head + nh))
			return 0;
		*family = 6;
		*proto = ip.v6.nexthdr;
		__builtin_memcpy(saddr, &ip.v6.saddr, 16);
		__builtin_memcpy(daddr, &ip.v6.daddr, 16);
		l4 = nh + sizeof(ip.v6);
	} else {
		return 0;
	}
	/* A set transport header wins over the computed one: it is what the
	 * kernel itself will use (extension headers, tunnels). */
	if (th != (u16)~0U && th > nh)
		l4 = th;
	*next_nh = l4;
	if (*proto == IPPROTO_TCP || *proto == IPPROTO_UDP || *proto == IPPROTO_SCTP) {
		if (bpf_probe_read(ports, sizeof(ports), head + l4) == 0) {
			*sport = __builtin_bswap16(ports[0]);
			*dport = __builtin_bswap16(ports[1]);
		}
	}
	return *proto;
}

/* Fill the event's state and flow fields from scratch (the after-state). */
static __always_inline void fill_state(struct scratch_t *s, u32 hook_id)
{
	struct skb_event *ev = &s->ev;
	struct sk_buff *k = &s->skb;
	struct skb_shared_info *sh = &s->sh;
	unsigned char *head = k->head;
	struct net_device *dev = k->dev;
	u16 next_nh = 0, inner_nh = 0, inner_th = (u16)~0U;
	u8 outer_proto;

	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->pid = (u32)bpf_get_current_pid_tgid();
	ev->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
	ev->hook_id = hook_id;
	ev->head = (u64)head;
	ev->len = k->len;
	ev->data_len_after = k->data_len;
	ev->frag_list_after = (u64)sh->frag_list;
	ev->gso_size_after = sh->gso_size;
	ev->gso_type_after = sh->gso_type;
	ev->gso_segs = sh->gso_segs;
	ev->nr_frags_after = sh->nr_frags;
	ev->iif = k->skb_iif;
	if (dev)
		bpf_probe_read(&ev->ifindex, sizeof(ev->ifindex), &dev->ifindex);
	if (k->encapsulation)
		ev->flags |= F_ENCAP;
	if (k->cloned)
		ev->flags |= F_CLONED;
	ev->protocol = __builtin_bswap16(k->protocol);
	ev->mac_header = k->mac_header;
	ev->network_header = k->network_header;
	ev->transport_header = k->transport_header;
	ev->inner_mac_header = k->inner_mac_header;
	ev->inner_network_header = k->inner_network_header;
	ev->inner_transport_header = k->inner_transport_header;

	if (ev->protocol != ETH_P_IP && ev->protocol != ETH_P_IPV6)
		return;
	outer_proto = parse_l3(head, k->network_header, k->transport_header,
			       &ev->family, &ev->l4proto, ev->saddr, ev->daddr,
			       &ev->sport, &ev->dport, &next_nh);
	/* One inner parse, from whichever header says where it is: every hook
	 * inlines this, so each parse_l3 copy costs compile time. */
	if (k->encapsulation && k->inner_network_header &&
	    k->inner_network_header != k->network_header) {
		inner_nh = k->inner_network_header;
		inner_th = k->inner_transport_header;
	} else if (outer_proto == IPPROTO_IPIP || outer_proto == IPPROTO_IPV6) {
		/* IP-in-IP (Calico IPIP): the inner header follows the outer one
		 * whether or not the kernel marked the skb as encapsulated. */
		inner_nh = next_nh;
	}
	if (inner_nh)
		parse_l3(head, inner_nh, inner_th,
			 &ev->inner_family, &ev->inner_l4proto, ev->inner_saddr,
			 ev->inner_daddr, &ev->inner_sport, &ev->inner_dport, &next_nh);
}

static __always_inline int addr_eq(u8 *a, u8 fam, u32 w0, u32 w1, u32 w2, u32 w3, u8 want_fam)
{
	u32 w[4];

	if (fam != want_fam)
		return 0;
	__builtin_memcpy(w, a, 16);
	if (want_fam == 4)
		return w[0] == w0;
	return w[0] == w0 && w[1] == w1 && w[2] == w2 && w[3] == w3;
}

/*
 * The cheap path. On a busy node most hook hits are dropped by the filters;
 * such a hit must not pay for the whole copy of struct sk_buff and
 * skb_shared_info (~550 bytes), the header parsing, the scratch or the entry
 * bookkeeping: the hook runs prefilter() first (hit_passes()). It reads only
 * what a compiled-in filter needs and drops what it can decide; what it cannot
 * decide cheaply (an address filter when the skb may carry an inner header)
 * goes on to filter_keep() on the full copy, which stays the definition of
 * what is kept. Returns 0 to drop.
 *
 * Each helper call is most of a dropped hit's cost, so the skb fields come in
 * one read: protocol, the header offsets, end and head sit together at the
 * end of struct sk_buff (the headers group, then tail, end, head: 4.18, 5.10,
 * 6.1, 6.12). A layout that spreads them wider is read field by field.
 */
#define PF_OFF(f) __builtin_offsetof(struct sk_buff, f)
#define PF_END(f) (PF_OFF(f) + sizeof(((struct sk_buff *)0)->f))
#define PF_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PF_MAX(a, b) ((a) > (b) ? (a) : (b))
#define PF_LO PF_MIN(PF_MIN(PF_MIN(PF_OFF(protocol), PF_OFF(network_header)), \
			    PF_MIN(PF_OFF(inner_network_header), PF_OFF(end))), PF_OFF(head))
#define PF_HI PF_MAX(PF_MAX(PF_MAX(PF_END(protocol), PF_END(network_header)), \
			    PF_MAX(PF_END(inner_network_header), PF_END(end))), PF_END(head))
#define PF_SPAN 64

struct pf_fields_t {
	unsigned char *head;
	sk_buff_data_t end;
	__be16 protocol;
	u16 nh;
	u16 inh;
};

#define PF_TAKE(buf, dst, field) \
	__builtin_memcpy((dst), (buf) + PF_OFF(field) - PF_LO, sizeof(*(dst)))

static __always_inline void pf_read(struct sk_buff *skb, struct pf_fields_t *f)
{
	if (PF_HI - PF_LO <= PF_SPAN) {
		u8 buf[PF_SPAN] = {};

		bpf_probe_read(buf, PF_HI - PF_LO, (u8 *)skb + PF_LO);
		PF_TAKE(buf, &f->head, head);
		PF_TAKE(buf, &f->end, end);
		PF_TAKE(buf, &f->protocol, protocol);
		PF_TAKE(buf, &f->nh, network_header);
		PF_TAKE(buf, &f->inh, inner_network_header);
	} else {
		bpf_probe_read(&f->head, sizeof(f->head), &skb->head);
		bpf_probe_read(&f->end, sizeof(f->end), &skb->end);
		bpf_probe_read(&f->protocol, sizeof(f->protocol), &skb->protocol);
		bpf_probe_read(&f->nh, sizeof(f->nh), &skb->network_header);
		bpf_probe_read(&f->inh, sizeof(f->inh), &skb->inner_network_header);
	}
}

/* Whether the cheap filters read struct pf_fields_t at all. */
#define PF_NEEDED (FILTER_GSO_ONLY || FILTER_SRC || FILTER_DST)

/* fentry: skb is the trampoline's typed argument (BTF), read in place with no
 * helper call. Only run_inline() calls this: where a kprobe's pt_regs reach
 * a dereference, bcc rewrites it into bpf_probe_read() in the shared text. */
static __always_inline void pf_read_btf(struct sk_buff *skb, struct pf_fields_t *f)
{
	f->head = skb->head;
	f->end = skb->end;
	f->protocol = skb->protocol;
	f->nh = skb->network_header;
	f->inh = skb->inner_network_header;
}

/* f: the skb's fields, read by pf_read() or pf_read_btf() when PF_NEEDED */
static __always_inline int prefilter(struct sk_buff *skb, struct pf_fields_t *fp)
{
#if PF_NEEDED
	struct pf_fields_t f = *fp;
#endif
#if FILTER_GSO_ONLY
	{
		unsigned short gs = 0;
		unsigned char *shp;

#ifdef NET_SKBUFF_DATA_USES_OFFSET
		shp = f.head + f.end;
#else
		shp = f.end;
#endif
		bpf_probe_read(&gs, sizeof(gs), &((struct skb_shared_info *)shp)->gso_size);
		if (gs == 0)
			return 0;
	}
#endif
#if FILTER_IFINDEX
	{
		struct net_device *dev = 0;
		struct net *net = 0;
		int ifindex = 0, iif = 0;
		u32 inum = 0;

		bpf_probe_read(&dev, sizeof(dev), &skb->dev);
		bpf_probe_read(&iif, sizeof(iif), &skb->skb_iif);
		if (dev)
			bpf_probe_read(&ifindex, sizeof(ifindex), &dev->ifindex);
		if (ifindex != FILTER_IFINDEX && iif != FILTER_IFINDEX)
			return 0;
		if (dev) {
			bpf_probe_read(&net, sizeof(net), &dev->nd_net.net);
			if (net)
				bpf_probe_read(&inum, sizeof(inum), &net->ns.inum);
		}
		if (inum != FILTER_NETNS_INUM)
			return 0;
	}
#endif
#if FILTER_SRC || FILTER_DST
	{
		/* the IPv4 header, or the IPv6 one: one read each; the ports are
		 * not filtered on */
		union {
			struct iphdr v4;
			struct ipv6hdr v6;
			u8 raw[sizeof(struct ipv6hdr) + 16];
		} h = {};
		u16 proto = __builtin_bswap16(f.protocol);
		u8 *sa, *da, fam, l4;

		if (proto != ETH_P_IP && proto != ETH_P_IPV6)
			return 0;
		/* an inner header may match: the full path decides */
		if (f.inh && f.inh != f.nh)
			return 1;
		bpf_probe_read(&h.v4, sizeof(h.v4), f.head + f.nh);
		if (h.v4.version == 4) {
			fam = 4;
			l4 = h.v4.protocol;
			sa = (u8 *)&h.v4.saddr;
			da = (u8 *)&h.v4.daddr;
		} else if (h.v4.version == 6) {
			bpf_probe_read(&h.v6, sizeof(h.v6), f.head + f.nh);
			fam = 6;
			l4 = h.v6.nexthdr;
			sa = (u8 *)&h.v6.saddr;
			da = (u8 *)&h.v6.daddr;
		} else {
			return 0;
		}
		if (l4 == IPPROTO_IPIP || l4 == IPPROTO_IPV6)
			return 1;
#if FILTER_SRC
		if (!addr_eq(sa, fam, FILTER_SRC_W0, FILTER_SRC_W1, FILTER_SRC_W2,
			     FILTER_SRC_W3, FILTER_SRC_FAMILY))
			return 0;
#endif
#if FILTER_DST
		if (!addr_eq(da, fam, FILTER_DST_W0, FILTER_DST_W1, FILTER_DST_W2,
			     FILTER_DST_W3, FILTER_DST_FAMILY))
			return 0;
#endif
	}
#endif
	return 1;
}

/* A hook's first step: count the hit and run the cheap filters on the
 * fields in f. 0: dropped (and counted as such, in the same lookup). */
static __always_inline int hit_passes_read(u32 hook_id, struct sk_buff *skb,
					   struct pf_fields_t *f)
{
	struct hook_count_t *v = hook_hits.lookup(&hook_id);

	if (v)
		v->hits++;
	if (prefilter(skb, f))
		return 1;
	if (v)
		v->filtered++;
	return 0;
}

static __always_inline int hit_passes(u32 hook_id, struct sk_buff *skb)
{
	struct pf_fields_t f = {};

	if (PF_NEEDED)
		pf_read(skb, &f);
	return hit_passes_read(hook_id, skb, &f);
}

/* In-kernel filters, compiled in only when asked for (see CONFIG block).
 * IP filters match the outer or the inner header; --interface matches the
 * device the skb is on or the one it arrived on. Returns 1 to keep. */
static __always_inline int filter_keep(struct scratch_t *s)
{
	struct skb_event *ev = &s->ev;

#if FILTER_GSO_ONLY
	if (s->sh.gso_size == 0)
		return 0;
#endif
#if FILTER_IFINDEX
	/* ifindexes repeat across network namespaces: match the device's too */
	{
		struct net *net = 0;
		u32 inum = 0;

		if (ev->ifindex != FILTER_IFINDEX && ev->iif != FILTER_IFINDEX)
			return 0;
		if (s->skb.dev) {
			bpf_probe_read(&net, sizeof(net), &s->skb.dev->nd_net.net);
			if (net)
				bpf_probe_read(&inum, sizeof(inum), &net->ns.inum);
		}
		if (inum != FILTER_NETNS_INUM)
			return 0;
	}
#endif
#if FILTER_SRC
	if (!addr_eq(ev->saddr, ev->family, FILTER_SRC_W0, FILTER_SRC_W1,
		     FILTER_SRC_W2, FILTER_SRC_W3, FILTER_SRC_FAMILY) &&
	    !addr_eq(ev->inner_saddr, ev->inner_family, FILTER_SRC_W0, FILTER_SRC_W1,
		     FILTER_SRC_W2, FILTER_SRC_W3, FILTER_SRC_FAMILY))
		return 0;
#endif
#if FILTER_DST
	if (!addr_eq(ev->daddr, ev->family, FILTER_DST_W0, FILTER_DST_W1,
		     FILTER_DST_W2, FILTER_DST_W3, FILTER_DST_FAMILY) &&
	    !addr_eq(ev->inner_daddr, ev->inner_family, FILTER_DST_W0, FILTER_DST_W1,
		     FILTER_DST_W2, FILTER_DST_W3, FILTER_DST_FAMILY))
		return 0;
#endif
	return 1;
}

/* Load the skb into s, apply the full filters (prefilter() ran in the hook).
 * NULL when the hit is not reported.
 * report_here: the hit may send a line now, so the event's fields (task,
 * device, flow) are filled. An entry that only saves its state for the
 * return (which builds the event from a fresh read) leaves them unfilled
 * unless a filter or the tunnel rules read them: the rules read s->skb and
 * s->sh, RSN_TUNNEL_OUTER_NOT_UDP also the outer flow. */
static __always_inline struct scratch_t *load(struct scratch_t *s, struct sk_buff *skb,
					      u32 hook_id, int report_here)
{
	if (read_skb(s, skb))
		return 0;
	if (report_here || FILTER_SRC || FILTER_DST || FILTER_IFINDEX ||
	    (s->sh.gso_type & KGSO_TUNNEL_BITS))
		fill_state(s, hook_id);
	else
		s->ev.family = 0;
	if (!filter_keep(s)) {
		count(CNT_FILTERED);
		return 0;
	}
	s->ev.skb = (u64)skb;
	return s;
}

/* checks: the function the skb is entering, as bits (the watcher's hook
 * flags carry them as HF_CRASH_CHECK / HF_LIST_CHECK; other bits ignored) */
#define CHECK_SEGMENT      2	/* skb_segment() */
#define CHECK_SEGMENT_LIST 4	/* skb_segment_list() */

/* The crash rule, one definition for both tools: what our reading of the
 * segmentation code says will dereference the missing frag_list, for the
 * skb in scratch entering the function(s) named by `checks`.
 * CHECK_SEGMENT, skb_segment(): with no frag_list it reads list_skb (NULL)
 * once the head and the frags run out before the payload does (the seeds'
 * skb_segment+558, and skb_headlen(list_skb) at 0x70 on 6.1), when there is
 * no payload at all, or for GSO_BY_FRAGS (list_skb->len).
 * CHECK_SEGMENT_LIST, skb_segment_list(): a FRAGLIST skb without a frag_list
 * comes back as a single segment, and the UDP caller's checksum pass
 * (__udpv4_gso_segment_list_csum) reads udp_hdr(seg->next): NULL. Kernels
 * with upstream a1e40ac5b5e9 (6.12, stable backports) send such skbs to
 * skb_segment() instead and never get here with it; bullseye's 5.10.262
 * panics (reproduced in the lab). */
static __always_inline u32 crash_reasons(struct scratch_t *s, u32 checks)
{
	struct sk_buff *k = &s->skb;
	struct skb_shared_info *sh = &s->sh;
	u32 r = 0;

	if (sh->gso_size == 0 || sh->frag_list)
		return 0;
	if ((checks & CHECK_SEGMENT_LIST) && (sh->gso_type & KGSO_FRAGLIST))
		r |= RSN_SEGLIST_NO_LIST;
	if (checks & CHECK_SEGMENT) {
		u32 headlen = k->len - k->data_len;

		if (sh->gso_size == GSO_BY_FRAGS)
			r |= RSN_SEG_BY_FRAGS_NO_LIST;
		else if (headlen == 0 && sh->nr_frags == 0)
			r |= RSN_SEG_NO_PAYLOAD;
		else if (k->data_len > frags_bytes(sh))
			r |= RSN_SEG_UNCOVERED;
	}
	return r;
}

/* Consistency rules on the state in scratch: the warnings, then the crash
 * rule for the function the skb is entering (checks). */
static __always_inline u32 eval_rules(struct scratch_t *s, u32 checks, int in_tnl_seg)
{
	struct sk_buff *k = &s->skb;
	struct skb_shared_info *sh = &s->sh;
	u32 gt = sh->gso_type;
	u16 gs = sh->gso_size;
	u32 r = 0;

	if (gs == 0)
		return 0;
	if (!sh->frag_list && sh->nr_frags == 0 && k->data_len == 0)
		r |= RSN_NULL_FRAGLIST_GSO;
	if ((gt & KGSO_FRAGLIST) && !sh->frag_list)
		r |= RSN_FRAGLIST_NO_LIST;
	/* __skb_udp_tunnel_segment() itself clears encapsulation and moves the
	 * outer offsets to the inner ones before the inner segmentation: inside
	 * it those are the kernel's doing, not evidence. */
	if ((gt & KGSO_TUNNEL_BITS) && !in_tnl_seg) {
		if (!k->encapsulation)
			r |= RSN_TUNNEL_NO_ENCAP;
		if (k->inner_network_header == k->network_header)
			r |= RSN_TUNNEL_INNER_EQ_OUTER;
		if (s->ev.family && s->ev.l4proto != IPPROTO_UDP)
			r |= RSN_TUNNEL_OUTER_NOT_UDP;
	}
	return r | crash_reasons(s, checks);
}

static __always_inline u8 severity_of(u32 reasons)
{
	if (reasons & RSN_CRASH_MASK)
		return SEV_CRITICAL;
	return reasons ? SEV_WARNING : SEV_NONE;
}

/*
 * Entry/return pairing. A kretprobe cannot read the traced function's
 * arguments, so with the kprobe backend the task's nesting depth pairs them:
 * every kept entry pushes it and its return pops it; a filtered entry pushes
 * it only inside a pushed call (depth_filtered()), so a return that finds
 * depth 0 had a filtered entry and stops there. An fexit program reads the
 * same argument copy its fentry program read (the trampoline's), so there an
 * entry is keyed by its hook and first argument, and a filtered entry leaves
 * nothing behind. Either way a return whose hook has no entry saved anywhere
 * (kept_calls) does no lookup at all. With fentry the depth counts the task's
 * kept calls, for a tool that asks (KEEPS_NESTING: the detector's "nested").
 */
static __always_inline u32 push_depth(struct task_key_t *tk)
{
	u32 one = 1, d, *dp = depths.lookup(tk);

	pushes_add(1);
	if (!dp) {
		depths.update(tk, &one);
		return 0;
	}
	d = *dp;
	*dp = d + 1;	/* a task runs on one CPU at a time: no race on its own depth */
	return d;
}

static __always_inline int pop_depth(struct task_key_t *tk, u32 *out)
{
	u32 *dp = depths.lookup(tk);

	if (!dp || *dp == 0)
		return -1;
	*dp -= 1;
	*out = *dp;
	pushes_add(-1);
	return 0;
}

/* Before the filters: the task, and with kprobes the depth this entry takes. */
static __always_inline u32 entry_begin(struct call_t *c, struct task_key_t *tk)
{
	task_key(tk);
	return c->by_arg ? 0 : push_depth(tk);
}

/* The entry is kept: the key its record is saved under. */
static __always_inline void entry_kept(struct call_t *c, struct task_key_t *tk, u32 depth,
				       struct entry_key_t *ek)
{
	ek->tid = tk->tid;
	ek->cpu = tk->cpu;
	if (c->by_arg) {
		if (KEEPS_NESTING)
			push_depth(tk);
		ek->hook_id = c->hook_id;
		ek->tag = c->tag;
	} else {
		ek->depth = depth;
	}
}

/* At return: the key this call's entry record would have. -1 when the
 * kprobe depth says there was no entry. */
static __always_inline int return_key(struct call_t *c, struct task_key_t *tk,
				      struct entry_key_t *ek)
{
	u32 d;

	task_key(tk);
	ek->tid = tk->tid;
	ek->cpu = tk->cpu;
	if (c->by_arg) {
		ek->hook_id = c->hook_id;
		ek->tag = c->tag;
		return 0;
	}
	if (pop_depth(tk, &d))
		return -1;
	ek->depth = d;
	return 0;
}

/* The entry record was found: fentry pops the kept-calls depth now. */
static __always_inline void return_found(struct call_t *c, struct task_key_t *tk)
{
	u32 d;

	if (c->by_arg && KEEPS_NESTING)
		pop_depth(tk, &d);
}

/* The kernel stack of this hit, copied into buf (STACK_FRAMES addresses).
 * Returns the number of frames, or -errno. Each record carries its own copy,
 * so no other hit can ever be read back as this one's. */
static __always_inline s32 take_stack(void *ctx, struct scratch_t *s, u64 *buf)
{
#if STACK_TRACES
	u64 skip = s->call.stack_skip & BPF_F_SKIP_FIELD_MASK;
	long n = bpf_get_stack(ctx, buf, STACK_FRAMES * sizeof(u64), skip);

	if (n < 0)
		return (s32)n;
	return (s32)(n / sizeof(u64));
#else
	return 0;
#endif
}

/* The entry record is built in scratch: with its stack it is larger than
 * the 512 bytes of BPF stack. */
static __always_inline void save_entry(struct scratch_t *s, struct sk_buff *skb,
				       u32 hook_id, u64 aux, u8 aux2, u32 reasons,
				       struct entry_key_t *ek, void *ctx)
{
	struct entry_t *e = &s->entry;

	__builtin_memset(e, 0, sizeof(*e));
	e->skb = (u64)skb;
	e->frag_list = (u64)s->sh.frag_list;
	e->head = (u64)s->skb.head;
	e->aux = aux;
	e->aux2 = aux2;
	e->ts_ns = bpf_ktime_get_ns();
	e->data_len = s->skb.data_len;
	e->gso_type = s->sh.gso_type;
	e->gso_size = s->sh.gso_size;
	e->nr_frags = s->sh.nr_frags;
	e->reasons = reasons;
	e->hook_id = hook_id;
	if (s->skb.encapsulation)
		e->flags |= F_ENCAP_BEFORE;
#if STACK_TRACES
	e->stack_len = take_stack(ctx, s, e->stack);
#endif
	if (entries.update(ek, e))
		count(CNT_ENTRY_FULL);
	else
		kept_add(hook_id, 1);
}

/* Fetch and delete the entry record of this return into s->entry; -1 when
 * the entry was filtered out (nothing saved) or does not belong to this hook. */
static __always_inline int take_entry(struct scratch_t *s, struct call_t *c)
{
	struct task_key_t tk = {};
	struct entry_key_t ek = {};
	struct entry_t *e;

	if (return_key(c, &tk, &ek))
		return -1;
	e = entries.lookup(&ek);
	if (!e)
		return -1;
	return_found(c, &tk);
	if (e->hook_id != c->hook_id) {
		u32 other = e->hook_id;

		count(CNT_UNPAIRED);
		entries.delete(&ek);
		kept_add(other, -1);
		return -1;
	}
	__builtin_memcpy(&s->entry, e, sizeof(s->entry));
	entries.delete(&ek);
	kept_add(c->hook_id, -1);
	return 0;
}

/* s->entry (the state at entry, its stack) into the event sent at return. */
static __always_inline void copy_entry_to_event(struct scratch_t *s)
{
	struct skb_event *ev = &s->ev;
	struct entry_t *e = &s->entry;

	ev->skb = e->skb;
	ev->frag_list_before = e->frag_list;
	ev->gso_type_before = e->gso_type;
	ev->gso_size_before = e->gso_size;
	ev->nr_frags_before = e->nr_frags;
	ev->data_len_before = e->data_len;
	ev->aux = e->aux;
	ev->aux2 = e->aux2;
	ev->stack_len = e->stack_len;
	if (e->flags & F_ENCAP_BEFORE)
		ev->flags |= F_ENCAP_BEFORE;
#if STACK_TRACES
	__builtin_memcpy(s->stack, e->stack, sizeof(s->stack));
#endif
}

/* The entry state doubles as the before-state when the hook reports at
 * entry only. */
static __always_inline void before_is_after(struct skb_event *ev)
{
	ev->frag_list_before = ev->frag_list_after;
	ev->gso_type_before = ev->gso_type_after;
	ev->gso_size_before = ev->gso_size_after;
	ev->nr_frags_before = ev->nr_frags_after;
	ev->data_len_before = ev->data_len_after;
	if (ev->flags & F_ENCAP)
		ev->flags |= F_ENCAP_BEFORE;
}

/* ev is the head of a struct record_t (scratch or the pending map): with
 * --stack-trace its stack is sent in the same record. */
static __always_inline void submit(void *ctx, struct skb_event *ev)
{
#if RINGBUF_PAGES
	long rc = events.ringbuf_output(ev, RECORD_SIZE, 0);
#else
	long rc = events.perf_submit(ctx, ev, RECORD_SIZE);
#endif

	if (rc < 0) {
		u32 id = ev->hook_id;
		u64 *v = hook_lost.lookup(&id);

		count(CNT_SUBMIT_FAIL);
		if (v)
			(*v)++;
	}
}

/*
 * Flight recorder (--flight-recorder). The perf buffer dies with the kernel:
 * the event that explains a panic is emitted in the softirq that then
 * crashes, before user space can read it. So the finding is also written into
 * the kernel's trace buffer by the BPF program itself, which
 * kernel.ftrace_dump_on_oops prints on the console from the oops' die
 * notifier, before kdump or the panic. bpf_trace_printk takes three
 * arguments and one %s before 5.13 (4.18, 5.10): a record is FR_LINES lines
 * tied by a sequence number (tool << 31 | CPU << 24 | per-CPU count). Names
 * come from fr_names, which the loader fills (hook, event and history names).
 * The first line must answer `grep CRITICAL` alone: severity and tool are
 * literals of its format (one call site per severity), which leaves its three
 * arguments to the sequence number, the hook (the %s) and the skb.
 */
#ifndef FLIGHT_RECORDER
#define FLIGHT_RECORDER FR_OFF
#endif

#if FLIGHT_RECORDER
struct fr_name_t {
	char s[FR_NAME_LEN];
};

struct fr_state_t {
	u64 win_start;
	u32 seq;
	u16 n_crash;
	u16 n_other;
};

BPF_ARRAY(fr_names, struct fr_name_t, FR_NAMES);
BPF_PERCPU_ARRAY(fr_state, struct fr_state_t, 1);

/* the helper itself, not bcc's rewrite of bpf_trace_printk("..."): the format
 * strings are built from FR_PREFIX and the tool's own words */
static int (*fr_printk)(const char *fmt, u32 fmt_size, ...) = (void *)BPF_FUNC_trace_printk;

#define FR_LINE(fmt, ...) ({ \
	char f_[] = FR_PREFIX " %x " fmt; \
	if (fr_printk(f_, sizeof(f_), seq, ##__VA_ARGS__) < 0) \
		failed = 1; \
	})

static __always_inline u64 fr_name(u32 idx)
{
	struct fr_name_t *n = fr_names.lookup(&idx);

	return n ? (u64)n->s : 0;
}

/* Rate limit: FR_RATE_PER_SEC records per CPU per second for each class, so
 * that --flight-recorder=all cannot crowd out a crash record. */
static __always_inline int fr_admit(u64 now, int crash)	/* -1: suppressed */
{
	u32 zero = 0;
	struct fr_state_t *st = fr_state.lookup(&zero);

	if (!st)
		return -1;
	if (now - st->win_start >= 1000000000ULL) {
		st->win_start = now;
		st->n_crash = 0;
		st->n_other = 0;
	}
	if (crash) {
		if (st->n_crash >= FR_RATE_PER_SEC)
			return -1;
		st->n_crash++;
	} else {
		if (st->n_other >= FR_RATE_PER_SEC)
			return -1;
		st->n_other++;
	}
	st->seq++;
	return (int)(st->seq & 0xffffff);
}

/* One record of the finding in ev; hist_hook is hook id + 1 of the history
 * entry (the watcher's last mutator, the detector's tunnel-bit origin). */
static __always_inline void fr_write(struct skb_event *ev, int crash, u16 hist_hook,
				     u64 hist_ts)
{
	int n = fr_admit(ev->ts_ns, crash);	/* per-CPU count: 24 bits */
	int after = !(ev->flags & F_AFTER_UNREADABLE);
	int failed = 0;
	u32 seq;

	if (n < 0) {
		count(CNT_FR_SUPPRESSED);
		return;
	}
	seq = ((u32)FR_TOOL_ID << 31) | ((ev->cpu & 0x7f) << 24) | (u32)n;
	if (ev->severity == SEV_CRITICAL)
		FR_LINE("1/7 " FR_TOOL " CRITICAL hook=%s skb=0x%llx", fr_name(ev->hook_id), ev->skb);
	else if (ev->severity == SEV_WARNING)
		FR_LINE("1/7 " FR_TOOL " WARNING hook=%s skb=0x%llx", fr_name(ev->hook_id), ev->skb);
	else
		FR_LINE("1/7 " FR_TOOL " - hook=%s skb=0x%llx", fr_name(ev->hook_id), ev->skb);
	FR_LINE("2/7 event=%s reasons=0x%x", fr_name(FR_EVENT_BASE + (ev->event & 15)),
		ev->reasons);
	FR_LINE("3/7 len=%u data_len=%u", ev->len,
		after ? ev->data_len_after : ev->data_len_before);
	FR_LINE("4/7 nr_frags=%u frag_list=0x%llx",
		after ? ev->nr_frags_after : ev->nr_frags_before,
		after ? ev->frag_list_after : ev->frag_list_before);
	FR_LINE("5/7 gso_size=%u gso_type=0x%x",
		after ? ev->gso_size_after : ev->gso_size_before,
		after ? ev->gso_type_after : ev->gso_type_before);
	FR_LINE("6/7 flags=0x%x", ev->flags);
	FR_LINE("7/7 " FR_HIST "=%s age_us=%llu",
		fr_name(hist_hook ? hist_hook - 1 : FR_SEV_BASE + 3),
		hist_hook && hist_ts ? (ev->ts_ns - hist_ts) / 1000 : 0);
	count(failed ? CNT_FR_FAILED : CNT_FR_WRITTEN);
}
#endif

/* Whether ev's finding goes to the flight recorder, and into which class. */
static __always_inline void flight_record(struct skb_event *ev, int tunnel_setter)
{
#if FLIGHT_RECORDER
	int crash = (ev->reasons & RSN_CRASH_MASK) != 0;

	/* one inlined fr_write: its nine printk call sites are most of the
	 * recorder's instructions */
	if (crash || (FLIGHT_RECORDER == FR_ALL && (ev->severity || tunnel_setter)))
		fr_write(ev, crash, ev->last_hook, ev->last_ts_ns);
#endif
}

/*
 * Hook stubs and stage programs. Each tool defines stage_body(), the work of
 * every hook kind, once; how a hook reaches it depends on its backend.
 *
 * kprobe/kretprobe: every hook is a tiny program that stores its arguments in
 * the per-CPU scratch and tail-calls the stage program of its kind, which
 * holds the real work once. Inlining that work into every hook made clang
 * compile it ~40 times (minutes under emulation, seconds saved on every real
 * start); bcc (0.26) cannot link BPF-to-BPF calls, tail calls work back to
 * 4.2.
 *
 * fentry/fexit: a kernel with BPF trampolines runs the hook without a trap,
 * but tail calls between tracing programs need one attach prototype for the
 * whole prog array (bpf_prog_map_compatible(), upstream 28ead3eaabc1, in
 * 6.1.y stable), and every hook has its own. So each fentry hook inlines
 * stage_body() for its kind: slower to compile, cheaper per hit.
 *
 * The hook lines name the backend: HOOK_<KIND>(KPROBE, ...) or
 * HOOK_<KIND>(FENTRY, ...), and the kind's macro pastes it onto the
 * <BACKEND>_ENTER / _LEAVE / _RUN macros below. SKB, AUX, AUX2 and RET are
 * expressions on the hook's ctx (struct pt_regs * or the u64 argument array).
 */
static __always_inline int stage_body(void *ctx, struct scratch_t *s, struct call_t *c,
				      u32 prog);
/* Each tool says which of its stages start with the filters (the hook runs
 * hit_passes() itself, the stage neither counts the hit nor prefilters) and
 * which return stages take an entry record (the hook skips them when its
 * kept_calls count is zero). Called with constants: the branches fold. */
static __always_inline int filters_first(u32 prog, u32 hflags);
static __always_inline int takes_entry(u32 prog);

/* kprobe: a filtered entry pushes the task's depth only when a call of the
 * task is already pushed (depth > 0), so that a kept call's return still
 * finds its own depth; at depth 0 it leaves nothing, and a return that finds
 * depth 0 knows its entry was such a one (calls nest on one task's stack).
 * The depth is never per hook, so this holds across hooks. */
static __always_inline void depth_filtered(void)
{
	struct task_key_t tk = {};
	u32 *dp;

	if (!pushes_any())
		return;
	task_key(&tk);
	dp = depths.lookup(&tk);
	if (dp && *dp) {
		*dp += 1;
		pushes_add(1);
	}
}

/* kprobe, at the return of a hook whose stage takes an entry: 0 when there
 * is nothing to pair (depth 0: the entry was filtered and pushed nothing),
 * or when no entry of this hook is saved anywhere (its depth is popped
 * here, as the stage would have). */
static __always_inline int return_has_entry(u32 hook_id)
{
	struct task_key_t tk = {};
	u32 *dp;

	if (!pushes_any())
		return 0;
	task_key(&tk);
	dp = depths.lookup(&tk);
	if (!dp || *dp == 0)
		return 0;
	if (kept_any(hook_id))
		return 1;
	*dp -= 1;
	pushes_add(-1);
	return 0;
}

static __always_inline int stage(void *ctx, u32 hook_id, u64 skb, u64 aux,
				 u8 aux2, u32 hflags, u64 ret, u32 prog)
{
	struct scratches_t *all;
	struct scratch_t *s;

	if (filters_first(prog, hflags) && !hit_passes(hook_id, (struct sk_buff *)skb)) {
		depth_filtered();
		return 0;
	}
	if (takes_entry(prog) && !return_has_entry(hook_id))
		return 0;
	all = scratches();
	s = level_enter(all);
	if (!s)
		return 0;
	s->call.skb = skb;
	s->call.aux = aux;
	s->call.ret = ret;
	s->call.aux2 = aux2;
	s->call.hook_id = hook_id;
	s->call.hflags = hflags;
	s->call.stack_skip = 0;	/* a kprobe's stack starts at the probed function */
	s->call.by_arg = 0;
	s->call.tag = 0;
	stages.call(ctx, prog);
	count(CNT_STAGE_FAIL);     /* only reached when the tail call failed */
	level_leave(all);
	return 0;
}

/* A stage program: the stub's arguments from scratch, the kind's work, and
 * the level the stub took is given back. */
#define STAGE_PROGRAM(name, prog) \
int stage_##name(struct pt_regs *ctx) { \
	struct scratches_t *all_ = scratches(); \
	struct scratch_t *s_ = level_current(all_); \
	struct call_t c_ = {}; \
	int r_ = 0; \
	if (s_) { c_ = s_->call; r_ = stage_body(ctx, s_, &c_, prog); } \
	level_leave(all_); \
	return r_; \
}

/* A stack taken in a fentry/fexit program starts with the program and its
 * trampoline; the traced function (at +5, after the fentry call) follows. */
#define FENTRY_STACK_SKIP 2

/* fentry/fexit: the kind's work inlined into the hook. */
static __always_inline int run_inline(u64 *ctx, u32 hook_id, u64 skb, u64 aux,
				      u8 aux2, u32 hflags, u64 ret, u32 prog)
{
	struct scratches_t *all;
	struct scratch_t *s;
	struct call_t c = {};
	int r;

	/* a filtered entry leaves nothing (see "Entry/return pairing") */
	if (filters_first(prog, hflags)) {
		struct pf_fields_t f = {};

		if (PF_NEEDED)
			pf_read_btf((struct sk_buff *)skb, &f);
		if (!hit_passes_read(hook_id, (struct sk_buff *)skb, &f))
			return 0;
	}
	if (takes_entry(prog) && !kept_any(hook_id))
		return 0;
	all = scratches();
	s = level_enter(all);
	if (!s)
		return 0;
	s->call.stack_skip = FENTRY_STACK_SKIP;
	c.by_arg = 1;
	c.tag = ctx[0];
	c.skb = skb;
	c.aux = aux;
	c.ret = ret;
	c.aux2 = aux2;
	c.hook_id = hook_id;
	c.hflags = hflags;
	r = stage_body(ctx, s, &c, prog);
	level_leave(all);
	return r;
}

#define KPROBE_ENTER(fn) int enter_##fn(struct pt_regs *ctx)
#define KPROBE_LEAVE(fn) int leave_##fn(struct pt_regs *ctx)
#define KPROBE_RUN(id, SKB, AUX, AUX2, HFLAGS, RET, prog) \
	stage(ctx, id, (u64)(SKB), (u64)(AUX), (u8)(AUX2), HFLAGS, (u64)(RET), prog)
/* bcc names these programs kfunc__[vmlinux__]fn: fn is the kernel's name.
 * The first argument is named because bullseye's bcc 0.18 passes an empty
 * one on to BPF_PROG (its KFUNC_PROBE lacks the ## of later ones), which
 * clang does not elide: "expected parameter declarator" at every hook, the
 * default backend failing to compile on 5.10. Unused: ctx[] is read. */
#define FENTRY_ENTER(fn) KFUNC_PROBE(fn, unsigned long long arg0_)
#define FENTRY_LEAVE(fn) KRETFUNC_PROBE(fn, unsigned long long arg0_)
#define FENTRY_RUN(id, SKB, AUX, AUX2, HFLAGS, RET, prog) \
	run_inline(ctx, id, (u64)(SKB), (u64)(AUX), (u8)(AUX2), HFLAGS, (u64)(RET), prog)
