"""The structs shared with the XDP program (xdp/bpf/maps.h), as ctypes structures, checked against BTF.

Every struct a map holds is defined twice: in C (maps.h) and here. `check_layouts(obj)` reads the
loaded object's BTF through libbpf's btf__ API (btf__find_by_name_kind, btf__type_by_id,
btf__resolve_size and the `struct btf_member` array that follows a struct's `struct btf_type`) and
compares every member's name, byte offset and size, and every struct's size, with these classes. A
difference is a `LayoutMismatch` naming the struct and the member at load time, never silent
corruption of a map.
"""

from __future__ import annotations

import ctypes
from ipaddress import IPv4Address, IPv6Address, ip_address
from struct import Struct

from dsrlb.xdp.libbpf import BTF_KIND_DATASEC, BTF_KIND_STRUCT, BpfObject, library

IPAddress = IPv4Address | IPv6Address

TABLE_MAX = 65537  # maps.h TABLE_MAX: entries per service selection table
SLOT_NONE = 0xFFFFFFFF

# maps.h enum dsrlb_counter: the shared names (engine/reference.py COUNTER_NAMES) then XDP's own.
COUNTER_NAMES = (
    "rx", "pass", "drop", "tx", "redirect", "malformed", "fragment", "no_target", "no_route",
    "session_new", "session_hit", "session_moved", "nat_return", "icmp_translated", "event_lost",
)

# maps.h enum index_kind
INDEX_COUNTER, INDEX_RANDOM, INDEX_HASH_CLIENT, INDEX_HASH_SESSION, INDEX_FIRST = range(5)

# maps.h service_table: key.family of unused entries, and the longest probe the program makes
SERVICE_EMPTY, SERVICE_DELETED = 0, 0xFF
SERVICE_PROBES = 16
NAT_SOURCE_BITS = 65536  # maps.h nat_sources: bits, in u64 words

_u8, _u16, _u32, _u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


class LayoutMismatch(RuntimeError):
    """A struct in the BPF object differs from its Python twin (rebuild, or fix layout.py)."""


# The classes are named as the C structs they mirror (the BTF check matches them by name).
class dsrlb_addr(ctypes.Structure):
    _fields_ = [("w", _u32 * 4)]


class service_key(ctypes.Structure):
    _fields_ = [("addr", dsrlb_addr), ("port", _u16), ("protocol", _u8), ("family", _u8)]


class service_ref(ctypes.Structure):
    _fields_ = [("slot", _u32), ("return_vip", dsrlb_addr)]


class service_entry(ctypes.Structure):
    _fields_ = [("key", service_key), ("ref", service_ref)]


class table_entry(ctypes.Structure):
    _fields_ = [("target_id", _u32), ("target_slot", _u32)]


class service_info(ctypes.Structure):
    _fields_ = [
        ("timeout_ns", _u64), ("id", _u32), ("table_len", _u32), ("index_kind", _u8),
        ("per_port", _u8), ("active", _u8), ("pad", _u8 * 5),
    ]


class target_info(ctypes.Structure):
    _fields_ = [
        ("addr", dsrlb_addr), ("id", _u32), ("ifindex", _u32), ("dst_mac", _u8 * 6),
        ("src_mac", _u8 * 6), ("port", _u16), ("has_port", _u8), ("family", _u8), ("dsr", _u8),
        ("return_port", _u8), ("usable", _u8), ("state", _u8), ("in_use", _u8), ("pad", _u8 * 3),
    ]


class session_key(ctypes.Structure):
    _fields_ = [
        ("client", dsrlb_addr), ("service_id", _u32), ("client_port", _u16), ("family", _u8),
        ("pad", _u8),
    ]


class session_value(ctypes.Structure):
    _fields_ = [("last_seen_ns", _u64), ("target_id", _u32), ("target_slot", _u32)]


# The same two structs for Struct.unpack, several times faster than ctypes per entry: what a walk of a
# session table of a million entries (session sync's refresh) spends its time on. Checked against the
# ctypes layouts (themselves checked against the object's BTF at load) below.
SESSION_KEY = Struct("=16sIHBx")  # client, service_id, client_port, family
SESSION_VALUE = Struct("=QI4x")  # last_seen_ns, target_id (target_slot skipped)
assert SESSION_KEY.size == ctypes.sizeof(session_key) and SESSION_VALUE.size == ctypes.sizeof(session_value)


class nat_key(ctypes.Structure):
    _fields_ = [
        ("target", dsrlb_addr), ("client", dsrlb_addr), ("target_port", _u16), ("client_port", _u16),
        ("protocol", _u8), ("family", _u8), ("pad", _u8 * 2),
    ]


class nat_value(ctypes.Structure):
    _fields_ = [
        ("vip", dsrlb_addr), ("last_seen_ns", _u64), ("timeout_ns", _u64), ("service_id", _u32),
        ("service_slot", _u32), ("target_id", _u32), ("target_slot", _u32), ("vip_port", _u16),
        ("pad", _u8 * 6),
    ]


class route_key(ctypes.Structure):
    _fields_ = [("prefixlen", _u32), ("family", _u32), ("addr", dsrlb_addr)]


class next_hop(ctypes.Structure):
    _fields_ = [("ifindex", _u32), ("dst_mac", _u8 * 6), ("src_mac", _u8 * 6)]


class addr_key(ctypes.Structure):
    _fields_ = [("addr", dsrlb_addr), ("family", _u32)]


class object_stats(ctypes.Structure):
    _fields_ = [("packets", _u64), ("bytes", _u64), ("sessions_new", _u64)]


