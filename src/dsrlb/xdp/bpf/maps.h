/* SPDX-License-Identifier: GPL-2.0 */
/* Every map of the dsrlb XDP program and every struct shared with Python (xdp/layout.py mirrors
 * these with ctypes and checks them against this object's BTF at load time; keep both in step).
 *
 * Addresses: one 16-byte form for both families, the key form of engine/hashing.py: IPv6 as is,
 * IPv4 as the IPv4-mapped address ::ffff:a.b.c.d (RFC 4291 §2.5.5.2). Keys also carry the family, so
 * an IPv6 packet from ::ffff:192.0.2.1 never matches IPv4 state (the reference keys by packed bytes,
 * 4 or 16 long, which keeps the two apart the same way). Ports in maps are host order.
 *
 * Sizes: every max_entries below is a default; XdpDataplane sets them with bpf_map__set_max_entries
 * before load (XdpSizes). */
#ifndef DSRLB_MAPS_H
#define DSRLB_MAPS_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define TABLE_MAX 65537 /* entries per service selection table: the Maglev ring size, a prime */
#define DEFAULT_SERVICES 64
#define DEFAULT_TARGETS 1024
#define DEFAULT_SESSIONS 65536
#define DEFAULT_ROUTES 1024
#define SLOT_NONE 0xffffffffu

struct dsrlb_addr {
	__u32 w[4]; /* network-order bytes; IPv4 mapped to ::ffff:a.b.c.d */
};

/* service_table: (VIP, protocol, port) -> service slot. Port 0 is the any-port key. */
struct service_key {
	struct dsrlb_addr addr;
	__u16 port;
	__u8 protocol;
	__u8 family; /* 4 or 6; SERVICE_EMPTY / SERVICE_DELETED mark unused entries of service_table */
};

struct service_ref {
	__u32 slot;
	/* The VIP a NAT return entry created through this key restores (the reference's choice: the
	 * service's first key of this protocol and port; the key's own address for one-address servers). */
	struct dsrlb_addr return_vip;
};

/* One entry of service_table, an open-addressing hash table in an array that only the control plane
 * writes (xdp/slots.py ServiceTable places keys; the program only reads). A BPF hash map lookup costs a
 * helper call plus jhash (30-40 ns on the benchmark machine, about the whole floor); probing this
 * array is a few inlined loads. A key sits within SERVICE_PROBES entries of its home
 * service_hash(key) & service_table_mask; an empty entry ends the probe, a deleted one does not. */
struct service_entry {
	struct service_key key;
	struct service_ref ref;
};

#define SERVICE_EMPTY 0      /* key.family of an entry never used: the probe stops */
#define SERVICE_DELETED 0xff /* key.family of a removed entry: the probe goes on */
#define SERVICE_PROBES 16
#define DEFAULT_SERVICE_TABLE 1024 /* a power of two; XdpSizes sets it */

/* How the data path turns a selection into a table index (docs/datapath.md §4). */
enum index_kind {
	INDEX_COUNTER = 0,      /* rr, wrr, session, bandwidth, agent: counter % len */
	INDEX_RANDOM = 1,       /* random, wrandom, rndagent: rand32 % len */
	INDEX_HASH_CLIENT = 2,  /* hash: jhash2(client address) % len */
	INDEX_HASH_SESSION = 3, /* maglev: jhash2(client address, session port) % len */
	INDEX_FIRST = 4,        /* first: 0 */
};

/* service_info[slot]: one per service slot, written by the control plane. */
struct service_info {
	__u64 timeout_ns; /* idle timeout of its sessions */
	__u32 id;         /* the config's server id (sessions are keyed by it) */
	__u32 table_len;  /* entries of tables[slot * TABLE_MAX ...]; 0: no target */
	__u8 index_kind;  /* enum index_kind */
	__u8 per_port;    /* sessionid src+port: the client port is part of the session key */
	__u8 active;      /* 1 while the service exists (its keys are in `services`) */
	__u8 pad[5];
};

/* tables[slot * TABLE_MAX + i]: the target id is the truth; the slot is a hint the control plane
 * keeps current (checked against targets[slot].id, else target_slots), which saves a new session
 * the hash lookup of the id. */
struct table_entry {
	__u32 target_id;
	__u32 target_slot;
};

