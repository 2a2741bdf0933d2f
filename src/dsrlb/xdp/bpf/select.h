/* SPDX-License-Identifier: GPL-2.0 */
/* Services, sessions and target selection (docs/datapath.md §2 and §4), as engine/reference.py
 * _forward / _new_session / _select. The data path only indexes a table the control plane built;
 * it never loops over targets. */
#ifndef DSRLB_SELECT_H
#define DSRLB_SELECT_H

#include "counters.h"
#include "jhash.h"
#include "maps.h"

/* Hash of an address and a 32-bit tail: the home of a service_table key (tail = port | protocol << 16
 * | family << 24, the key's last word) and, with tail 0, an address' bit in nat_sources. The words
 * are folded, then MurmurHash3's fmix32 spreads every input bit over the low bits the table mask
 * keeps: two multiplications, no helper call. xdp/slots.py service_hash() is the Python twin. */
static __always_inline __u32 service_hash(const struct dsrlb_addr *addr, __u32 tail)
{
	__u32 h = (addr->w[0] ^ addr->w[1] ^ addr->w[2] ^ addr->w[3]) + tail * 0x9E3779B1u;

	h ^= h >> 16;
	h *= 0x85EBCA6Bu;
	h ^= h >> 13;
	h *= 0xC2B2AE35u;
	return h ^ (h >> 16);
}

static __always_inline __u32 service_key_tail(__u16 port, __u8 protocol, __u8 family)
{
	return (__u32)port | ((__u32)protocol << 16) | ((__u32)family << 24);
}

/* The entry of one exact key in service_table: at most SERVICE_PROBES inlined array loads. */
static __always_inline struct service_ref *find_service_key(const struct dsrlb_addr *addr, __u32 tail)
{
	__u32 home = service_hash(addr, tail);

#pragma unroll
	for (__u32 i = 0; i < SERVICE_PROBES; i++) {
		__u32 at = (home + i) & service_table_mask;
		struct service_entry *entry = bpf_map_lookup_elem(&service_table, &at);
		__u32 entry_tail;

		if (!entry)
			return 0;
		__builtin_memcpy(&entry_tail, &entry->key.port, 4);
		if (entry->key.family == SERVICE_EMPTY)
			return 0;
		if (entry_tail == tail && entry->key.addr.w[3] == addr->w[3] && entry->key.addr.w[2] == addr->w[2] &&
		    entry->key.addr.w[1] == addr->w[1] && entry->key.addr.w[0] == addr->w[0])
			return &entry->ref;
	}
	return 0;
}

/* The service of (address, protocol, port): the exact port first, then the any-port key. */
static __always_inline struct service_ref *lookup_service(const struct dsrlb_addr *addr, __u8 family,
							  __u8 protocol, __u16 port)
{
	struct service_ref *ref = find_service_key(addr, service_key_tail(port, protocol, family));

	if (ref || port == 0)
		return ref;
	return find_service_key(addr, service_key_tail(0, protocol, family));
}

/* 0: no NAT target has this address, so no NAT return entry is keyed by it (maps.h nat_sources). */
static __always_inline int maybe_nat_source(const struct dsrlb_addr *addr)
{
	__u32 bit = service_hash(addr, 0) & (NAT_SOURCE_BITS - 1);
	__u32 word = bit / 64;
	__u64 *bits = bpf_map_lookup_elem(&nat_sources, &word);

	return bits && ((*bits >> (bit % 64)) & 1);
}

static __always_inline int is_vip(const struct dsrlb_addr *addr, __u8 family)
{
	struct addr_key key = {};

	key.addr = *addr;
	key.family = family;
	return bpf_map_lookup_elem(&vips, &key) != 0;
}

static __always_inline int is_local(const struct dsrlb_addr *addr, __u8 family)
{
	struct addr_key key = {};

	key.addr = *addr;
	key.family = family;
	return bpf_map_lookup_elem(&local_addrs, &key) != 0;
}

/* An idle entry is still alive while now - last_seen <= timeout (signed: a test clock may step
 * back, and the reference's Python integers go negative there rather than wrap). On the coarse
 * production clock two packets of one tick have the same `now`; a timeout of 0 (only reachable
 * through the Dataplane API, configs need >= 1 s) still means "never reused", as it does with a
 * nanosecond clock. Test objects use the injected `now` exactly as the reference does. */
static __always_inline int alive(__u64 now, __u64 last_seen, __u64 timeout)
{
	if (!injected_inputs && timeout == 0)
		return 0;
	return (__s64)(now - last_seen) <= (__s64)timeout;
}

