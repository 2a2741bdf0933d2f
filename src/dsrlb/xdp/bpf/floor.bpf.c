// SPDX-License-Identifier: GPL-2.0
/* The benchmark floor: the least an XDP forwarder can do. Swap the Ethernet addresses and send the
 * frame back out (XDP_TX). bench/xdp_cost.py reports every dsrlb path as a ratio to this program,
 * measured the same way (BPF_PROG_TEST_RUN with repeat) in the same run.
 *
 * xdp_floor_lookup is the floor plus the one thing no balancer that keeps sessions can skip: a hit in
 * an LRU hash map with dsrlb's session key and value sizes, keyed by the IPv4 source. The bench
 * reports it beside the paths, to show what part of a ratio that lookup alone takes. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

struct floor_key { /* the size of maps.h struct session_key */
	__u32 addr[4];
	__u32 service_id;
	__u16 port;
	__u8 family;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct floor_key);
	__type(value, __u64[2]); /* the size of maps.h struct session_value */
} floor_sessions SEC(".maps");

static __always_inline void swap_macs(struct ethhdr *eth)
{
	unsigned char tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
}

SEC("xdp")
int xdp_floor(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	swap_macs(eth);
	return XDP_TX;
}

SEC("xdp")
int xdp_floor_lookup(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct floor_key key = { .family = 4 };

	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	key.addr[0] = ip->saddr;
	if (!bpf_map_lookup_elem(&floor_sessions, &key))
		return XDP_DROP; /* the bench inserts the key: a drop means a miss, and is checked */
	swap_macs(eth);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
