"""Map slots for services and targets, the selection tables, and the service key table.

Config ids are arbitrary integers; the XDP arrays are indexed by dense slots. A slot freed by a
removal is reused, but an id that comes back gets its previous slot when that is still free, so the
slot hints stored in sessions and tables stay right in the common remove/re-add case (the program
checks the id anyway and falls back to the id map).

`ServiceTable` places service keys in the program's `service_table` array (maps.h): open addressing
with linear probing that only this process writes, so the data path finds a service with a few
inlined array loads instead of a hash-map helper call. `service_hash` is the twin of maps.h's.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Callable, Sequence

from dsrlb.xdp import layout
from dsrlb.xdp.libbpf import BpfMap

_MASK32 = 0xFFFFFFFF


class SlotsExhausted(RuntimeError):
    """Every slot of a kind is in use: load the program with larger XdpSizes."""


class SlotAllocator:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = list(range(size - 1, -1, -1))  # pop() gives the lowest slot
        self._used: set[int] = set()
        self._previous: dict[int, int] = {}  # owner id -> the slot it had last

    def allocate(self, owner: int) -> int:
        previous = self._previous.get(owner)
        if previous is not None and previous not in self._used:
            self._free.remove(previous)
            slot = previous
        elif self._free:
            slot = self._free.pop()
        else:
            raise SlotsExhausted(f"all {self.size} slots are in use")
        self._used.add(slot)
        self._previous[owner] = slot
        return slot

    def free(self, slot: int) -> None:
        if slot in self._used:
            self._used.remove(slot)
            self._free.append(slot)
            self._free.sort(reverse=True)

    def in_use(self) -> int:
        return len(self._used)


class TableWriter:
    """Writes a service's table at `slot * table_max` with one batch update of the changed entries.

    An entry is (target id, slot hint): `slot_of(id)` gives the target's slot (layout.SLOT_NONE when
    the id names no target). When a target gets or loses its slot, `rewrite()` refreshes the hints.
    """

    def __init__(self, tables: BpfMap, table_max: int, slot_of: Callable[[int], int]) -> None:
        self._map = tables
        self._table_max = table_max
        self._slot_of = slot_of
        self._written: dict[int, tuple[tuple[int, int], ...]] = {}  # slot -> what the map holds

    def write(self, slot: int, old_len: int, table: Sequence[int]) -> None:
        """Make entries [0, len(table)) of the slot hold `table`; entries beyond are left as they are
        (the length in service_info bounds every read)."""
        held = self._written.get(slot, ())
        wanted = [(target_id, self._slot_of(target_id)) for target_id in table]
        base = slot * self._table_max
        keys = array.array("I")
        values = array.array("I")
        for index, pair in enumerate(wanted):
            if index >= len(held) or held[index] != pair:
                keys.append(base + index)
                values.extend(pair)
        if keys:
            self._map.update_batch(keys.tobytes(), values.tobytes(), len(keys))
        merged = list(held[: len(table)]) + [(0, 0)] * max(0, len(table) - len(held))
        merged[: len(wanted)] = wanted
        self._written[slot] = tuple(merged) if table else ()

    def rewrite(self, slot: int, table: Sequence[int]) -> None:
        """Refresh the slot hints of a table already written (a target was added or removed)."""
        self.write(slot, len(table), table)


def service_hash(words: Sequence[int], tail: int) -> int:
    """maps.h service_hash(): `words` the 4 address words as the program loads them (little endian)."""
    h = ((words[0] ^ words[1] ^ words[2] ^ words[3]) + tail * 0x9E3779B1) & _MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def address_words(addr: layout.dsrlb_addr) -> tuple[int, int, int, int]:
    w0, w1, w2, w3 = struct.unpack("<4I", bytes(addr))
    return w0, w1, w2, w3


def nat_source_bit(addr: layout.dsrlb_addr) -> int:
    """The bit of maps.h nat_sources that stands for this address."""
    return service_hash(address_words(addr), 0) & (layout.NAT_SOURCE_BITS - 1)


def service_table_size(service_keys: int) -> int:
    """Entries of service_table for `service_keys` keys: a power of two, at most a quarter full, so
    that probes stay short (and misses, the traffic that is not balanced, end at the first empty)."""
    size = 64
    while size < 4 * service_keys:
        size *= 2
    return size


class ServiceTableFull(RuntimeError):
    """No free entry within SERVICE_PROBES of a key's home: load with a larger XdpSizes.service_keys."""


