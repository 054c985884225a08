/*
 * skb_event.h - the one record both tools send through the perf buffer.
 *
 * This file is the single source of truth for the event layout and for the
 * event, reason, severity and flag numbers: skbtrace/kernel/event.py parses it at
 * import time, and tests/unit compile it with gcc to check that the Python
 * mirror has the same size and offsets. Keep it free of kernel includes and
 * keep every field naturally aligned with explicit padding, so that the layout
 * is the same for clang -target bpf and for gcc on the host.
 */
#ifndef SKB_EVENT_H
#define SKB_EVENT_H

/* event: what the hook saw happen (watcher) or which setter class (detector) */
#define EV_CREATE        1   /* frag_list NULL -> pointer */
#define EV_CLEAR         2   /* frag_list pointer -> NULL */
#define EV_MODIFY        3   /* frag_list pointer -> other pointer */
#define EV_PROPAGATE     4   /* a copy carried frag_list / GSO state to a new skb */
#define EV_COPY_FAIL     5   /* a copy returned NULL for a GSO / frag_list skb */
#define EV_ACCESS        6   /* a segmentation or fragmentation hook read frag_list */
#define EV_INCONSISTENT  7   /* a consistency rule fired; see reasons */
#define EV_VIRTIO_RX     8   /* detector: virtio_net built the skb from a vnet header */
#define EV_GRO_COMPLETE  9   /* detector: GRO completion set gso_type */
#define EV_TUNNEL_XMIT   10  /* detector: kernel tunnel transmit offload setup */
#define EV_BPF_HELPER    11  /* detector: a BPF helper changed the packet */
#define EV_GSO_SET       12  /* detector: gso_type seen at segmentation */

/* reasons: consistency rules, one bit each (skbtrace/kernel/rules.py has the text) */
#define RSN_NULL_FRAGLIST_GSO     0x0001 /* seeds' rule: no frag_list, gso_size>0, nr_frags 0, data_len 0 */
#define RSN_FRAGLIST_NO_LIST      0x0002 /* SKB_GSO_FRAGLIST set, frag_list NULL */
#define RSN_TUNNEL_NO_ENCAP       0x0004 /* UDP_TUNNEL(_CSUM) set, skb->encapsulation 0 */
#define RSN_TUNNEL_INNER_EQ_OUTER 0x0008 /* UDP_TUNNEL set, inner network header == outer */
#define RSN_TUNNEL_OUTER_NOT_UDP  0x0010 /* UDP_TUNNEL set, outer L4 is not UDP */
#define RSN_SEG_NO_PAYLOAD        0x0020 /* skb_segment: no linear payload, no frags, no frag_list */
#define RSN_SEG_UNCOVERED         0x0040 /* skb_segment: data_len beyond what frags hold, no frag_list */
#define RSN_SEG_BY_FRAGS_NO_LIST  0x0080 /* skb_segment: gso_size GSO_BY_FRAGS, no frag_list */
#define RSN_SEGLIST_NO_LIST       0x0100 /* skb_segment_list: FRAGLIST skb, no frag_list */

#define RSN_CRASH_MASK  (RSN_SEG_NO_PAYLOAD | RSN_SEG_UNCOVERED | RSN_SEG_BY_FRAGS_NO_LIST | RSN_SEGLIST_NO_LIST)
#define RSN_TUNNEL_MASK (RSN_TUNNEL_NO_ENCAP | RSN_TUNNEL_INNER_EQ_OUTER | RSN_TUNNEL_OUTER_NOT_UDP)

/* severity */
#define SEV_NONE      0
#define SEV_WARNING   1 /* odd state the kernel survives (head holds the payload) */
#define SEV_CRITICAL  2 /* segmentation would dereference the missing frag_list */

/* flags */
#define F_ENCAP            0x01 /* skb->encapsulation (after) */
#define F_CLONED           0x02 /* skb->cloned (after) */
#define F_AFTER_UNREADABLE 0x04 /* the hook consumed the skb: no after-state */
#define F_LAST_STALE       0x08 /* last mutation was recorded with another skb->head */
#define F_ENCAP_BEFORE     0x10 /* skb->encapsulation at entry */
#define F_VNET_VALID       0x20 /* vnet_* fields hold a virtio_net header */
#define F_IN_TNL_SEG       0x40 /* inside skb_udp_tunnel_segment: tunnel rules suppressed */
#define F_ORIGIN_ON_ENTRY  0x80 /* detector: the origin hook found the tunnel bit already set */

