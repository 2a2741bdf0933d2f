/* SPDX-License-Identifier: GPL-2.0 */
/* Per-CPU counters: global (the names every engine shares, docs/datapath.md §6), per service and
 * per target. Per-CPU arrays need no atomics; Python sums the CPUs. */
#ifndef DSRLB_COUNTERS_H
#define DSRLB_COUNTERS_H

#include "maps.h"

/* Order = engine/reference.py COUNTER_NAMES, then dsrlb's own (xdp/layout.py COUNTER_NAMES). */
enum dsrlb_counter {
	CNT_RX,
	CNT_PASS,
	CNT_DROP,
	CNT_TX,
	CNT_REDIRECT,
	CNT_MALFORMED,
	CNT_FRAGMENT,
	CNT_NO_TARGET,
	CNT_NO_ROUTE,
	CNT_SESSION_NEW,
	CNT_SESSION_HIT,
	CNT_SESSION_MOVED,
	CNT_NAT_RETURN,
	CNT_ICMP_TRANSLATED,
	CNT_EVENT_LOST, /* XDP only: the session event ring buffer was full */
	CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);
	if (value)
		*value += 1;
}

static __always_inline void count_object(void *stats_map, __u32 slot, __u64 bytes, int new_session)
{
	struct object_stats *stats = bpf_map_lookup_elem(stats_map, &slot);
	if (!stats)
		return;
	if (new_session) {
		stats->sessions_new += 1;
		return;
	}
	stats->packets += 1;
	stats->bytes += bytes;
}

#endif
