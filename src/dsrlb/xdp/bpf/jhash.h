/* SPDX-License-Identifier: GPL-2.0 */
/* Linux jhash2() (include/linux/jhash.h, Bob Jenkins' lookup3) for the two fixed key lengths the
 * data path hashes, unrolled. engine/hashing.py is the bit-exact Python twin and documents the
 * key layout: 4 address words (IPv4 mapped to ::ffff:a.b.c.d) loaded in host order, then for the
 * session key one word holding the port number (host order). */
#ifndef DSRLB_JHASH_H
#define DSRLB_JHASH_H

#include <linux/types.h>
#include "maps.h"

#define JHASH_INITVAL 0xdeadbeef
#define DSRLB_HASH_SEED 0x64737231 /* "dsr1", engine/hashing.py DSRLB_HASH_SEED */

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

#define __jhash_mix(a, b, c)                        \
	{                                           \
		a -= c; a ^= rol32(c, 4);  c += b;  \
		b -= a; b ^= rol32(a, 6);  a += c;  \
		c -= b; c ^= rol32(b, 8);  b += a;  \
		a -= c; a ^= rol32(c, 16); c += b;  \
		b -= a; b ^= rol32(a, 19); a += c;  \
		c -= b; c ^= rol32(b, 4);  b += a;  \
	}

#define __jhash_final(a, b, c)                      \
	{                                           \
		c ^= b; c -= rol32(b, 14);          \
		a ^= c; a -= rol32(c, 11);          \
		b ^= a; b -= rol32(a, 25);          \
		c ^= b; c -= rol32(b, 16);          \
		a ^= c; a -= rol32(c, 4);           \
		b ^= a; b -= rol32(a, 14);          \
		c ^= b; c -= rol32(b, 24);          \
	}

/* jhash2(addr->w, 4, DSRLB_HASH_SEED): the `hash` method (client address). */
static __always_inline __u32 hash_client(const struct dsrlb_addr *addr)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (4 << 2) + DSRLB_HASH_SEED;
	a += addr->w[0];
	b += addr->w[1];
	c += addr->w[2];
	__jhash_mix(a, b, c);
	a += addr->w[3];
	__jhash_final(a, b, c);
	return c;
}

/* jhash2({addr->w[0..3], port}, 5, DSRLB_HASH_SEED): the `maglev` method (session key). */
static __always_inline __u32 hash_session(const struct dsrlb_addr *addr, __u32 port)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (5 << 2) + DSRLB_HASH_SEED;
	a += addr->w[0];
	b += addr->w[1];
	c += addr->w[2];
	__jhash_mix(a, b, c);
	b += port;
	a += addr->w[3];
	__jhash_final(a, b, c);
	return c;
}

#endif