_EMPTY = b""  # _held[i] of an entry never used; _DELETED of a removed one
_DELETED = b"\xff"


class ServiceTable:
    """The control plane's side of maps.h service_table.

    Writes are ordered so that a packet read concurrently never matches a half-written key: a new
    key is first written with its family still marking the entry unused, then with the real family
    (the second write changes one byte); a removal changes only the family byte to DELETED. An
    entry whose successor is empty becomes empty again (no placed key can probe across it), so
    deletions do not lengthen probes forever.
    """

    def __init__(self, table: BpfMap, size: int) -> None:
        if size & (size - 1):
            raise ValueError(f"service table size {size} is not a power of two")
        self._map = table
        self.size = size
        self._held: list[bytes] = [_EMPTY] * size  # key bytes, _EMPTY or _DELETED
        self._where: dict[bytes, int] = {}

    def _write(self, index: int, key: layout.service_key, ref: layout.service_ref) -> None:
        self._map.update(index.to_bytes(4, "little"), bytes(layout.service_entry(key=key, ref=ref)))

    def put(self, key: layout.service_key, ref: layout.service_ref) -> None:
        raw = bytes(key)
        index = self._where.get(raw)
        if index is not None:
            self._write(index, key, ref)
            return
        words = struct.unpack("<5I", raw)
        home = service_hash(words[:4], words[4])
        for probe in range(layout.SERVICE_PROBES):
            index = (home + probe) & (self.size - 1)
            held = self._held[index]
            if held in (_EMPTY, _DELETED):
                unused = layout.service_key.from_buffer_copy(raw)
                unused.family = layout.SERVICE_EMPTY if held == _EMPTY else layout.SERVICE_DELETED
                self._write(index, unused, ref)
                self._write(index, key, ref)
                self._held[index] = raw
                self._where[raw] = index
                return
        raise ServiceTableFull(
            f"no free service table entry within {layout.SERVICE_PROBES} of this key's place "
            f"({len(self._where)} keys in {self.size} entries)")

    def remove(self, key: layout.service_key) -> None:
        raw = bytes(key)
        index = self._where.pop(raw, None)
        if index is None:
            return
        old = self._map.lookup(index.to_bytes(4, "little"))
        entry = layout.service_entry.from_buffer_copy(old) if old else layout.service_entry(key=key)
        entry.key.family = layout.SERVICE_DELETED
        self._map.update(index.to_bytes(4, "little"), bytes(entry))
        self._held[index] = _DELETED
        mask = self.size - 1
        while self._held[index] == _DELETED and self._held[(index + 1) & mask] == _EMPTY:
            entry.key.family = layout.SERVICE_EMPTY
            self._map.update(index.to_bytes(4, "little"), bytes(entry))
            self._held[index] = _EMPTY
            index = (index - 1) & mask
            old = self._map.lookup(index.to_bytes(4, "little"))
            if old is None:
                break
            entry = layout.service_entry.from_buffer_copy(old)

    def clear(self) -> None:
        """Every entry back to never used (the data path's state right after load)."""
        zero = bytes(layout.service_entry())
        for index, held in enumerate(self._held):
            if held != _EMPTY:
                self._map.update(index.to_bytes(4, "little"), zero)
        self._held = [_EMPTY] * self.size
        self._where.clear()

    def __len__(self) -> int:
        return len(self._where)
