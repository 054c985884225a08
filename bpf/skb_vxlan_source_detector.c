/*
 * skb_vxlan_source_detector.c - where SKB_GSO_UDP_TUNNEL(_CSUM) first
 * appears on an skb, and whether the tunnel metadata agrees with it.
 *
 * Hook kinds (skbtrace/kernel/hooks.py declares every hook once; the fifth macro
 * argument of every line is the EV_* the hook reports):
 *   GSO_CHANGE     entry+return on one skb: gso_type before and after
 *   OBSERVE        entry only: gso_type as found (segmentation, tunnel xmit)
 *   OBSERVE_TNL    OBSERVE for skb_udp_tunnel_segment, which also brackets
 *                  the kernel's own rewrite of the tunnel metadata
 *   VIRTIO_BRACKET virtio_net receive_buf: marks the task as building an skb
 *                  from a virtio header (the skb does not exist at entry)
 *   VIRTIO_SKB     napi_gro_receive inside that bracket: the skb is built,
 *                  its gso_type was set from the header, and the header is
 *                  still in skb->cb (skb_vnet_hdr() in 4.18 and 6.x)
 *
 * Origin: last_change (skb_common.h) holds, per skb address, the first hook
 * that set a tunnel bit (or found it set, F_ORIGIN_ON_ENTRY). An skb seen
 * without tunnel bits drops its entry, so a recycled address starts clean.
 */
#define FR_TOOL "skb_vxlan_source_detector"   /* flight recorder: the tool, and its history key */
#define FR_HIST "origin"
#define FR_TOOL_ID 1
#define KEEPS_NESTING 1   /* report(): "nested" */
#include "skb_common.h"

#define OPEN_TNL 0x100   /* hflags: skb_udp_tunnel_segment opens the bracket */
#define CHECKS_SHIFT 8   /* hflags: crash-rule checks (CHECK_SEGMENT ...) << 8 */

#ifndef GSO_CHANGES_ONLY
#define GSO_CHANGES_ONLY 0
#endif

BPF_HASH(in_rx, struct task_key_t, u32, 1024);     /* receive_buf hook id + 1 */

/* struct virtio_net_hdr, as virtio_net copies it to skb->cb (little endian
 * on x86 for both legacy and VERSION_1 devices). */
struct vnet_hdr_t {
	u8  flags;
	u8  gso_type;
	u16 hdr_len;
	u16 gso_size;
	u16 csum_start;
	u16 csum_offset;
};

/* Update the origin record and decide whether the hit is worth a line. */
/* since: entry time of this call; a tunnel origin recorded after it was set
 * by a nested hook (udp_gro_complete inside udp4_gro_complete inside
 * inet_gro_complete) and is the more precise one. */
/* nested: an outer traced call of this task is still running; it may be the
 * setter (udp_gro_complete sets the bit, then calls the inner
 * inet_gro_complete), so a nested "already set" is not recorded as origin. */
/* checks: the shared crash rule for the function being entered (skb_segment:
 * the state that crashes it, reported with the tunnel bit's origin). */
static __always_inline void report(void *ctx, struct scratch_t *s, u8 event, int vnet, u64 since,
				   int nested, u32 checks)
{
	struct skb_event *ev = &s->ev;
	u32 tb = ev->gso_type_before & KGSO_TUNNEL_BITS;
	u32 ta = ev->gso_type_after & KGSO_TUNNEL_BITS;
	u64 key = ev->skb;
	struct last_t *o = last_change.lookup(&key);
	struct last_t n = {};
	int new_origin = 0, tnl;
	u32 crash = checks ? crash_reasons(s, checks) : 0;
	u32 r;

	if (ta && tb && !o && nested) {
		/* leave it to the outer call */
	} else if (ta && (!o || (!tb && (o->ts_ns < since || (o->flags & F_ORIGIN_ON_ENTRY))))) {
		n.ts_ns = ev->ts_ns;
		n.head = ev->head;
		n.hook_id = ev->hook_id;
		if (tb)
			n.flags = F_ORIGIN_ON_ENTRY;
		last_change.update(&key, &n);
		new_origin = 1;
		o = last_change.lookup(&key);
	} else if (!ta && o) {
		last_change.delete(&key);
		o = 0;
	}
	if (!ev->gso_type_before && !ev->gso_type_after && !vnet && !crash)
		return;
	if (GSO_CHANGES_ONLY && ev->gso_type_before == ev->gso_type_after && !new_origin &&
	    !crash)
		return;
	/* Setter hooks see the header offsets mid-construction: GRO completion
	 * runs with network_header on the innermost IP header,
	 * iptunnel_handle_offloads() before the outer headers are pushed,
	 * udp_tunnel_xmit_skb() before the outer IP header, adjust_room before
	 * the program writes the outer headers (all measured in the lab). There
	 * only skb->encapsulation is checked; the offsets at the next hook. */
	tnl = in_tunnel_segment();
	r = eval_rules(s, 0, tnl);
	if (event == EV_GRO_COMPLETE || event == EV_TUNNEL_XMIT || event == EV_BPF_HELPER)
		r &= RSN_TUNNEL_NO_ENCAP;
	else
		r &= RSN_TUNNEL_MASK;
	r |= crash;
	if (tnl)
		ev->flags |= F_IN_TNL_SEG;
	ev->event = event;
	ev->reasons = r;
	ev->severity = severity_of(r);
	if (o) {
		ev->last_hook = o->hook_id + 1;
		ev->last_ts_ns = o->ts_ns;
		ev->flags |= o->flags;
		if (o->head != ev->head)
			ev->flags |= F_LAST_STALE;
	}
	flight_record(ev, new_origin);
	submit(ctx, ev);
}

