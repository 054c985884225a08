/*
 * skb_frag_list_watcher.c - who creates, clears or changes
 * skb_shinfo(skb)->frag_list, and when an skb is in a state that
 * skb_segment() would crash on.
 *
 * Hook kinds (skbtrace/kernel/hooks.py declares every hook once and the loader
 * instantiates one HOOK_* line per hook present in the running kernel):
 *   MUTATE   entry+return on one skb: CREATE / CLEAR / MODIFY of frag_list,
 *            INCONSISTENT when the call left the skb in a newly bad state
 *   COPY     entry+return, the return value is a new skb: PROPAGATE, COPY_FAIL
 *   CONSUME  entry+return, the skb is gone at return: ACCESS with the return code
 *   SEGMENT  entry only: ACCESS when frag_list is there, INCONSISTENT on rules
 *   BRACKET  entry+return of skb_udp_tunnel_segment, to suppress tunnel rules
 *            while the kernel itself rewrites the tunnel metadata
 */
#define FR_TOOL "skb_frag_list_watcher"   /* flight recorder: the tool, and its history key */
#define FR_HIST "last"
#define FR_TOOL_ID 0
#include "skb_common.h"

#define HF_ENTRY_CHECK 1
#define HF_CRASH_CHECK CHECK_SEGMENT		/* 2 */
#define HF_LIST_CHECK  CHECK_SEGMENT_LIST	/* 4 */

/* Pending events of CONSUME hooks: built at entry (the skb is readable),
 * sent at return with the return code. */
BPF_TABLE("lru_hash", struct entry_key_t, struct record_t, pending, 1024);

static __always_inline void note_change(u64 skb, u64 head, u32 hook_id, u64 ts)
{
	struct last_t l = {};

	l.ts_ns = ts;
	l.head = head;
	l.hook_id = hook_id;
	last_change.update(&skb, &l);
}

static __always_inline void emit(void *ctx, struct scratch_t *s, u8 event, u32 reasons)
{
	struct skb_event *ev = &s->ev;
	struct last_t *l;
	u64 key = ev->skb;

	ev->event = event;
	ev->reasons = reasons;
	ev->severity = severity_of(reasons);
	l = last_change.lookup(&key);
	if (l) {
		ev->last_hook = l->hook_id + 1;
		ev->last_ts_ns = l->ts_ns;
		if (l->head != ev->head)
			ev->flags |= F_LAST_STALE;
	}
	flight_record(ev, 0);
	submit(ctx, ev);
}

/* Entry checks at segmentation hooks: the crash site and its neighbours. */
static __always_inline void entry_check(void *ctx, struct scratch_t *s, u32 reasons,
					int in_tnl_seg)
{
	before_is_after(&s->ev);
	s->ev.stack_len = take_stack(ctx, s, s->stack);
	if (in_tnl_seg)
		s->ev.flags |= F_IN_TNL_SEG;
	if (reasons)
		emit(ctx, s, EV_INCONSISTENT, reasons);
	else if (s->ev.frag_list_after)
		emit(ctx, s, EV_ACCESS, 0);
}

static __always_inline int on_segment(void *ctx, struct scratch_t *s, u32 hook_id,
				      struct sk_buff *skb, u32 hflags)
{
	int tnl;
	u32 r;

	if (!load(s, skb, hook_id, 1))
		return 0;
	tnl = in_tunnel_segment();
	r = eval_rules(s, hflags, tnl);
	entry_check(ctx, s, r, tnl);
	return 0;
}

static __always_inline int on_enter(void *ctx, struct scratch_t *s, struct call_t *c)
{
	struct sk_buff *skb = (struct sk_buff *)c->skb;
	struct task_key_t tk = {};
	struct entry_key_t ek = {};
	u32 depth, r;
	int tnl;

	depth = entry_begin(c, &tk);
	if (!load(s, skb, c->hook_id, c->hflags & HF_ENTRY_CHECK))
		return 0;
	tnl = in_tunnel_segment();
	r = eval_rules(s, c->hflags, tnl);
	if (c->hflags & HF_ENTRY_CHECK)
		entry_check(ctx, s, r, tnl);
	entry_kept(c, &tk, depth, &ek);
	save_entry(s, skb, c->hook_id, c->aux, 0, r, &ek, ctx);
	return 0;
}

