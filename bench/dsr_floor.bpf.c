// SPDX-License-Identifier: GPL-2.0
/* The end-to-end floor (bench/e2e.py --engines floor): the least a DSR balancer can do on the lab's
 * wire. IPv4 frames to the VIP get the target's MAC as destination and the balancer's own (the frame's
 * old destination) as source, and go back out (XDP_TX); everything else goes to the stack. No
 * lookups, no sessions, no counters, one fixed target: what remains of the VIP's cost is the
 * topology's extra hop. The bench compiles it with the VIP and the MAC as -D definitions. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef FLOOR_VIP_BE32
#error "compile with -DFLOOR_VIP_BE32=<the VIP as a network-order u32> and -DFLOOR_TARGET_MAC=<6 bytes>"
#endif

SEC("xdp")
int dsr_floor(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	static const unsigned char target_mac[ETH_ALEN] = { FLOOR_TARGET_MAC };
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->daddr != FLOOR_VIP_BE32)
		return XDP_PASS;
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, target_mac, ETH_ALEN);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
