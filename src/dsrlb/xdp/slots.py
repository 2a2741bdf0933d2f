"""Map slots for services and targets, and writing selection tables into the one big table array.

Config ids are arbitrary integers; the XDP arrays are indexed by dense slots. A slot freed by a
removal is reused, but an id that comes back gets its previous slot when that is still free, so the
slot hints stored in sessions stay right in the common remove/re-add case (the program checks the
id anyway and falls back to the id map).
"""

from __future__ import annotations

import array
from collections.abc import Sequence

from dsrlb.xdp.libbpf import BpfMap


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
    """Writes a service's table at `slot * table_max` with one batch update of the changed entries."""

    def __init__(self, tables: BpfMap, table_max: int) -> None:
        self._map = tables
        self._table_max = table_max
        self._written: dict[int, tuple[int, ...]] = {}  # slot -> what the map holds (up to its len)

    def write(self, slot: int, old_len: int, table: Sequence[int]) -> None:
        """Make entries [0, len(table)) of the slot hold `table`; entries beyond are left as they are
        (the length in service_info bounds every read)."""
        held = self._written.get(slot, ())
        base = slot * self._table_max
        keys = array.array("I")
        values = array.array("I")
        for index, target_id in enumerate(table):
            if index >= len(held) or held[index] != target_id:
                keys.append(base + index)
                values.append(target_id)
        if keys:
            self._map.update_batch(keys.tobytes(), values.tobytes(), len(keys))
        merged = list(held[: len(table)]) + [0] * max(0, len(table) - len(held))
        for index, target_id in enumerate(table):
            merged[index] = target_id
        self._written[slot] = tuple(merged) if table else ()
