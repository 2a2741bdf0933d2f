/* SPDX-License-Identifier: GPL-2.0 */
/* NAT (docs/datapath.md §3 and §5): the forward rewrite to the target, the return rewrite back to
 * VIP:port, and ICMP error translation, as engine/reference.py (_nat_forward, _record_return,
 * _nat_return) and engine/icmp.py (_rewrite). Checksums are only ever updated, never recomputed:
 * RFC 1624 eqn. 3 as bpf_csum_diff(old words, new words, seed = (u16)~check) + csum_fold, with the
 * same groups of old/new words as the reference, so even the ±0 corner cases come out identical. */
#ifndef DSRLB_NAT_H
#define DSRLB_NAT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "counters.h"
#include "dsr.h"
#include "maps.h"
#include "parsing.h"
#include "select.h"

static __always_inline __u32 load_u32(const void *p)
{
	__u32 word;

	__builtin_memcpy(&word, p, 4);
	return word;
}

static __always_inline __u16 csum_fold32(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* *field = fold(csum_diff(old, new, ~*field)): `size` bytes of words (a constant at every call). */
static __always_inline void csum_replace(__u8 *field, __u32 *old, __u32 *new, __u32 size)
{
	__u16 check;

	__builtin_memcpy(&check, field, 2);
	check = csum_fold32((__u32)bpf_csum_diff(old, size, new, size, (__u16)~check));
	__builtin_memcpy(field, &check, 2);
}

/* UDP: a checksum of 0 means "none" and stays 0; a result of 0 is sent as 0xffff (RFC 768). */
static __always_inline void udp_csum_replace(__u8 *field, __u32 *old, __u32 *new, __u32 size)
{
	__u16 check;

	__builtin_memcpy(&check, field, 2);
	if (check == 0)
		return;
	check = csum_fold32((__u32)bpf_csum_diff(old, size, new, size, (__u16)~check));
	if (check == 0)
		check = 0xffff;
	__builtin_memcpy(field, &check, 2);
}

/* The TCP or UDP checksum field of the L4 header at `l4_off`; NULL when outside the frame. */
static __always_inline __u8 *l4_csum_field(void *data, void *data_end, __u8 proto, __u32 l4_off)
{
	return FRAME_PTR(data, data_end, l4_off + (proto == IPPROTO_TCP ? 16 : 6), 2);
}

static __always_inline void l4_csum_replace(__u8 proto, __u8 *field, __u32 *old, __u32 *new, __u32 size)
{
	if (proto == IPPROTO_TCP)
		csum_replace(field, old, new, size);
	else
		udp_csum_replace(field, old, new, size);
}

/* The port word (network order source, destination) as a host-order load of those 4 bytes. */
static __always_inline __u32 port_word(__u16 sport, __u16 dport)
{
	return (__u32)bpf_htons(sport) | ((__u32)bpf_htons(dport) << 16);
}

/* IPv4 header checksum for an address change plus the TTL decrement: the words (addr) and
 * (ttl, protocol, 0, 0), as the reference groups them. */
static __always_inline void ipv4_header_rewrite(__u8 *ip, __u32 addr_off, __u32 new_addr)
{
	__u32 old[2], new[2];
	__u8 ttl = ip[8];

	old[0] = load_u32(ip + addr_off);
	old[1] = (__u32)ttl | ((__u32)ip[9] << 8);
	new[0] = new_addr;
	new[1] = (__u32)(__u8)(ttl - 1) | ((__u32)ip[9] << 8);
	csum_replace(ip + 10, old, new, 8);
	__builtin_memcpy(ip + addr_off, &new_addr, 4);
	ip[8] = ttl - 1;
}

/* Rewrite one address and the port word of a TCP/UDP packet, L4 checksum first, then the IP
 * header with the TTL decrement. `addr_off` is the address' offset in the IP header (v4: 12 src /
 * 16 dst; v6: 8 / 24). Returns -1 (frame untouched) when the TTL is 0 or 1. */
static __always_inline int rewrite_l4_packet(struct xdp_md *ctx, struct frame_view *v, __u32 addr_off,
					     const struct dsrlb_addr *new_addr, __u32 new_ports)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *l4 = FRAME_PTR(data, data_end, v->l4, 4);
	__u8 *csum = l4_csum_field(data, data_end, v->proto, v->l4);

	if (!l4 || !csum)
		return -1;
	if (v->version == 4) {
		__u8 *ip = FRAME_PTR(data, data_end, v->l3, 20);
		if (!ip || ip[8] <= 1)
			return -1;
		__u32 old[2] = { load_u32(ip + addr_off), load_u32(l4) };
		__u32 new[2] = { new_addr->w[3], new_ports };
		l4_csum_replace(v->proto, csum, old, new, 8);
		__builtin_memcpy(l4, &new_ports, 4);
		ipv4_header_rewrite(ip, addr_off, new_addr->w[3]);
		return 0;
	}
	__u8 *ip = FRAME_PTR(data, data_end, v->l3, 40);
	if (!ip || ip[7] <= 1 || addr_off > 24)
		return -1;
	__u32 old[5], new[5];
	__builtin_memcpy(old, ip + addr_off, 16);
	old[4] = load_u32(l4);
	__builtin_memcpy(new, new_addr, 16);
	new[4] = new_ports;
	l4_csum_replace(v->proto, csum, old, new, 20);
	__builtin_memcpy(ip + addr_off, new_addr, 16);
	__builtin_memcpy(l4, &new_ports, 4);
	ip[7] -= 1;
	return 0;
}