/* targets[slot]: one per target slot. `usable` = state UP or NO_NEW and a next hop is known. */
struct target_info {
	struct dsrlb_addr addr;
	__u32 id;
	__u32 ifindex; /* egress of the next hop */
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u16 port;        /* NAT destination port (host order), when has_port */
	__u8 has_port;
	__u8 family;
	__u8 dsr;          /* 1: rewrite MACs only */
	__u8 return_port;  /* NAT return matching dst+port (1) or dst (0) */
	__u8 usable;
	__u8 state;        /* TargetState, for inspection */
	__u8 in_use;
	__u8 pad[3];
};

/* sessions: (service id, client, client port or 0) -> target; idle expiry checked on lookup. */
struct session_key {
	struct dsrlb_addr client;
	__u32 service_id;
	__u16 client_port; /* 0 for sessionid src */
	__u8 family;
	__u8 pad;
};

struct session_value {
	__u64 last_seen_ns;
	__u32 target_id;
	__u32 target_slot; /* a hint; checked against targets[slot].id, else looked up by id */
};

/* nat_returns: (protocol, target, target port, client, client port or 0) -> what to restore. */
struct nat_key {
	struct dsrlb_addr target;
	struct dsrlb_addr client;
	__u16 target_port;
	__u16 client_port; /* 0 when the target matches return traffic by `dst` only */
	__u8 protocol;
	__u8 family;
	__u8 pad[2];
};

struct nat_value {
	struct dsrlb_addr vip;
	__u64 last_seen_ns;
	__u64 timeout_ns; /* the service's timeout when the entry was made */
	__u32 service_id;
	__u32 service_slot;
	__u32 target_id;
	__u32 target_slot;
	__u16 vip_port;
	__u8 pad[6];
};

/* routes: longest-prefix match over (family, address); prefixlen counts the 32 family bits and,
 * for IPv4, the 96 bits of the ::ffff:0:0/96 mapping. */
struct route_key {
	__u32 prefixlen;
	__u32 family;
	struct dsrlb_addr addr;
};

struct next_hop {
	__u32 ifindex;
	__u8 dst_mac[6];
	__u8 src_mac[6];
};

/* vips and local_addrs: set membership of an address. */
struct addr_key {
	struct dsrlb_addr addr;
	__u32 family;
};

/* Per service and per target counters (per CPU, summed by Python). */
struct object_stats {
	__u64 packets;
	__u64 bytes;
	__u64 sessions_new;
};

/* The session events ring buffer record (new and moved sessions, for the session sync). */
struct session_event {
	struct dsrlb_addr client;
	__u64 last_seen_ns;
	__u32 service_id;
	__u32 target_id;
	__u16 client_port;
	__u8 family;
	__u8 moved; /* 0: new, 1: moved to another target */
	__u8 pad[4];
};

/* The two inputs the reference takes from outside, `now_ns` and `rand32`, set by the test harness.
 * Used instead of bpf_ktime_get_coarse_ns() / bpf_get_prandom_u32() only when the object was loaded
 * with the .rodata constant `injected_inputs` = 1 (tests); otherwise the verifier removes the branch as
 * dead code and production reads the kernel clock and random source. */
struct test_inputs {
	__u64 now_ns;
	__u32 rand32;
	__u8 rand_set; /* 0: rand32 from bpf_get_prandom_u32() even in test mode */
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_SERVICE_TABLE);
	__type(key, __u32);
	__type(value, struct service_entry);
} service_table SEC(".maps");

/* service_table's size - 1, set before load (XdpSizes.service_keys rounded up, see xdp/slots.py). */
const volatile __u32 service_table_mask = DEFAULT_SERVICE_TABLE - 1;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_SERVICES);
	__type(key, __u32);
	__type(value, struct service_info);
} service_infos SEC(".maps");