static __always_inline int on_mutate_return(void *ctx, struct scratch_t *s, struct call_t *c)
{
	struct sk_buff *k = &s->skb;
	struct skb_shared_info *sh = &s->sh;
	struct entry_t *e;
	u64 list_before, list_after, ts;
	u32 r, fresh, tunnel;
	int changed;

	if (take_entry(s, c))
		return 0;
	e = &s->entry;
	if (read_skb(s, (struct sk_buff *)e->skb))
		return 0;
	list_before = e->frag_list;
	list_after = (u64)sh->frag_list;
	changed = list_before != list_after || e->gso_size != sh->gso_size ||
		  e->gso_type != sh->gso_type || e->data_len != k->data_len ||
		  e->nr_frags != sh->nr_frags;
	/* Most returns change nothing worth a line: the event's fields (task,
	 * device, flow) are read for a line, or for the tunnel rule that
	 * reads the outer flow. */
	tunnel = sh->gso_type & KGSO_TUNNEL_BITS;
	if (tunnel)
		fill_state(s, c->hook_id);
	else
		s->ev.family = 0;
	r = eval_rules(s, 0, tunnel ? in_tunnel_segment() : 0);
	fresh = r & ~e->reasons;   /* report a bad state once, where it began */

	/* emit before recording, so last= names the change before this one */
	if (list_before != list_after || fresh) {
		if (!tunnel)
			fill_state(s, c->hook_id);
		copy_entry_to_event(s);
		s->ev.ret = c->ret;
		ts = s->ev.ts_ns;
		if (list_before != list_after)
			emit(ctx, s, !list_before ? EV_CREATE : !list_after ? EV_CLEAR : EV_MODIFY,
			     fresh);
		else
			emit(ctx, s, EV_INCONSISTENT, fresh);
	} else {
		ts = bpf_ktime_get_ns();
	}
	if (changed)
		note_change(e->skb, (u64)k->head, c->hook_id, ts);
	return 0;
}

static __always_inline int on_copy_return(void *ctx, struct scratch_t *s, struct call_t *c)
{
	u32 hook_id = c->hook_id;
	struct entry_t *e;
	struct skb_event *ev;
	u64 nskb = c->ret;
	u32 r;

	if (take_entry(s, c))
		return 0;
	e = &s->entry;
	/* Copies of plain skbs are everyday traffic: only GSO or frag_list
	 * state is worth a line. */
	if (!e->frag_list && !e->gso_size)
		return 0;
	if (!nskb) {
		if (read_skb(s, (struct sk_buff *)e->skb))
			return 0;
		fill_state(s, hook_id);
		ev = &s->ev;
		copy_entry_to_event(s);
		ev->flags |= F_AFTER_UNREADABLE;
		ev->frag_list_after = 0;
		emit(ctx, s, EV_COPY_FAIL, 0);
		return 0;
	}
	if (read_skb(s, (struct sk_buff *)nskb))
		return 0;
	fill_state(s, hook_id);
	ev = &s->ev;
	copy_entry_to_event(s);
	ev->new_skb = nskb;
	ev->ret = nskb;
	note_change(nskb, ev->head, hook_id, ev->ts_ns);
	r = eval_rules(s, 0, in_tunnel_segment());
	emit(ctx, s, EV_PROPAGATE, r & ~e->reasons);
	return 0;
}

static __always_inline int on_consume_enter(void *ctx, struct scratch_t *s, struct call_t *c)
{
	struct sk_buff *skb = (struct sk_buff *)c->skb;
	struct task_key_t tk = {};
	struct entry_key_t ek = {};
	struct last_t *l;
	u64 key;
	u32 depth;

	depth = entry_begin(c, &tk);
	if (!load(s, skb, c->hook_id, 1))
		return 0;
	if (!s->ev.frag_list_after && !s->ev.gso_size_after)
		return 0;
	before_is_after(&s->ev);
	s->ev.event = EV_ACCESS;
	s->ev.aux = c->aux;
	s->ev.flags |= F_AFTER_UNREADABLE;
	s->ev.reasons = eval_rules(s, 0, in_tunnel_segment());
	s->ev.severity = severity_of(s->ev.reasons);
	if (s->ev.reasons)
		s->ev.event = EV_INCONSISTENT;
	key = s->ev.skb;
	l = last_change.lookup(&key);
	if (l) {
		s->ev.last_hook = l->hook_id + 1;
		s->ev.last_ts_ns = l->ts_ns;
		if (l->head != s->ev.head)
			s->ev.flags |= F_LAST_STALE;
	}
	/* recorded at entry: the skb may be gone, or the kernel, at return */
	flight_record(&s->ev, 0);
	s->ev.stack_len = take_stack(ctx, s, s->stack);
	entry_kept(c, &tk, depth, &ek);
	if (pending.update(&ek, (struct record_t *)&s->ev))
		count(CNT_ENTRY_FULL);
	else
		kept_add(c->hook_id, 1);
	return 0;
}