/* Forward NAT: destination address and port to the target's (reference _nat_forward). */
static __always_inline int nat_forward(struct xdp_md *ctx, struct frame_view *v,
				       const struct target_info *target, __u16 target_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *ports = FRAME_PTR(data, data_end, v->l4, 4);

	if (!ports || target->family != v->version)
		return -1;
	__u32 new_ports = (load_u32(ports) & 0xffff) | ((__u32)bpf_htons(target_port) << 16);
	return rewrite_l4_packet(ctx, v, v->version == 4 ? 16 : 24, &target->addr, new_ports);
}

/* Remember how to restore VIP:port on the target's answers (reference _record_return). An entry
 * of the same target and service is only refreshed; any other entry under the key is replaced. */
static __always_inline void record_return(struct frame_view *v, const struct service_ref *ref,
					  const struct service_info *info, const struct target_info *target,
					  __u32 target_slot, __u32 service_slot, __u16 target_port,
					  __u16 sport, __u16 dport, __u64 now)
{
	struct nat_key key = {};

	key.target = target->addr;
	key.client = v->src;
	key.target_port = target_port;
	key.client_port = target->return_port ? sport : 0;
	key.protocol = v->proto;
	key.family = v->version;
	struct nat_value *entry = bpf_map_lookup_elem(&nat_returns, &key);
	if (entry && entry->target_id == target->id && entry->service_id == info->id) {
		entry->last_seen_ns = now;
		return;
	}
	struct nat_value value = {
		.vip = ref->return_vip,
		.last_seen_ns = now,
		.timeout_ns = info->timeout_ns,
		.service_id = info->id,
		.service_slot = service_slot,
		.target_id = target->id,
		.target_slot = target_slot,
		.vip_port = dport,
	};
	bpf_map_update_elem(&nat_returns, &key, &value, BPF_ANY);
}

/* The return entry of (protocol, from, from port, to, to port): the exact client port first, then
 * the `sessionid dst` form without it. The caller checks its age (as the reference: an expired
 * exact entry hides a port-less one). */
static __always_inline struct nat_value *find_return(__u8 proto, __u8 family, const struct dsrlb_addr *target,
						     __u16 target_port, const struct dsrlb_addr *client,
						     __u16 client_port)
{
	struct nat_key key = {};

	key.target = *target;
	key.client = *client;
	key.target_port = target_port;
	key.client_port = client_port;
	key.protocol = proto;
	key.family = family;
	struct nat_value *entry = bpf_map_lookup_elem(&nat_returns, &key);
	if (entry)
		return entry;
	key.client_port = 0;
	return bpf_map_lookup_elem(&nat_returns, &key);
}

static __always_inline struct nat_value *lookup_return(struct frame_view *v, __u16 sport, __u16 dport)
{
	return find_return(v->proto, v->version, &v->src, sport, &v->dst, dport);
}

static __always_inline struct next_hop *route_to(const struct dsrlb_addr *client, __u8 family)
{
	struct route_key key = {};

	key.prefixlen = 32 + 128;
	key.family = family;
	key.addr = *client;
	return bpf_map_lookup_elem(&routes, &key);
}