/* The target with this id: the slot hint if it still holds that id, else the id map. */
static __always_inline struct target_info *target_by_id(__u32 id, __u32 slot_hint, __u32 *slot_out)
{
	struct target_info *target = bpf_map_lookup_elem(&targets, &slot_hint);
	if (target && target->in_use && target->id == id) {
		*slot_out = slot_hint;
		return target;
	}
	__u32 *slot = bpf_map_lookup_elem(&target_slots, &id);
	if (!slot)
		return 0;
	target = bpf_map_lookup_elem(&targets, slot);
	if (!target || !target->in_use || target->id != id)
		return 0;
	*slot_out = *slot;
	return target;
}

/* The table index of a new selection; -1 when the table is empty. */
static __always_inline __s64 table_index(__u32 slot, const struct service_info *info,
					 const struct dsrlb_addr *client, __u32 session_port)
{
	__u32 len = info->table_len;

	if (len == 0 || len > TABLE_MAX)
		return -1;
	switch (info->index_kind) {
	case INDEX_COUNTER: {
		__u64 *counter = bpf_map_lookup_elem(&rr_counters, &slot);
		if (!counter)
			return -1;
		/* One atomic fetch-and-add: concurrent CPUs each get their own counter value. */
		return __sync_fetch_and_add(counter, 1) % len;
	}
	case INDEX_RANDOM:
		return dsrlb_rand32() % len;
	case INDEX_HASH_CLIENT:
		return hash_client(client) % len;
	case INDEX_HASH_SESSION:
		return hash_session(client, session_port) % len;
	default: /* INDEX_FIRST */
		return 0;
	}
}

/* One bpf_ringbuf_output() (a single helper call) rather than reserve + submit (two). */
static __always_inline void emit_session_event(const struct session_key *key, __u32 target_id, __u64 now,
					       int moved)
{
	struct session_event event = {
		.client = key->client,
		.last_seen_ns = now,
		.service_id = key->service_id,
		.target_id = target_id,
		.client_port = key->client_port,
		.family = key->family,
		.moved = moved,
	};

	if (bpf_ringbuf_output(&session_events, &event, sizeof(event), 0) < 0)
		count(CNT_EVENT_LOST);
}

/* Select a target for a new or moved session and record the session; NULL: no usable target.
 * `session`: the key's entry when it exists (expired, or its target is gone or DOWN); it is
 * overwritten in place, as the reference overwrites its dict entry, which spares the LRU map an
 * update (a new element, two LRU list operations and a lock: most of the cost of this path). */
static __always_inline struct target_info *new_session(__u32 service_slot, const struct service_info *info,
						       const struct session_key *key,
						       struct session_value *session, __u64 now, int moved,
						       __u32 *target_slot)
{
	__s64 index = table_index(service_slot, info, &key->client, key->client_port);
	if (index < 0)
		return 0;
	__u32 at = service_slot * TABLE_MAX + (__u32)index;
	struct table_entry *entry = bpf_map_lookup_elem(&tables, &at);
	if (!entry)
		return 0;
	__u32 id = entry->target_id;
	struct target_info *target = target_by_id(id, entry->target_slot, target_slot);
	if (!target || !target->usable)
		return 0;
	if (session) {
		session->target_id = id;
		session->target_slot = *target_slot;
		session->last_seen_ns = now;
	} else {
		struct session_value value = {
			.last_seen_ns = now,
			.target_id = id,
			.target_slot = *target_slot,
		};
		bpf_map_update_elem(&sessions, key, &value, BPF_ANY);
	}
	count(moved ? CNT_SESSION_MOVED : CNT_SESSION_NEW);
	count_object(&service_stats, service_slot, 0, 1);
	count_object(&target_stats, *target_slot, 0, 1);
	emit_session_event(key, id, now, moved);
	return target;
}

/* The session's target, refreshed; or a new selection when there is none, it expired, or its
 * target is gone or DOWN (counted session_moved). NULL: no target (the caller drops). */
static __always_inline struct target_info *session_target(__u32 service_slot, const struct service_info *info,
							  const struct dsrlb_addr *client, __u8 family,
							  __u16 sport, __u64 now, __u32 *target_slot)
{
	struct session_key key = {};

	key.client = *client;
	key.service_id = info->id;
	key.client_port = info->per_port ? sport : 0;
	key.family = family;
	struct session_value *session = bpf_map_lookup_elem(&sessions, &key);
	if (session && alive(now, session->last_seen_ns, info->timeout_ns)) {
		struct target_info *target = target_by_id(session->target_id, session->target_slot, target_slot);
		if (target && target->usable) {
			count(CNT_SESSION_HIT);
			session->last_seen_ns = now;
			return target;
		}
		return new_session(service_slot, info, &key, session, now, 1, target_slot);
	}
	return new_session(service_slot, info, &key, session, now, 0, target_slot);
}

#endif
