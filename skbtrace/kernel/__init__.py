"""What the live tools and the post-mortem both know about the kernel: the
event layout of bpf/skb_event.h, gso_type bits, the crash rules, the hook
table, BTF, packet headers, the flight-record format. No bcc, no tracing."""