/* Return NAT: source back to VIP:port, routed towards the client (reference _nat_return). */
static __always_inline int nat_return(struct xdp_md *ctx, struct frame_view *v, struct nat_value *entry,
				      __u64 now)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct next_hop *hop = route_to(&v->dst, v->version);

	if (!hop) {
		count(CNT_NO_ROUTE);
		count(CNT_PASS);
		return XDP_PASS;
	}
	__u8 *ports = FRAME_PTR(data, data_end, v->l4, 4);
	if (!ports)
		goto pass;
	__u32 new_ports = (__u32)bpf_htons(entry->vip_port) | (load_u32(ports) & 0xffff0000);
	struct dsrlb_addr vip = entry->vip;
	if (rewrite_l4_packet(ctx, v, v->version == 4 ? 12 : 8, &vip, new_ports) < 0)
		goto pass;
	entry->last_seen_ns = now;
	count(CNT_NAT_RETURN);
	__u32 service_slot = entry->service_slot;
	struct service_info *info = bpf_map_lookup_elem(&service_infos, &service_slot);
	if (info && info->active && info->id == entry->service_id)
		count_object(&service_stats, service_slot, v->len, 0);
	__u32 target_slot;
	if (target_by_id(entry->target_id, entry->target_slot, &target_slot))
		count_object(&target_stats, target_slot, v->len, 0);
	return send_to_next_hop(ctx, hop, ctx->ingress_ifindex);
pass:
	count(CNT_PASS);
	return XDP_PASS;
}


/* --- ICMP errors about NAT and DSR flows (docs/datapath.md §5, engine/icmp.py) ------------------ */

struct quoted_packet {
	__u32 l3;   /* the quoted IP header */
	__u32 l4;   /* its TCP/UDP header (ports inside the frame) */
	__u8 proto;
	__u8 pad;
	__u16 sport;
	__u16 dport;
	struct dsrlb_addr src;
	struct dsrlb_addr dst;
};

/* The quoted TCP/UDP packet of an ICMP error we translate; -1: not one (reference parse_quoted). */
static __always_inline int parse_quoted(void *data, void *data_end, struct frame_view *v,
					struct quoted_packet *q)
{
	__u32 icmp = v->l4, end = v->ip_end;

	if (icmp + 8 > end)
		return -1;
	__u8 *message = FRAME_PTR(data, data_end, icmp, 8);
	if (!message)
		return -1;
	__u8 type = message[0];
	if (v->proto == IPPROTO_ICMP) {
		if (type != 3 && type != 11) /* destination unreachable, time exceeded */
			return -1;
	} else if (type != 1 && type != 2 && type != 3) { /* unreachable, packet too big, time exceeded */
		return -1;
	}
	q->l3 = icmp + 8;
	if (v->version == 4) {
		__u8 *ip = FRAME_PTR(data, data_end, q->l3, 20);
		if (q->l3 + 20 > end || !ip || (ip[0] >> 4) != 4)
			return -1;
		__u32 ihl = (ip[0] & 0x0f) * 4;
		if (ihl < 20)
			return -1;
		q->proto = ip[9];
		q->l4 = q->l3 + ihl;
		load_addr4(&q->src, ip + 12);
		load_addr4(&q->dst, ip + 16);
	} else {
		__u8 *ip = FRAME_PTR(data, data_end, q->l3, 40);
		if (q->l3 + 40 > end || !ip || (ip[0] >> 4) != 6)
			return -1;
		q->proto = ip[6];
		q->l4 = q->l3 + 40;
		load_addr6(&q->src, ip + 8);
		load_addr6(&q->dst, ip + 24);
	}
	if ((q->proto != IPPROTO_TCP && q->proto != IPPROTO_UDP) || q->l4 + 8 > end)
		return -1;
	__u8 *ports = FRAME_PTR(data, data_end, q->l4, 4);
	if (!ports)
		return -1;
	q->sport = ((__u16)ports[0] << 8) | ports[1];
	q->dport = ((__u16)ports[2] << 8) | ports[3];
	return 0;
}

static __always_inline int addr_equal(const struct dsrlb_addr *a, const struct dsrlb_addr *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] && a->w[3] == b->w[3];
}

/* The v4 ICMP rewrite (reference icmp._rewrite, IPv4 branch): quoted L4 checksum, quoted header
 * checksum, ICMP checksum over (quoted ttl/proto/check word, address, ports, L4 checksum word),
 * then the outer address with the TTL decrement. Offsets are from the start of the frame. */