class session_event(ctypes.Structure):
    _fields_ = [
        ("client", dsrlb_addr), ("last_seen_ns", _u64), ("service_id", _u32), ("target_id", _u32),
        ("client_port", _u16), ("family", _u8), ("moved", _u8), ("pad", _u8 * 4),
    ]


class test_inputs(ctypes.Structure):
    _fields_ = [("now_ns", _u64), ("rand32", _u32), ("rand_set", _u8), ("pad", _u8 * 3)]


class clock_base(ctypes.Structure):
    _fields_ = [("offset_ns", _u64), ("ns_per_jiffy", _u64)]


SHARED_STRUCTS: tuple[type[ctypes.Structure], ...] = (
    dsrlb_addr, service_key, service_ref, service_entry, table_entry, service_info, target_info,
    session_key, session_value, nat_key, nat_value, route_key, next_hop, addr_key, object_stats,
    session_event, test_inputs, clock_base,
)


# --- addresses -------------------------------------------------------------------------------------


def addr_of(address: IPAddress) -> dsrlb_addr:
    """The 16-byte key form: IPv6 as is, IPv4 as ::ffff:a.b.c.d (engine/hashing.address_key_bytes)."""
    return addr_of_packed(address.packed)


def addr_of_packed(packed: bytes) -> dsrlb_addr:
    raw = _V4_MAPPED + packed if len(packed) == 4 else packed
    return dsrlb_addr.from_buffer_copy(raw)


def address_from(addr: dsrlb_addr, family: int) -> IPAddress:
    raw = bytes(addr)
    return ip_address(raw[12:] if family == 4 else raw)


def family_of(address: IPAddress) -> int:
    return address.version


def mac_array(mac: bytes) -> ctypes.Array[ctypes.c_uint8]:
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, not {len(mac)}")
    return (_u8 * 6)(*mac)


# --- the BTF check ---------------------------------------------------------------------------------


class _BtfType(ctypes.Structure):
    """struct btf_type (uapi/linux/btf.h): name_off, info (vlen | kind << 24 | kflag << 31), size."""

    _fields_ = [("name_off", _u32), ("info", _u32), ("size", _u32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", _u32), ("type", _u32), ("offset", _u32)]


def btf_struct_members(obj: BpfObject, name: str) -> tuple[int, list[tuple[str, int, int]]]:
    """(size, [(member, byte offset, byte size)]) of `struct name` in the object's BTF."""
    lib = library().lib
    btf = obj.btf()
    type_id = lib.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_STRUCT)
    if type_id < 0:
        raise LayoutMismatch(f"struct {name} is not in the BTF of {obj.path.name}")
    pointer = lib.btf__type_by_id(btf, type_id)
    header = _BtfType.from_address(pointer)
    vlen = header.info & 0xFFFF
    kind_flag = header.info >> 31
    members = (_BtfMember * vlen).from_address(pointer + ctypes.sizeof(_BtfType))
    found: list[tuple[str, int, int]] = []
    for member in members:
        member_name = lib.btf__name_by_offset(btf, member.name_off).decode()
        bit_offset = member.offset & 0xFFFFFF if kind_flag else member.offset
        if bit_offset % 8:
            raise LayoutMismatch(f"struct {name}: member {member_name} is a bit field")
        size = lib.btf__resolve_size(btf, member.type)
        found.append((member_name, bit_offset // 8, int(size)))
    return header.size, found


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", _u32), ("offset", _u32), ("size", _u32)]


def section_variable(obj: BpfObject, section: str, variable: str) -> tuple[int, int]:
    """(offset, size) of a global variable in a data section (".rodata"), from the object's BTF."""
    lib = library().lib
    btf = obj.btf()
    sec_id = lib.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
    if sec_id < 0:
        raise LayoutMismatch(f"section {section} is not in the BTF of {obj.path.name}")
    pointer = lib.btf__type_by_id(btf, sec_id)
    header = _BtfType.from_address(pointer)
    entries = (_BtfVarSecinfo * (header.info & 0xFFFF)).from_address(pointer + ctypes.sizeof(_BtfType))
    for entry in entries:
        var = _BtfType.from_address(lib.btf__type_by_id(btf, entry.type))
        if lib.btf__name_by_offset(btf, var.name_off).decode() == variable:
            return entry.offset, entry.size
    raise LayoutMismatch(f"variable {variable} is not in section {section} of {obj.path.name}")


def check_layout(obj: BpfObject, struct: type[ctypes.Structure]) -> None:
    name = struct.__name__
    size, members = btf_struct_members(obj, name)
    ours = [
        (field_name, getattr(struct, field_name).offset, getattr(struct, field_name).size)
        for field_name, *_ in struct._fields_
    ]
    if members != ours:
        theirs_by_name = {m[0]: m for m in members}
        for mine in ours:
            other = theirs_by_name.get(mine[0])
            if other != mine:
                where = "missing" if other is None else f"(offset {other[1]}, size {other[2]})"
                raise LayoutMismatch(
                    f"struct {name}: member {mine[0]} is (offset {mine[1]}, size {mine[2]}) in "
                    f"xdp/layout.py but {where} in the BPF object's BTF")
        raise LayoutMismatch(f"struct {name}: members differ: BTF {members}, layout.py {ours}")
    if size != ctypes.sizeof(struct):
        raise LayoutMismatch(
            f"struct {name} is {size} bytes in the BPF object but {ctypes.sizeof(struct)} in layout.py")


def check_layouts(obj: BpfObject, structs: tuple[type[ctypes.Structure], ...] = SHARED_STRUCTS) -> None:
    """Raise LayoutMismatch unless every shared struct matches the object's BTF exactly."""
    for struct in structs:
        check_layout(obj, struct)
