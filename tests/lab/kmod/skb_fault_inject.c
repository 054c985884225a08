// SPDX-License-Identifier: GPL-2.0
/*
 * skb_fault_inject - TEST-ONLY fault injector for the skbtrace lab.
 * Built in the lab guest against its own headers (tests/lab/kmod/build.sh),
 * loaded only there, never installed anywhere.
 *
 * Puts ONE forwarded TCP GSO skb into the state the tools' crash rule names
 * (bpf/skb_common.h crash_reasons: payload beyond the head and the frags,
 * frag_list NULL) just before the kernel segments it, so that skb_segment()
 * dereferences the missing frag_list, as in the users' RHEL 8 vmcore
 * (skb_segment+558) and in the lab's measurement on 6.1 (list_skb->len at
 * 0x70). A kprobe on validate_xmit_skb(skb, dev, again): that is after the
 * tc egress hook (so a tc program's bpf_skb_adjust_room encapsulation has
 * already happened) and right before __skb_gso_segment().
 *
 * Parameters: ifname (egress device, default r-h2), armed (skbs left to
 * break; 1 by default, 0 disarms), symbol (default validate_xmit_skb).
 */
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#include <linux/string.h>

static char *ifname = "r-h2";
module_param(ifname, charp, 0444);
static int armed = 1;
module_param(armed, int, 0644);
static char *symbol = "validate_xmit_skb";
module_param(symbol, charp, 0444);

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	struct sk_buff *skb = (struct sk_buff *)regs->di;
	struct net_device *dev = (struct net_device *)regs->si;
	struct skb_shared_info *sh;
	int left;

	if (READ_ONCE(armed) <= 0 || !skb || !dev || strcmp(dev->name, ifname))
		return 0;
	if (!skb_is_gso(skb))
		return 0;
	sh = skb_shinfo(skb);
	if (!(sh->gso_type & (SKB_GSO_TCPV4 | SKB_GSO_TCPV6)))
		return 0;
	/* payload must lie beyond the head: in the frags (or frag_list) */
	if (!skb->data_len || (!sh->nr_frags && !sh->frag_list))
		return 0;
	left = READ_ONCE(armed);
	if (left <= 0 || cmpxchg(&armed, left, left - 1) != left)
		return 0;
	pr_emerg("skb_fault_inject: breaking skb %px on %s: len=%u data_len=%u nr_frags=%u "
		 "frag_list=%px gso_size=%u gso_type=0x%x encapsulation=%u -> nr_frags=0 "
		 "frag_list=NULL\n", skb, dev->name, skb->len, skb->data_len, sh->nr_frags,
		 sh->frag_list, sh->gso_size, sh->gso_type, skb->encapsulation);
	/* the frag pages and frag_list members leak: the kernel is about to die */
	sh->nr_frags = 0;
	sh->frag_list = NULL;
	return 0;
}

static struct kprobe kp = { .pre_handler = pre };

static int __init fi_init(void)
{
	int ret;

	kp.symbol_name = symbol;
	ret = register_kprobe(&kp);
	if (ret) {
		pr_err("skb_fault_inject: kprobe on %s failed: %d\n", symbol, ret);
		return ret;
	}
	pr_emerg("skb_fault_inject: armed (%d) on %s, egress %s: TEST-ONLY, this kernel will panic\n",
		 armed, symbol, ifname);
	return 0;
}

static void __exit fi_exit(void)
{
	unregister_kprobe(&kp);
}

module_init(fi_init);
module_exit(fi_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("skbtrace lab: test-only skb fault injector (never install)");