static __always_inline int icmp_rewrite4(void *data, void *data_end, struct frame_view *v,
					 struct quoted_packet *q, __u32 q_addr_at, __u32 new_q_addr,
					 __u32 new_ports, __u32 outer_addr_off, __u32 new_outer)
{
	__u8 *ip = FRAME_PTR(data, data_end, v->l3, 20);
	__u8 *icmp = FRAME_PTR(data, data_end, v->l4, 8);
	__u8 *qip = FRAME_PTR(data, data_end, q->l3, 20);
	__u8 *ql4 = FRAME_PTR(data, data_end, q->l4, 8);
	__u8 *qaddr = FRAME_PTR(data, data_end, q_addr_at, 4);

	if (!ip || !icmp || !qip || !ql4 || !qaddr || ip[8] <= 1)
		return -1;
	__u32 word_at = q->l4 + (q->proto == IPPROTO_TCP ? 16 : 4);
	__u8 *word = FRAME_PTR(data, data_end, word_at, 4);
	int has_word = word_at + 4 <= v->ip_end && word;
	__u32 old_q_addr = load_u32(qaddr);
	__u32 old_ports = load_u32(ql4);
	__u32 old_head = load_u32(qip + 8);
	__u32 old_word = 0, new_word = 0;

	if (has_word && word) {
		__u32 old[2] = { old_q_addr, old_ports };
		__u32 new[2] = { new_q_addr, new_ports };
		old_word = load_u32(word);
		if (q->proto == IPPROTO_TCP)
			csum_replace(word, old, new, 8);
		else
			udp_csum_replace(word + 2, old, new, 8);
		new_word = load_u32(word);
	}
	__builtin_memcpy(qaddr, &new_q_addr, 4);
	__builtin_memcpy(ql4, &new_ports, 4);
	{
		__u32 old[1] = { old_q_addr };
		__u32 new[1] = { new_q_addr };
		csum_replace(qip + 10, old, new, 4);
	}
	__u32 old[4] = { old_head, old_q_addr, old_ports, old_word };
	__u32 new[4] = { load_u32(qip + 8), new_q_addr, new_ports, new_word };
	if (has_word)
		csum_replace(icmp + 2, old, new, 16);
	else
		csum_replace(icmp + 2, old, new, 12);
	ipv4_header_rewrite(ip, outer_addr_off, new_outer);
	return 0;
}

/* The v6 ICMP rewrite: as v4 without header checksums; the ICMPv6 checksum covers the outer
 * address through its pseudo-header (RFC 4443 §2.3), so the outer address joins its word groups. */
static __always_inline int icmp_rewrite6(void *data, void *data_end, struct frame_view *v,
					 struct quoted_packet *q, __u32 q_addr_at,
					 const struct dsrlb_addr *new_q_addr, __u32 new_ports,
					 __u32 outer_addr_off, const struct dsrlb_addr *new_outer)
{
	__u8 *ip = FRAME_PTR(data, data_end, v->l3, 40);
	__u8 *icmp = FRAME_PTR(data, data_end, v->l4, 8);
	__u8 *ql4 = FRAME_PTR(data, data_end, q->l4, 8);
	__u8 *qaddr = FRAME_PTR(data, data_end, q_addr_at, 16);

	if (!ip || !icmp || !ql4 || !qaddr || ip[7] <= 1 || outer_addr_off > 24)
		return -1;
	__u32 word_at = q->l4 + (q->proto == IPPROTO_TCP ? 16 : 4);
	__u8 *word = FRAME_PTR(data, data_end, word_at, 4);
	int has_word = word_at + 4 <= v->ip_end && word;
	/* old/new: outer address (4 words), quoted address (4), ports, L4 checksum word. */
	__u32 old[10], new[10];

	__builtin_memcpy(&old[0], ip + outer_addr_off, 16);
	__builtin_memcpy(&new[0], new_outer, 16);
	__builtin_memcpy(&old[4], qaddr, 16);
	__builtin_memcpy(&new[4], new_q_addr, 16);
	old[8] = load_u32(ql4);
	new[8] = new_ports;
	old[9] = 0;
	new[9] = 0;
	if (has_word && word) {
		old[9] = load_u32(word);
		if (q->proto == IPPROTO_TCP)
			csum_replace(word, &old[4], &new[4], 20);
		else
			udp_csum_replace(word + 2, &old[4], &new[4], 20);
		new[9] = load_u32(word);
	}
	__builtin_memcpy(qaddr, new_q_addr, 16);
	__builtin_memcpy(ql4, &new_ports, 4);
	if (has_word)
		csum_replace(icmp + 2, old, new, 40);
	else
		csum_replace(icmp + 2, old, new, 36);
	__builtin_memcpy(ip + outer_addr_off, new_outer, 16);
	ip[7] -= 1;
	return 0;
}