/* Selection counters, apart from service_info so that control-plane writes never reset them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
} rr_counters SEC(".maps");

/* All selection tables in one array: service slot * TABLE_MAX + i -> target id and slot hint. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_SERVICES * TABLE_MAX);
	__type(key, __u32);
	__type(value, struct table_entry);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_TARGETS);
	__type(key, __u32);
	__type(value, struct target_info);
} targets SEC(".maps");

/* Target id -> slot, for table entries and sessions whose slot hint is stale. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_TARGETS);
	__type(key, __u32);
	__type(value, __u32);
} target_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_SESSIONS);
	__type(key, struct session_key);
	__type(value, struct session_value);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_SESSIONS);
	__type(key, struct nat_key);
	__type(value, struct nat_value);
} nat_returns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, DEFAULT_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct route_key);
	__type(value, struct next_hop);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * DEFAULT_SERVICES);
	__type(key, struct addr_key);
	__type(value, __u32);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr_key);
	__type(value, __u32);
} local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_SERVICES);
	__type(key, __u32);
	__type(value, struct object_stats);
} service_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_TARGETS);
	__type(key, __u32);
	__type(value, struct object_stats);
} target_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} session_events SEC(".maps");

/* The egress ifindex of the last TX/REDIRECT on this CPU: BPF_PROG_TEST_RUN does not report where a
 * redirect goes, so tests read it here (one per-CPU store per forwarded packet). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} last_egress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct test_inputs);
} test_inputs SEC(".maps");

const volatile __u8 injected_inputs = 0;

/* A filter in front of the NAT return table: bit addr_bit(a) is set for the address a of every NAT
 * target the control plane has upserted since the last reset (never cleared before). A return entry
 * is keyed by its target's address, which is the packet's source, so a packet whose source bit is
 * clear cannot be a NAT return and skips the two hash lookups (2 x 30-40 ns) that would miss. A set
 * bit only means "look": other addresses may share it. */
#define NAT_SOURCE_BITS 65536
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NAT_SOURCE_BITS / 64);
	__type(key, __u32);
	__type(value, __u64);
} nat_sources SEC(".maps");

/* No map names struct session_event as a type (ring buffers carry bytes); this read-only instance
 * puts it into the object's BTF so that layout.py checks it like the others. */
const volatile struct session_event session_event_layout = {};

/* The clock: CLOCK_MONOTONIC in nanoseconds, to a tick (HZ=250: 4 ms). Idle timeouts are whole seconds
 * (1 s to 7 days, config/validate.py), so a tick of resolution changes nothing, and Python compares
 * last_seen_ns with time.monotonic_ns(), the same base.
 *
 * Read as jiffies: bpf_jiffies64() is inlined by the verifier (a load, ~1.6 ns here), where
 * bpf_ktime_get_coarse_ns() is a helper call (~18 ns) and bpf_ktime_get_ns() reads the TSC (~40 ns).
 * The kernel advances jiffies by one per TICK_NSEC of CLOCK_MONOTONIC (tick_do_update_jiffies64), so
 * monotonic ns ~ jiffies * ns_per_jiffy + offset_ns, with no drift between the two. XdpDataplane
 * measures both (dsrlb.bpf.c dsrlb_clock) right after load and writes clock_base, with an offset
 * that keeps this clock behind CLOCK_MONOTONIC by up to two ticks, never ahead (xdp/clock.py);
 * until then, or when the measurement did not match a known HZ, ns_per_jiffy is 0 and the coarse
 * clock is read. */
struct clock_base {
	__u64 offset_ns;
	__u64 ns_per_jiffy; /* TICK_NSEC; 0: read bpf_ktime_get_coarse_ns() */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock_base);
} clock_base SEC(".maps");

static __always_inline __u64 dsrlb_now(void)
{
	__u32 zero = 0;

	if (injected_inputs) {
		struct test_inputs *inputs = bpf_map_lookup_elem(&test_inputs, &zero);
		if (inputs)
			return inputs->now_ns;
	}
	struct clock_base *base = bpf_map_lookup_elem(&clock_base, &zero);
	if (base && base->ns_per_jiffy)
		return bpf_jiffies64() * base->ns_per_jiffy + base->offset_ns;
	return bpf_ktime_get_coarse_ns();
}

static __always_inline __u32 dsrlb_rand32(void)
{
	if (injected_inputs) {
		__u32 zero = 0;
		struct test_inputs *inputs = bpf_map_lookup_elem(&test_inputs, &zero);
		if (inputs && inputs->rand_set)
			return inputs->rand32;
	}
	return bpf_get_prandom_u32();
}


#endif
