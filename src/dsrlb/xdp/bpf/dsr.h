/* SPDX-License-Identifier: GPL-2.0 */
/* Sending a frame on: the MAC rewrite every forwarded frame gets (all of DSR, docs/datapath.md §3),
 * and the choice between XDP_TX (egress = ingress) and XDP_REDIRECT. */
#ifndef DSRLB_DSR_H
#define DSRLB_DSR_H

#include "counters.h"
#include "maps.h"

static __always_inline void note_egress(__u32 ifindex)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&last_egress, &zero);
	if (slot)
		*slot = ifindex;
}

static __always_inline int send_frame(struct xdp_md *ctx, __u32 ifindex, const __u8 *dst_mac,
				      const __u8 *src_mac, __u32 ingress_ifindex)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *eth = data;

	if ((void *)(eth + 12) > data_end)
		return XDP_ABORTED; /* unreachable: the frame was parsed */
	__builtin_memcpy(eth, dst_mac, 6);
	__builtin_memcpy(eth + 6, src_mac, 6);
	note_egress(ifindex);
	if (ifindex == ingress_ifindex) {
		count(CNT_TX);
		return XDP_TX;
	}
	count(CNT_REDIRECT);
	return bpf_redirect(ifindex, 0);
}

static __always_inline int send_to_target(struct xdp_md *ctx, const struct target_info *target,
					  __u32 ingress_ifindex)
{
	return send_frame(ctx, target->ifindex, target->dst_mac, target->src_mac, ingress_ifindex);
}

static __always_inline int send_to_next_hop(struct xdp_md *ctx, const struct next_hop *hop,
					    __u32 ingress_ifindex)
{
	return send_frame(ctx, hop->ifindex, hop->dst_mac, hop->src_mac, ingress_ifindex);
}

#endif
