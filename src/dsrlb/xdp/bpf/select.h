/* SPDX-License-Identifier: GPL-2.0 */
/* Services, sessions and target selection (docs/datapath.md §2 and §4), as engine/reference.py
 * _forward / _new_session / _select. The data path only indexes a table the control plane built;
 * it never loops over targets. */
#ifndef DSRLB_SELECT_H
#define DSRLB_SELECT_H

#include "counters.h"
#include "jhash.h"
#include "maps.h"

/* The service of (address, protocol, port): the exact port first, then the any-port key. */
static __always_inline struct service_ref *lookup_service(const struct dsrlb_addr *addr, __u8 family,
							  __u8 protocol, __u16 port)
{
	struct service_key key = {};
	struct service_ref *ref;

	key.addr = *addr;
	key.family = family;
	key.protocol = protocol;
	key.port = port;
	ref = bpf_map_lookup_elem(&services, &key);
	if (ref)
		return ref;
	key.port = 0;
	return bpf_map_lookup_elem(&services, &key);
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
 * back, and the reference's Python integers go negative there rather than wrap). */
static __always_inline int alive(__u64 now, __u64 last_seen, __u64 timeout)
{
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

static __always_inline void emit_session_event(const struct session_key *key, __u32 target_id, __u64 now,
					       int moved)
{
	struct session_event *event = bpf_ringbuf_reserve(&session_events, sizeof(*event), 0);

	if (!event) {
		count(CNT_EVENT_LOST);
		return;
	}
	event->client = key->client;
	event->last_seen_ns = now;
	event->service_id = key->service_id;
	event->target_id = target_id;
	event->client_port = key->client_port;
	event->family = key->family;
	event->moved = moved;
	__builtin_memset(event->pad, 0, sizeof(event->pad));
	bpf_ringbuf_submit(event, 0);
}

/* Select a target for a new or moved session and record the session; NULL: no usable target. */
static __always_inline struct target_info *new_session(__u32 service_slot, const struct service_info *info,
						       const struct session_key *key, __u64 now, int moved,
						       __u32 *target_slot)
{
	__s64 index = table_index(service_slot, info, &key->client, key->client_port);
	if (index < 0)
		return 0;
	__u32 entry = service_slot * TABLE_MAX + (__u32)index;
	__u32 *target_id = bpf_map_lookup_elem(&tables, &entry);
	if (!target_id)
		return 0;
	__u32 id = *target_id;
	struct target_info *target = target_by_id(id, SLOT_NONE, target_slot);
	if (!target || !target->usable)
		return 0;
	struct session_value value = {
		.last_seen_ns = now,
		.target_id = id,
		.target_slot = *target_slot,
	};
	bpf_map_update_elem(&sessions, key, &value, BPF_ANY);
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
		return new_session(service_slot, info, &key, now, 1, target_slot);
	}
	return new_session(service_slot, info, &key, now, 0, target_slot);
}

#endif
