/* SPDX-License-Identifier: GPL-2.0 */
/* Frame parsing, step for step as engine/packet.py parse_frame (docs/datapath.md §1): Ethernet with
 * at most one 802.1Q/802.1ad tag, IPv4 (options skipped), IPv6 with up to 4 hop-by-hop / routing /
 * destination-options headers, then a length check of the TCP/UDP header. Every packet read is
 * bounds-checked against data_end for the verifier; offsets are from the start of the frame. */
#ifndef DSRLB_PARSING_H
#define DSRLB_PARSING_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IPPROTO_ICMPV6_ 58
#define IPV6_EXT_HOP_BY_HOP 0
#define IPV6_EXT_ROUTING 43
#define IPV6_EXT_FRAGMENT 44
#define IPV6_EXT_DEST_OPTS 60
#define IPV6_MAX_EXT_HEADERS 4
/* Offsets are masked with this after arithmetic the verifier cannot bound by itself; no XDP frame
 * is that long, so the mask never changes a value. */
#define OFFSET_MASK 0xffff

enum frame_status {
	ST_OK = 0,        /* IP with a complete TCP/UDP header, or another protocol */
	ST_NOT_IP = 1,    /* not IPv4/IPv6 */
	ST_MALFORMED = 2, /* too short or inconsistent; has_dst says if the destination was read */
	ST_FRAGMENT = 3,
	ST_UNWALKED = 4,  /* IPv6 extension headers we do not walk */
};

struct frame_view {
	__u32 len;    /* data_end - data */
	__u32 l3;
	__u32 l4;
	__u32 ip_end; /* l3 + the IP packet's own length (trailing padding is not part of it) */
	__u8 status;
	__u8 version; /* 4 or 6 */
	__u8 proto;
	__u8 has_dst;
	__u8 dst_family; /* family of `dst`, also for a malformed header whose destination was read */
	__u8 pad[3];
	struct dsrlb_addr src;
	struct dsrlb_addr dst;
};

/* A pointer to `len` bytes at `off`, or NULL when the frame is shorter (the verifier's bound). */
#define FRAME_PTR(ctx_data, ctx_end, off, len)                                               \
	({                                                                                   \
		void *__p = (void *)((ctx_data) + ((off) & OFFSET_MASK));                    \
		(__p + (len) > (void *)(ctx_end)) ? (void *)0 : __p;                         \
	})

static __always_inline void load_addr4(struct dsrlb_addr *out, const void *p)
{
	out->w[0] = 0;
	out->w[1] = 0;
	out->w[2] = bpf_htonl(0x0000ffff);
	out->w[3] = *(const __u32 *)p;
}

static __always_inline void load_addr6(struct dsrlb_addr *out, const void *p)
{
	__builtin_memcpy(out, p, 16);
}

static __always_inline void check_l4(struct frame_view *v)
{
	__u32 need = v->proto == IPPROTO_TCP ? 20 : v->proto == IPPROTO_UDP ? 8 : 0;

	if (v->l4 + need > v->ip_end)
		v->status = ST_MALFORMED;
}

static __always_inline void parse_ipv4(void *data, void *data_end, struct frame_view *v)
{
	__u32 l3 = v->l3;
	__u8 *ip = FRAME_PTR(data, data_end, l3, 20);

	if (!ip)
		return; /* ST_MALFORMED, no destination */
	load_addr4(&v->dst, ip + 16);
	v->has_dst = 1;
	v->dst_family = 4;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	__u32 total = ((__u32)ip[2] << 8) | ip[3];
	if ((ip[0] >> 4) != 4 || ihl < 20 || total < ihl || l3 + total > v->len)
		return;
	v->version = 4;
	v->l4 = l3 + ihl;
	v->ip_end = l3 + total;
	load_addr4(&v->src, ip + 12);
	v->proto = ip[9];
	if ((((__u32)ip[6] << 8) | ip[7]) & 0x3fff) { /* MF or a fragment offset */
		v->status = ST_FRAGMENT;
		return;
	}
	v->status = ST_OK;
	check_l4(v);
}

static __always_inline void parse_ipv6(void *data, void *data_end, struct frame_view *v)
{
	__u32 l3 = v->l3;
	__u8 *ip = FRAME_PTR(data, data_end, l3, 40);

	if (!ip)
		return;
	load_addr6(&v->dst, ip + 24);
	v->has_dst = 1;
	v->dst_family = 6;
	__u32 ip_end = l3 + 40 + (((__u32)ip[4] << 8) | ip[5]);
	if ((ip[0] >> 4) != 6 || ip_end > v->len)
		return;
	__u8 next_header = ip[6];
	__u32 offset = l3 + 40;

	/* The only loop of the program: a fixed number of extension headers (RFC 8200 §4). */
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
		if (next_header != IPV6_EXT_HOP_BY_HOP && next_header != IPV6_EXT_ROUTING &&
		    next_header != IPV6_EXT_DEST_OPTS)
			break;
		if (offset + 8 > ip_end)
			return;
		__u8 *ext = FRAME_PTR(data, data_end, offset, 2);
		if (!ext)
			return;
		next_header = ext[0];
		offset = (offset + ((__u32)ext[1] + 1) * 8) & OFFSET_MASK;
		if (offset > ip_end)
			return;
	}
	v->version = 6;
	v->l4 = offset;
	v->ip_end = ip_end;
	load_addr6(&v->src, ip + 8);
	v->proto = next_header;
	if (next_header == IPV6_EXT_FRAGMENT) {
		v->status = ST_FRAGMENT;
		return;
	}
	if (next_header == IPV6_EXT_HOP_BY_HOP || next_header == IPV6_EXT_ROUTING ||
	    next_header == IPV6_EXT_DEST_OPTS) {
		v->status = ST_UNWALKED;
		return;
	}
	v->status = ST_OK;
	check_l4(v);
}

static __always_inline void parse_frame(struct xdp_md *ctx, struct frame_view *v)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	v->len = (__u32)(data_end - data);
	v->status = ST_MALFORMED;
	v->has_dst = 0;
	__u8 *eth = FRAME_PTR(data, data_end, 0, 14);
	if (!eth)
		return;
	__u16 ethertype = ((__u16)eth[12] << 8) | eth[13];
	v->l3 = 14;
	if (ethertype == ETH_P_8021Q_ || ethertype == ETH_P_8021AD_) {
		__u8 *tag = FRAME_PTR(data, data_end, 14, 4);
		if (!tag)
			return;
		ethertype = ((__u16)tag[2] << 8) | tag[3];
		v->l3 = 18;
	}
	if (ethertype == ETH_P_IP_)
		parse_ipv4(data, data_end, v);
	else if (ethertype == ETH_P_IPV6_)
		parse_ipv6(data, data_end, v);
	else
		v->status = ST_NOT_IP;
}

#endif