/* counters: per-CPU array indexes, read at exit for the statistics */
#define CNT_FILTERED     0 /* hook hits dropped by the in-kernel filters */
#define CNT_SUBMIT_FAIL  1 /* perf_submit failed: buffer full on this CPU */
#define CNT_UNPAIRED     2 /* return without a matching entry record */
#define CNT_ENTRY_FULL   3 /* entry record could not be stored (map full) */
#define CNT_STAGE_FAIL   4 /* tail call into a stage program failed */
#define CNT_FR_WRITTEN   5 /* flight recorder: records written to the trace buffer */
#define CNT_FR_SUPPRESSED 6 /* flight recorder: records dropped by the rate limit */
#define CNT_FR_FAILED    7 /* flight recorder: bpf_trace_printk refused a line */
#define CNT_TOO_DEEP     8 /* hook hit while SCRATCH_LEVELS hooks ran on this CPU: not traced */
#define NR_COUNTERS      9

#define MAX_HOOKS        64

/* --stack-trace: each event carries its own kernel stack, STACK_FRAMES u64
 * addresses right after struct skb_event in the same perf record. A shared
 * stack map (bpf_get_stackid) was tried first: its hash buckets collide
 * (-EEXIST, the event has no stack) and a reader then takes the next event's
 * stack for this one's. */
#define STACK_FRAMES     48

/* --flight-recorder: findings written into the kernel's trace buffer by the
 * BPF program itself (bpf_trace_printk), so that kernel.ftrace_dump_on_oops
 * prints them on the console when the kernel dies before user space reads
 * the perf buffer. A record is FR_LINES lines "FR_PREFIX <seq> <n>/<FR_LINES>
 * key=value ...": at most 3 arguments per bpf_trace_printk on 4.18, one %s.
 * skbtrace/kernel/flightrec.py reads them back, this version and the older ones;
 * change FR_PREFIX when the layout changes (SKBFR1: the first line had no
 * skb address). */
#define FR_PREFIX        "SKBFR2"
#define FR_LINES         7
#define FR_OFF           0
#define FR_CRASH         1 /* records when the crash rule holds (default) */
#define FR_ALL           2 /* also every WARNING finding and tunnel-bit setter */
#define FR_RATE_PER_SEC  8 /* records per CPU per second, for each of the two classes */
#define FR_NAME_LEN      32
#define FR_EVENT_BASE    MAX_HOOKS        /* fr_names: hooks, then events, then severities */
#define FR_SEV_BASE      (MAX_HOOKS + 16)
#define FR_NAMES         (MAX_HOOKS + 20)

struct skb_event {
	u64 ts_ns;             /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	u64 skb;               /* the skb the hook acted on */
	u64 new_skb;           /* copy hooks: the skb returned (0: NULL) */
	u64 frag_list_before;
	u64 frag_list_after;
	u64 head;              /* skb->head after the hook */
	s64 ret;               /* return value of the hook (pointer or int) */
	u64 aux;               /* hook argument worth showing (mask, flags, len) */
	u64 last_ts_ns;        /* watcher: when last_hook changed this skb; detector: origin */
	u32 pid;               /* thread id */
	u32 cpu;
	u32 len;               /* skb->len after */
	u32 data_len_before;
	u32 data_len_after;
	u32 gso_type_before;
	u32 gso_type_after;
	u32 ifindex;           /* skb->dev->ifindex */
	u32 iif;               /* skb->skb_iif */
	u32 reasons;           /* RSN_* of the state reported */
	u32 frags_bytes;       /* bytes the page frags hold (crash check) */
	s32 stack_len;         /* frames in the stack that follows the event (--stack-trace);
	                        * < 0: -errno of bpf_get_stack; 0: none asked for */
	u16 hook_id;           /* index into the tool's hook table */
	u16 last_hook;         /* hook_id + 1 of the last change (0: none seen) */
	u16 gso_size_before;
	u16 gso_size_after;
	u16 gso_segs;
	u16 protocol;          /* skb->protocol, host order */
	u16 mac_header;
	u16 network_header;
	u16 transport_header;
	u16 inner_mac_header;
	u16 inner_network_header;
	u16 inner_transport_header;
	u16 sport;
	u16 dport;
	u16 inner_sport;
	u16 inner_dport;
	u16 vnet_hdr_len;
	u16 vnet_gso_size;
	u16 vnet_csum_start;
	u16 vnet_csum_offset;
	u8  event;             /* EV_* */
	u8  severity;          /* SEV_* */
	u8  nr_frags_before;
	u8  nr_frags_after;
	u8  flags;             /* F_* */
	u8  family;            /* 4, 6 or 0 (not parsed) */
	u8  l4proto;
	u8  inner_family;
	u8  inner_l4proto;
	u8  vnet_flags;
	u8  vnet_gso_type;
	u8  aux2;              /* second argument worth showing (adjust_room mode) */
	u8  pad[4];
	u8  saddr[16];
	u8  daddr[16];
	u8  inner_saddr[16];
	u8  inner_daddr[16];
	char comm[16];
};

#endif /* SKB_EVENT_H */