static __always_inline int on_consume_return(void *ctx, struct call_t *c)
{
	struct task_key_t tk = {};
	struct entry_key_t ek = {};
	struct record_t *rec;
	u32 kept_by;

	if (return_key(c, &tk, &ek))
		return 0;
	rec = pending.lookup(&ek);
	if (!rec)
		return 0;
	return_found(c, &tk);
	kept_by = rec->ev.hook_id;
	if (kept_by == c->hook_id) {
		rec->ev.ret = c->ret;
		submit(ctx, &rec->ev);
	} else {
		count(CNT_UNPAIRED);
	}
	pending.delete(&ek);
	kept_add(kept_by, -1);
	return 0;
}

/* See stage() in skb_common.h: every entry stage starts with the filters,
 * every return stage but the bracket's takes an entry record. */
static __always_inline int filters_first(u32 prog, u32 hflags)
{
	return prog == STAGE_ENTER || prog == STAGE_CONSUME_ENTER || prog == STAGE_SEGMENT;
}

static __always_inline int takes_entry(u32 prog)
{
	return prog == STAGE_MUTATE_RETURN || prog == STAGE_COPY_RETURN ||
	       prog == STAGE_CONSUME_RETURN;
}

/* Each kind's work, once: the stage programs of the kprobe backend and the
 * fentry hooks run it (see stage() in skb_common.h). The loader puts the stage
 * programs in `stages` at the STAGE_* indexes of the CONFIG block. */
static __always_inline int stage_body(void *ctx, struct scratch_t *s, struct call_t *c,
				      u32 prog)
{
	switch (prog) {
	case STAGE_ENTER:
		return on_enter(ctx, s, c);
	case STAGE_MUTATE_RETURN:
		return on_mutate_return(ctx, s, c);
	case STAGE_COPY_RETURN:
		return on_copy_return(ctx, s, c);
	case STAGE_CONSUME_ENTER:
		return on_consume_enter(ctx, s, c);
	case STAGE_CONSUME_RETURN:
		return on_consume_return(ctx, c);
	case STAGE_SEGMENT:
		return on_segment(ctx, s, c->hook_id, (struct sk_buff *)c->skb, c->hflags);
	}
	return 0;
}

STAGE_PROGRAM(enter, STAGE_ENTER)
STAGE_PROGRAM(mutate_return, STAGE_MUTATE_RETURN)
STAGE_PROGRAM(copy_return, STAGE_COPY_RETURN)
STAGE_PROGRAM(consume_enter, STAGE_CONSUME_ENTER)
STAGE_PROGRAM(consume_return, STAGE_CONSUME_RETURN)
STAGE_PROGRAM(segment, STAGE_SEGMENT)

/* One line per hook and backend, generated from skbtrace/kernel/hooks.py:
 * HOOK_<KIND>(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET), B being KPROBE or
 * FENTRY (see skb_common.h). SKB, AUX and RET are expressions on the hook's
 * ctx (AUX2 unused here). */
#define HOOK_MUTATE(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, AUX, 0, HFLAGS, 0, STAGE_ENTER); }
#define HOOK_MUTATE_RET(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_LEAVE(fn) { return B##_RUN(id, 0, 0, 0, HFLAGS, RET, STAGE_MUTATE_RETURN); }

#define HOOK_COPY(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, AUX, 0, HFLAGS, 0, STAGE_ENTER); }
#define HOOK_COPY_RET(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_LEAVE(fn) { return B##_RUN(id, 0, 0, 0, HFLAGS, RET, STAGE_COPY_RETURN); }

#define HOOK_CONSUME(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, AUX, 0, HFLAGS, 0, STAGE_CONSUME_ENTER); }
#define HOOK_CONSUME_RET(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_LEAVE(fn) { return B##_RUN(id, 0, 0, 0, HFLAGS, RET, STAGE_CONSUME_RETURN); }

#define HOOK_SEGMENT(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_ENTER(fn) { return B##_RUN(id, SKB, 0, 0, HFLAGS, 0, STAGE_SEGMENT); }

#define HOOK_BRACKET(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_ENTER(fn) { count_hit(id); return tnl_bracket(1); }
#define HOOK_BRACKET_RET(B, fn, id, SKB, AUX, AUX2, HFLAGS, RET) \
B##_LEAVE(fn) { return tnl_bracket(-1); }

HOOK_LINES