static __always_inline int on_change_enter(void *ctx, struct scratch_t *s, struct call_t *c)
{
	struct sk_buff *skb = (struct sk_buff *)c->skb;
	struct task_key_t tk = {};
	struct entry_key_t ek = {};
	u32 depth;

	depth = entry_begin(c, &tk);
	if (!load(s, skb, c->hook_id, 0))
		return 0;
	entry_kept(c, &tk, depth, &ek);
	save_entry(s, skb, c->hook_id, c->aux, c->aux2, 0, &ek, ctx);
	return 0;
}

static __always_inline int on_change_return(void *ctx, struct scratch_t *s, struct call_t *c)
{
	u32 hook_id = c->hook_id;
	struct task_key_t tk = {};
	u32 *dp;

	if (take_entry(s, c))
		return 0;
	if (read_skb(s, (struct sk_buff *)s->entry.skb))
		return 0;
	if (!s->entry.gso_type && !s->sh.gso_type) {
		/* what report() does with no gso_type before or after: no line,
		 * and a recycled address loses its origin record */
		u64 key = s->entry.skb;

		last_change.delete(&key);
		return 0;
	}
	fill_state(s, hook_id);
	copy_entry_to_event(s);
	s->ev.ret = c->ret;
	task_key(&tk);
	dp = depths.lookup(&tk);
	report(ctx, s, c->hflags, 0, s->entry.ts_ns, dp && *dp, 0);
	return 0;
}

/* filtered: the hook ran hit_passes() (filters_first()) */
static __always_inline int on_observe(void *ctx, struct scratch_t *s, u32 hook_id,
				      struct sk_buff *skb, u64 aux, u8 event, u32 checks,
				      int filtered)
{
	if (!filtered && !hit_passes(hook_id, skb))
		return 0;
	if (!load(s, skb, hook_id, 1))
		return 0;
	before_is_after(&s->ev);
	s->ev.aux = aux;
	s->ev.stack_len = take_stack(ctx, s, s->stack);
	report(ctx, s, event, 0, s->ev.ts_ns, 0, checks);
	return 0;
}

static __always_inline int rx_bracket(u32 hook_id, int enter)
{
	struct task_key_t tk = {};
	u32 v = hook_id + 1;

	task_key(&tk);
	if (enter) {
		count_hit(hook_id);
		in_rx.update(&tk, &v);
	} else {
		in_rx.delete(&tk);
	}
	return 0;
}

static __always_inline int on_virtio_skb(void *ctx, struct scratch_t *s, u32 hook_id,
					 struct sk_buff *skb, u8 event)
{
	struct task_key_t tk = {};
	struct vnet_hdr_t h = {};
	u32 *rx;

