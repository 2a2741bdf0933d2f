// SPDX-License-Identifier: GPL-2.0
/* dsrlb's XDP program: the data path of docs/datapath.md, byte for byte the same as the Python
 * reference (engine/reference.py, engine/icmp.py), which is the oracle tests compare it with.
 *
 *   parse (parsing.h) -> malformed / fragment policy -> TCP/UDP: NAT return table (behind the
 *   nat_sources filter), then service (service_table),
 *   session and selection (select.h), then DSR (dsr.h) or NAT (nat.h) -> ICMP errors (nat.h)
 *   -> everything else XDP_PASS, unchanged, for the kernel.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "counters.h"
#include "parsing.h"
#include "jhash.h"
#include "select.h"
#include "dsr.h"
#include "nat.h"

static __always_inline int pass(void)
{
	count(CNT_PASS);
	return XDP_PASS;
}

static __always_inline int drop(void)
{
	count(CNT_DROP);
	return XDP_DROP;
}

/* A TCP/UDP packet to a service: the session's target, then DSR or NAT (reference _forward). */
static __always_inline int forward(struct xdp_md *ctx, struct frame_view *v, const struct service_ref *ref,
				   __u16 sport, __u16 dport, __u64 now)
{
	__u32 service_slot = ref->slot;
	struct service_info *info = bpf_map_lookup_elem(&service_infos, &service_slot);
	__u32 target_slot = SLOT_NONE;

	if (!info || !info->active)
		return pass(); /* a key whose service is being removed right now */
	struct target_info *target = session_target(service_slot, info, &v->src,
						    v->version, sport, now, &target_slot);
	if (!target) {
		count(CNT_NO_TARGET);
		return drop();
	}
	__u64 size = v->len;
	int verdict;
	if (target->dsr) {
		verdict = send_to_target(ctx, target, ctx->ingress_ifindex);
	} else {
		__u16 target_port = target->has_port ? target->port : dport;
		if (nat_forward(ctx, v, target, target_port) < 0)
			return pass(); /* TTL 0 or 1: the kernel sends time exceeded */
		record_return(v, ref, info, target, target_slot, service_slot, target_port, sport, dport, now);
		verdict = send_to_target(ctx, target, ctx->ingress_ifindex);
	}
	count_object(&service_stats, service_slot, size, 0);
	count_object(&target_stats, target_slot, size, 0);
	return verdict;
}

/* TCP/UDP: a NAT return, else a packet to a service, else not ours. The clock is read only once
 * the packet is known to need it: traffic that is not balanced never pays for it. */
static __always_inline int handle_l4(struct xdp_md *ctx, struct frame_view *v)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *ports = FRAME_PTR(data, data_end, v->l4, 4);
	__u64 now = 0;
	int have_now = 0;

	if (!ports)
		return pass(); /* unreachable: check_l4 saw the header */
	__u16 sport = ((__u16)ports[0] << 8) | ports[1];
	__u16 dport = ((__u16)ports[2] << 8) | ports[3];

	if (maybe_nat_source(&v->src)) {
		struct nat_value *entry = lookup_return(v, sport, dport);
		if (entry) {
			now = dsrlb_now();
			have_now = 1;
			if (alive(now, entry->last_seen_ns, entry->timeout_ns))
				return nat_return(ctx, v, entry, now);
		}
	}
	struct service_ref *ref = lookup_service(&v->dst, v->version, v->proto, dport);
	if (!ref)
		return pass();
	if (!have_now)
		now = dsrlb_now();
	return forward(ctx, v, ref, sport, dport, now);
}

SEC("xdp")
int dsrlb_xdp(struct xdp_md *ctx)
{
	struct frame_view v = {};

	count(CNT_RX);
	parse_frame(ctx, &v);
	if (v.status != ST_OK) {
		if (v.status == ST_MALFORMED) {
			count(CNT_MALFORMED);
			if (v.has_dst && is_vip(&v.dst, v.dst_family))
				return drop();
		} else if (v.status == ST_FRAGMENT && is_vip(&v.dst, v.dst_family)) {
			count(CNT_FRAGMENT);
			return drop();
		}
		return pass();
	}
	if (v.proto == IPPROTO_TCP || v.proto == IPPROTO_UDP)
		return handle_l4(ctx, &v);
	if (v.proto == IPPROTO_ICMP || v.proto == IPPROTO_ICMPV6_) {
		int verdict = translate_icmp(ctx, &v, dsrlb_now());
		if (verdict >= 0)
			return verdict;
	}
	return pass();
}

/* Clock calibration (maps.h clock_base), run by XdpDataplane through BPF_PROG_TEST_RUN, never attached:
 * the frame's first 16 bytes become jiffies and then the precise monotonic clock, in that order (a
 * reading's time is then never before its jiffy's boundary, xdp/clock.py). */
SEC("xdp")
int dsrlb_clock(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *out = data;

	if ((void *)(out + 2) > data_end)
		return XDP_ABORTED;
	out[0] = bpf_jiffies64();
	out[1] = bpf_ktime_get_ns();
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