static __always_inline int icmp_rewrite(struct xdp_md *ctx, struct frame_view *v, struct quoted_packet *q,
					int quoted_src, const struct dsrlb_addr *new_q_addr, __u16 new_sport,
					__u16 new_dport, int outer_src, const struct dsrlb_addr *new_outer)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 ports = port_word(new_sport, new_dport);

	if (v->version == 4)
		return icmp_rewrite4(data, data_end, v, q, q->l3 + (quoted_src ? 12 : 16), new_q_addr->w[3], ports,
				     outer_src ? 12 : 16, new_outer->w[3]);
	return icmp_rewrite6(data, data_end, v, q, q->l3 + (quoted_src ? 8 : 24), new_q_addr, ports,
			     outer_src ? 8 : 24, new_outer);
}

/* An error from the client side about VIP:port -> client: on to the session's target. */
static __always_inline int icmp_towards_target(struct xdp_md *ctx, struct frame_view *v, struct quoted_packet *q,
					       __u64 now)
{
	struct service_ref *ref = lookup_service(&q->src, v->version, q->proto, q->sport);
	if (!ref)
		return -1;
	__u32 service_slot = ref->slot;
	struct service_info *info = bpf_map_lookup_elem(&service_infos, &service_slot);
	if (!info || !info->active)
		return -1;
	struct session_key key = {};
	key.client = q->dst;
	key.service_id = info->id;
	key.client_port = info->per_port ? q->dport : 0;
	key.family = v->version;
	struct session_value *session = bpf_map_lookup_elem(&sessions, &key);
	if (!session || !alive(now, session->last_seen_ns, info->timeout_ns))
		return -1;
	__u32 target_slot;
	struct target_info *target = target_by_id(session->target_id, session->target_slot, &target_slot);
	if (!target || !target->usable)
		return -1;
	if (!target->dsr) {
		if (target->family != v->version)
			return -1;
		__u16 new_sport = target->has_port ? target->port : q->sport;
		struct dsrlb_addr addr = target->addr;
		if (icmp_rewrite(ctx, v, q, 1, &addr, new_sport, q->dport, 0, &addr) < 0)
			return -1;
	}
	count(CNT_ICMP_TRANSLATED);
	return send_to_target(ctx, target, ctx->ingress_ifindex);
}

/* An error from the target side about client -> target:port: back to the client as from the VIP. */
static __always_inline int icmp_towards_client(struct xdp_md *ctx, struct frame_view *v, struct quoted_packet *q,
					       __u64 now)
{
	struct nat_value *entry = find_return(q->proto, v->version, &q->dst, q->dport, &v->dst, q->sport);
	if (!entry || !alive(now, entry->last_seen_ns, entry->timeout_ns))
		return -1;
	struct next_hop *hop = route_to(&v->dst, v->version);
	if (!hop) {
		count(CNT_NO_ROUTE);
		return -1;
	}
	struct dsrlb_addr vip = entry->vip;
	struct dsrlb_addr new_outer = addr_equal(&v->src, &q->dst) ? vip : v->src;
	if (icmp_rewrite(ctx, v, q, 0, &vip, q->sport, entry->vip_port, 1, &new_outer) < 0)
		return -1;
	count(CNT_ICMP_TRANSLATED);
	return send_to_next_hop(ctx, hop, ctx->ingress_ifindex);
}

/* The verdict for an ICMP error about a balanced flow, or -1: the caller passes the frame. */
static __always_inline int translate_icmp(struct xdp_md *ctx, struct frame_view *v, __u64 now)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct quoted_packet q = {};

	if (parse_quoted(data, data_end, v, &q) < 0)
		return -1;
	if (!addr_equal(&q.src, &v->dst))
		return -1; /* about a packet that was not sent from where the error goes */
	if (is_vip(&v->dst, v->version))
		return icmp_towards_target(ctx, v, &q, now);
	if (is_local(&v->dst, v->version))
		return -1;
	return icmp_towards_client(ctx, v, &q, now);
}

#endif