	task_key(&tk);
	rx = in_rx.lookup(&tk);
	if (!rx)
		return 0;          /* another driver's packet */
	if (!hit_passes(hook_id, skb))
		return 0;
	if (!load(s, skb, *rx - 1, 1))
		return 0;
	__builtin_memcpy(&h, s->skb.cb, sizeof(h));
	s->ev.vnet_flags = h.flags;
	s->ev.vnet_gso_type = h.gso_type;
	s->ev.vnet_hdr_len = h.hdr_len;
	s->ev.vnet_gso_size = h.gso_size;
	s->ev.vnet_csum_start = h.csum_start;
	s->ev.vnet_csum_offset = h.csum_offset;
	s->ev.flags |= F_VNET_VALID;
	/* the skb was born in this receive_buf call: nothing was set before */
	s->ev.gso_type_before = 0;
	s->ev.gso_size_before = 0;
	s->ev.frag_list_before = s->ev.frag_list_after;
	s->ev.nr_frags_before = s->ev.nr_frags_after;
	s->ev.data_len_before = s->ev.data_len_after;
	s->ev.stack_len = take_stack(ctx, s, s->stack);
	report(ctx, s, event, h.gso_type != 0, s->ev.ts_ns, 0, 0);
	return 0;
}

/* See stage() in skb_common.h. skb_udp_tunnel_segment's entry (OPEN_TNL)
 * opens the bracket whatever the filters say, so its stage filters; napi_gro_
 * receive's (VIRTIO_SKB) is a hit only inside receive_buf, so it does too. */
static __always_inline int filters_first(u32 prog, u32 hflags)
{
	return prog == STAGE_CHANGE_ENTER || (prog == STAGE_OBSERVE && !(hflags & OPEN_TNL));
}

static __always_inline int takes_entry(u32 prog)
{
	return prog == STAGE_CHANGE_RETURN;
}

/* Each kind's work, once: the stage programs of the kprobe backend and the
 * fentry hooks run it (see stage() in skb_common.h). */
static __always_inline int stage_body(void *ctx, struct scratch_t *s, struct call_t *c,
				      u32 prog)
{
	switch (prog) {
	case STAGE_CHANGE_ENTER:
		return on_change_enter(ctx, s, c);
	case STAGE_CHANGE_RETURN:
		return on_change_return(ctx, s, c);
	case STAGE_OBSERVE:
		on_observe(ctx, s, c->hook_id, (struct sk_buff *)c->skb, c->aux, c->hflags & 0xff,
			   (c->hflags >> CHECKS_SHIFT) & (CHECK_SEGMENT | CHECK_SEGMENT_LIST),
			   filters_first(prog, c->hflags));
		if (c->hflags & OPEN_TNL)
			tnl_bracket(1);
		return 0;
	case STAGE_VIRTIO_SKB:
		return on_virtio_skb(ctx, s, c->hook_id, (struct sk_buff *)c->skb, c->hflags);
	}
	return 0;
}

STAGE_PROGRAM(change_enter, STAGE_CHANGE_ENTER)
STAGE_PROGRAM(change_return, STAGE_CHANGE_RETURN)
STAGE_PROGRAM(observe, STAGE_OBSERVE)
STAGE_PROGRAM(virtio_skb, STAGE_VIRTIO_SKB)

/* One line per hook and backend, generated from skbtrace/kernel/hooks.py:
 * HOOK_<KIND>(B, fn, id, SKB, AUX, AUX2, EVENT, RET), B being KPROBE or
 * FENTRY (see skb_common.h); EVENT is the EV_* the hook reports. */
#define HOOK_GSO_CHANGE(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, AUX, AUX2, EVENT, 0, STAGE_CHANGE_ENTER); }
#define HOOK_GSO_CHANGE_RET(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_LEAVE(fn) { return B##_RUN(id, 0, 0, 0, EVENT, RET, STAGE_CHANGE_RETURN); }

#define HOOK_OBSERVE(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, AUX, 0, EVENT, 0, STAGE_OBSERVE); }

/* skb_segment: the shared crash rule runs on the entry state */
#define HOOK_OBSERVE_SEG(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, AUX, 0, (EVENT) | (CHECK_SEGMENT << CHECKS_SHIFT), 0, STAGE_OBSERVE); }

/* the stage opens the bracket after observing the entry state (OPEN_TNL) */
#define HOOK_OBSERVE_TNL(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, AUX, 0, (EVENT) | OPEN_TNL, 0, STAGE_OBSERVE); }
#define HOOK_OBSERVE_TNL_RET(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_LEAVE(fn) { return tnl_bracket(-1); }

#define HOOK_VIRTIO_BRACKET(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_ENTER(fn) { return rx_bracket(id, 1); }
#define HOOK_VIRTIO_BRACKET_RET(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_LEAVE(fn) { return rx_bracket(id, 0); }

#define HOOK_VIRTIO_SKB(B, fn, id, SKB, AUX, AUX2, EVENT, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, 0, 0, EVENT, 0, STAGE_VIRTIO_SKB); }

HOOK_LINES
