"""A thin ctypes binding over the system libbpf (libbpf.so.1, libbpf >= 1.0).

Only what dsrlb needs: open an object with map sizes set before load, find maps and programs, map
element operations (also per-CPU values), BPF ring buffers, BPF_PROG_TEST_RUN, XDP attach/detach and
pinning, and the BTF queries `layout.py` uses to check shared structs. Keys and values are `bytes`;
`layout.py` turns them into ctypes structures.

libbpf 1.x returns a negative errno from int functions and NULL plus errno from pointer functions;
both become `LibbpfError` carrying the errno, the operation and libbpf's own log lines (the verifier
log when a load fails), so a failure reads as a sentence, not a number.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_codes
import os
import platform
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# XDP attach flags (include/uapi/linux/if_link.h).
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2

# BPF map update flags.
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# libbpf print levels (enum libbpf_print_level).
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

BTF_KIND_STRUCT = 4
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15


class LibbpfError(OSError):
    """A libbpf call failed: errno, what was being done, and libbpf's log lines if any."""

    def __init__(self, err: int, operation: str, log: str = "") -> None:
        self.operation = operation
        self.log = log
        message = f"{operation}: {os.strerror(err)} (errno {err})"
        if log:
            message += "\nlibbpf log (last lines):\n" + log
        super().__init__(err, message)

    def __str__(self) -> str:
        return str(self.args[1])


class LibbpfUnavailable(RuntimeError):
    """libbpf.so.1 could not be loaded."""


# --- the shared library and its log --------------------------------------------------------------


class _Library:
    """The loaded libbpf with prototypes, plus a captured log of libbpf's messages."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            self.lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise LibbpfUnavailable(f"cannot load {name}: {exc} (Debian: apt-get install libbpf1)") from exc
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._print_callback: Any = None
        self._declare()
        self._capture_log()

    def _declare(self) -> None:
        vp, cp, ci, cu32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
        sz = ctypes.c_size_t
        protos: dict[str, tuple[Any, list[Any]]] = {
            "bpf_object__open": (vp, [cp]),
            "bpf_object__load": (ci, [vp]),
            "bpf_object__close": (None, [vp]),
            "bpf_object__find_map_by_name": (vp, [vp, cp]),
            "bpf_object__find_program_by_name": (vp, [vp, cp]),
            "bpf_object__next_map": (vp, [vp, vp]),
            "bpf_object__btf": (vp, [vp]),
            "bpf_map__name": (cp, [vp]),
            "bpf_map__fd": (ci, [vp]),
            "bpf_map__type": (ci, [vp]),
            "bpf_map__key_size": (cu32, [vp]),
            "bpf_map__value_size": (cu32, [vp]),
            "bpf_map__max_entries": (cu32, [vp]),
            "bpf_map__set_max_entries": (ci, [vp, cu32]),
            "bpf_map__set_initial_value": (ci, [vp, vp, sz]),
            "bpf_map__initial_value": (vp, [vp, ctypes.POINTER(sz)]),
            "bpf_map__pin": (ci, [vp, cp]),
            "bpf_map__unpin": (ci, [vp, cp]),
            "bpf_program__fd": (ci, [vp]),
            "bpf_program__pin": (ci, [vp, cp]),
            "bpf_program__unpin": (ci, [vp, cp]),
            "bpf_map_update_elem": (ci, [ci, vp, vp, ctypes.c_uint64]),
            "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
            "bpf_map_delete_elem": (ci, [ci, vp]),
            "bpf_map_get_next_key": (ci, [ci, vp, vp]),
            "bpf_map_update_batch": (ci, [ci, vp, vp, ctypes.POINTER(cu32), vp]),
            "bpf_map_lookup_batch": (ci, [ci, vp, vp, vp, vp, ctypes.POINTER(cu32), vp]),
            "bpf_prog_test_run_opts": (ci, [ci, vp]),
            "bpf_xdp_attach": (ci, [ci, ci, cu32, vp]),
            "bpf_xdp_detach": (ci, [ci, cu32, vp]),
            "bpf_xdp_query_id": (ci, [ci, ci, ctypes.POINTER(cu32)]),
            "ring_buffer__new": (vp, [ci, vp, vp, vp]),
            "ring_buffer__poll": (ci, [vp, ci]),
            "ring_buffer__consume": (ci, [vp]),
            "ring_buffer__free": (None, [vp]),
            "libbpf_num_possible_cpus": (ci, []),
            "libbpf_set_print": (vp, [vp]),
            "btf__find_by_name_kind": (ctypes.c_int32, [vp, cp, cu32]),
            "btf__type_by_id": (vp, [vp, cu32]),
            "btf__name_by_offset": (cp, [vp, cu32]),
            "btf__resolve_size": (ctypes.c_int64, [vp, cu32]),
        }
        for fname, (restype, argtypes) in protos.items():
            fn = getattr(self.lib, fname)
            fn.restype = restype
            fn.argtypes = argtypes

    def _capture_log(self) -> None:
        """Route libbpf's messages (warnings, verifier logs) into a buffer for error messages.

        The callback receives a va_list; on x86-64 that is a pointer and can be handed to vsnprintf.
        Elsewhere the log is left to libbpf's default (stderr).
        """
        if platform.machine() not in ("x86_64", "AMD64"):
            return
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        vsnprintf.restype = ctypes.c_int
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
        # One message can be a whole verifier log; its tail (the error) is what matters.
        buf = ctypes.create_string_buffer(1 << 20)

        def on_print(level: int, fmt: bytes, args: int) -> int:
            if level == LIBBPF_DEBUG:
                return 0
            with self._log_lock:
                vsnprintf(buf, len(buf), fmt, args)
                self._log.append(buf.value.decode(errors="replace"))
                del self._log[:-400]
            return 0

        self._print_callback = proto(on_print)
        self.lib.libbpf_set_print(ctypes.cast(self._print_callback, ctypes.c_void_p))

    def take_log(self, last: int = 40) -> str:
        with self._log_lock:
            lines = "".join(self._log).splitlines()
            self._log.clear()
        return "\n".join(lines[-last:])


_library: _Library | None = None
_library_lock = threading.Lock()


def library() -> _Library:
    global _library
    with _library_lock:
        if _library is None:
            _library = _Library()
        return _library


def _check(result: int, operation: str) -> int:
    """Raise for a negative libbpf return (libbpf 1.x: -errno), else return it."""
    if result < 0:
        lib = library()
        raise LibbpfError(-result, operation, lib.take_log())
    return result


def _check_pointer(pointer: int | None, operation: str) -> int:
    if not pointer:
        err = ctypes.get_errno() or errno_codes.EINVAL
        raise LibbpfError(err, operation, library().take_log())
    return pointer


def num_possible_cpus() -> int:
    return _check(library().lib.libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


# --- maps ----------------------------------------------------------------------------------------

BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
_PERCPU_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}


class BpfMap:
    """One map of an object. Per-CPU maps take and give one value per possible CPU."""

    def __init__(self, handle: int) -> None:
        lib = library().lib
        self._handle = handle
        self.name: str = lib.bpf_map__name(handle).decode()
        self.map_type: int = lib.bpf_map__type(handle)
        self.key_size: int = lib.bpf_map__key_size(handle)
        self.value_size: int = lib.bpf_map__value_size(handle)
        self.percpu = self.map_type in _PERCPU_TYPES
        # The kernel lays per-CPU values out 8-byte aligned, one per possible CPU.
        self._cpu_stride = (self.value_size + 7) & ~7
        self._ncpus = num_possible_cpus() if self.percpu else 1

    @property
    def handle(self) -> int:
        return self._handle

    @property
    def fd(self) -> int:
        return int(library().lib.bpf_map__fd(self._handle))

    @property
    def max_entries(self) -> int:
        return int(library().lib.bpf_map__max_entries(self._handle))

    def set_max_entries(self, entries: int) -> None:
        _check(library().lib.bpf_map__set_max_entries(self._handle, entries),
               f"set max_entries of map {self.name} to {entries}")

    def _key(self, key: bytes) -> ctypes.Array[ctypes.c_char]:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, expected {self.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def _value_buffer_size(self) -> int:
        return self._cpu_stride * self._ncpus if self.percpu else self.value_size

    def lookup(self, key: bytes) -> bytes | None:
        """The value, or None when the key is absent (per-CPU maps: use lookup_percpu)."""
        raw = self._lookup_raw(key)
        return None if raw is None else raw[: self.value_size]

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        raw = self._lookup_raw(key)
        if raw is None:
            return None
        stride = self._cpu_stride
        return [raw[i * stride: i * stride + self.value_size] for i in range(self._ncpus)]

    def _lookup_raw(self, key: bytes) -> bytes | None:
        size = self._value_buffer_size()
        value = ctypes.create_string_buffer(size)
        result = library().lib.bpf_map_lookup_elem(self.fd, self._key(key), value)
        if result == -errno_codes.ENOENT:
            return None
        _check(result, f"lookup in map {self.name}")
        return value.raw[:size]

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, expected {self.value_size}")
        if self.percpu:
            self.update_percpu(key, [value] * self._ncpus, flags)
            return
        buf = ctypes.create_string_buffer(value, len(value))
        _check(library().lib.bpf_map_update_elem(self.fd, self._key(key), buf, flags),
               f"update of map {self.name}")

    def update_percpu(self, key: bytes, values: list[bytes], flags: int = BPF_ANY) -> None:
        if len(values) != self._ncpus:
            raise ValueError(f"map {self.name}: {len(values)} per-CPU values, expected {self._ncpus}")
        pad = b"\0" * (self._cpu_stride - self.value_size)
        blob = b"".join(v + pad for v in values)
        buf = ctypes.create_string_buffer(blob, len(blob))
        _check(library().lib.bpf_map_update_elem(self.fd, self._key(key), buf, flags),
               f"update of map {self.name}")

    def update_batch(self, keys: bytes, values: bytes, count: int) -> None:
        """Write `count` packed keys and values in one syscall (BPF_MAP_UPDATE_BATCH)."""
        if len(keys) != count * self.key_size or len(values) != count * self.value_size:
            raise ValueError(f"map {self.name}: batch of {count} needs {count * self.key_size} key bytes "
                             f"and {count * self.value_size} value bytes")
        if count == 0:
            return
        done = ctypes.c_uint32(count)
        key_buf = ctypes.create_string_buffer(keys, len(keys))
        value_buf = ctypes.create_string_buffer(values, len(values))
        _check(library().lib.bpf_map_update_batch(self.fd, key_buf, value_buf, ctypes.byref(done), None),
               f"batch update of map {self.name} ({done.value} of {count} written)")

    def delete(self, key: bytes) -> bool:
        """Delete `key`; False when it was not there."""
        result = library().lib.bpf_map_delete_elem(self.fd, self._key(key))
        if result == -errno_codes.ENOENT:
            return False
        _check(result, f"delete from map {self.name}")
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key (hash maps: a snapshot walk; an entry deleted meanwhile may restart the walk)."""
        lib = library().lib
        current = ctypes.create_string_buffer(self.key_size)
        following = ctypes.create_string_buffer(self.key_size)
        previous: ctypes.Array[ctypes.c_char] | None = None
        while True:
            result = lib.bpf_map_get_next_key(self.fd, previous, following)
            if result == -errno_codes.ENOENT:
                return
            _check(result, f"walk of map {self.name}")
            key = following.raw
            yield key
            ctypes.memmove(current, following, self.key_size)
            previous = current

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value): BPF_MAP_LOOKUP_BATCH, a few thousand entries a syscall, where the map
        type has it (hash maps, LRU included: ~20x faster than a key walk); else key by key."""
        try:
            yield from self._items_batched()
        except _NoBatch:
            for key in list(self.keys()):
                value = self.lookup(key)
                if value is not None:
                    yield key, value

    def _items_batched(self, chunk: int = 4096) -> Iterator[tuple[bytes, bytes]]:
        if self.percpu:  # batches carry every CPU's value; lookup() is the one place that unpacks them
            raise _NoBatch
        lib = library().lib
        token = max(self.key_size, 8)  # the kernel's batch cursor (a bucket number for hash maps)
        in_batch, out_batch = ctypes.create_string_buffer(token), ctypes.create_string_buffer(token)
        keys = ctypes.create_string_buffer(chunk * self.key_size)
        values = ctypes.create_string_buffer(chunk * self.value_size)
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            result = lib.bpf_map_lookup_batch(self.fd, None if first else in_batch, out_batch, keys, values,
                                              ctypes.byref(count), None)
            if first and result in (-errno_codes.EINVAL, -errno_codes.ENOTSUP, -524):  # 524: ENOTSUPP
                raise _NoBatch
            if result < 0 and result != -errno_codes.ENOENT:
                _check(result, f"batch lookup of map {self.name}")
            raw_keys, raw_values = keys.raw, values.raw
            for i in range(count.value):
                yield (raw_keys[i * self.key_size:(i + 1) * self.key_size],
                       raw_values[i * self.value_size:(i + 1) * self.value_size])
            if result == -errno_codes.ENOENT:
                return
            ctypes.memmove(in_batch, out_batch, token)
            first = False

    def pin(self, path: Path) -> None:
        _check(library().lib.bpf_map__pin(self._handle, str(path).encode()), f"pin map {self.name} at {path}")

    def unpin(self, path: Path) -> None:
        _check(library().lib.bpf_map__unpin(self._handle, str(path).encode()),
               f"unpin map {self.name} from {path}")


class _NoBatch(Exception):
    """The map type has no BPF_MAP_LOOKUP_BATCH."""


# --- programs and BPF_PROG_TEST_RUN ---------------------------------------------------------------


class _TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf/bpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class XdpMd(ctypes.Structure):
    """struct xdp_md, the context BPF_PROG_TEST_RUN accepts for XDP (data offsets must be 0/len)."""

    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    data: bytes
    duration_ns: int  # mean per repetition, as the kernel measured it


# XDP test runs may grow the frame (bpf_xdp_adjust_tail); leave room for that in data_out.
_TEST_RUN_HEADROOM = 256


class BpfProgram:
    def __init__(self, handle: int, name: str) -> None:
        self._handle = handle
        self.name = name

    @property
    def fd(self) -> int:
        return int(library().lib.bpf_program__fd(self._handle))

    def test_run(self, data: bytes, ingress_ifindex: int = 0, repeat: int = 1) -> TestRunResult:
        """Run the program on `data` with BPF_PROG_TEST_RUN (`ingress_ifindex` must exist here)."""
        data_in = ctypes.create_string_buffer(data, len(data))
        out_size = len(data) + _TEST_RUN_HEADROOM
        data_out = ctypes.create_string_buffer(out_size)
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
        opts.data_in = ctypes.cast(data_in, ctypes.c_void_p)
        opts.data_size_in = len(data)
        opts.data_out = ctypes.cast(data_out, ctypes.c_void_p)
        opts.data_size_out = out_size
        opts.repeat = max(1, repeat)
        ctx = XdpMd(data=0, data_end=len(data), ingress_ifindex=ingress_ifindex)
        if ingress_ifindex:
            opts.ctx_in = ctypes.cast(ctypes.pointer(ctx), ctypes.c_void_p)
            opts.ctx_size_in = ctypes.sizeof(ctx)
        result = library().lib.bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        if result == -errno_codes.ENODEV:
            raise LibbpfError(errno_codes.ENODEV,
                              f"test run of {self.name}: ingress ifindex {ingress_ifindex} does not exist "
                              "in this network namespace")
        _check(result, f"test run of program {self.name}")
        return TestRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)

    def pin(self, path: Path) -> None:
        _check(library().lib.bpf_program__pin(self._handle, str(path).encode()),
               f"pin program {self.name} at {path}")

    def unpin(self, path: Path) -> None:
        _check(library().lib.bpf_program__unpin(self._handle, str(path).encode()),
               f"unpin program {self.name} from {path}")


# --- objects ---------------------------------------------------------------------------------------


class BpfObject:
    """An opened (and, after `load()`, loaded) BPF object file. Close it, or use it as a context."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = library()
        lib.take_log()
        self._handle: int | None = _check_pointer(lib.lib.bpf_object__open(str(path).encode()),
                                                  f"open BPF object {path}")
        self.loaded = False

    @property
    def handle(self) -> int:
        if self._handle is None:
            raise ValueError(f"BPF object {self.path} is closed")
        return self._handle

    def maps(self) -> list[BpfMap]:
        lib = library().lib
        found: list[BpfMap] = []
        current = lib.bpf_object__next_map(self.handle, None)
        while current:
            found.append(BpfMap(current))
            current = lib.bpf_object__next_map(self.handle, current)
        return found

    def map(self, name: str) -> BpfMap:
        handle = library().lib.bpf_object__find_map_by_name(self.handle, name.encode())
        if not handle:
            raise KeyError(f"no map {name!r} in {self.path.name}")
        return BpfMap(handle)

    def internal_map(self, section: str) -> BpfMap:
        """The map libbpf made for a global-data section (".rodata", ".bss", ".data")."""
        for candidate in self.maps():
            if candidate.name.endswith(section):
                return candidate
        raise KeyError(f"no {section} section in {self.path.name}")

    def program(self, name: str) -> BpfProgram:
        handle = library().lib.bpf_object__find_program_by_name(self.handle, name.encode())
        if not handle:
            raise KeyError(f"no program {name!r} in {self.path.name}")
        return BpfProgram(handle, name)

    def set_initial_value(self, bpf_map: BpfMap, data: bytes) -> None:
        """Replace a global-data map's content before load (.rodata constants)."""
        buf = ctypes.create_string_buffer(data, len(data))
        _check(library().lib.bpf_map__set_initial_value(bpf_map.handle, buf, len(data)),
               f"set initial value of {bpf_map.name}")

    def initial_value(self, bpf_map: BpfMap) -> bytes:
        size = ctypes.c_size_t()
        pointer = library().lib.bpf_map__initial_value(bpf_map.handle, ctypes.byref(size))
        _check_pointer(pointer, f"initial value of {bpf_map.name}")
        return ctypes.string_at(pointer, size.value)

    def load(self) -> None:
        lib = library()
        lib.take_log()
        _check(lib.lib.bpf_object__load(self.handle), f"load BPF object {self.path.name}")
        self.loaded = True

    def btf(self) -> int:
        return _check_pointer(library().lib.bpf_object__btf(self.handle), f"BTF of {self.path.name}")

    def close(self) -> None:
        if self._handle is not None:
            library().lib.bpf_object__close(self._handle)
            self._handle = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- XDP attach ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    ifindex: int
    mode: str  # "native" or "generic"
    flags: int
    message: str  # why generic mode was used, empty for native


def xdp_attach(ifindex: int, program: BpfProgram, mode: str = "auto") -> Attachment:
    """Attach in native (driver) mode; with mode "auto", fall back to generic (skb) mode.

    Generic mode works on every device but runs after the skb is allocated, so most of XDP's speed
    is lost; the returned message says so, and the caller logs it.
    """
    lib = library().lib
    if mode in ("auto", "native"):
        result = lib.bpf_xdp_attach(ifindex, program.fd, XDP_FLAGS_DRV_MODE, None)
        if result == 0:
            return Attachment(ifindex, "native", XDP_FLAGS_DRV_MODE, "")
        if mode == "native":
            _check(result, f"attach XDP program {program.name} to ifindex {ifindex} in native mode")
        native_error = os.strerror(-result)
        library().take_log()
    else:
        native_error = "generic mode requested"
    _check(lib.bpf_xdp_attach(ifindex, program.fd, XDP_FLAGS_SKB_MODE, None),
           f"attach XDP program {program.name} to ifindex {ifindex} in generic mode")
    message = "" if mode == "generic" else (
        f"native XDP is not available on ifindex {ifindex} ({native_error}); "
        "attached in generic (skb) mode, which is much slower")
    return Attachment(ifindex, "generic", XDP_FLAGS_SKB_MODE, message)


def xdp_detach(attachment: Attachment) -> None:
    result = library().lib.bpf_xdp_detach(attachment.ifindex, attachment.flags, None)
    if result == -errno_codes.ENODEV:  # the interface is gone, and the program with it
        return
    _check(result, f"detach XDP program from ifindex {attachment.ifindex}")


def xdp_query_id(ifindex: int, flags: int = 0) -> int:
    """Id of the XDP program attached to `ifindex` (0: none)."""
    prog_id = ctypes.c_uint32()
    _check(library().lib.bpf_xdp_query_id(ifindex, flags, ctypes.byref(prog_id)),
           f"query XDP program of ifindex {ifindex}")
    return prog_id.value


# --- ring buffer -----------------------------------------------------------------------------------

_RING_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class RingBuffer:
    """A consumer of one BPF_MAP_TYPE_RINGBUF map: poll() hands each record to `on_record`."""

    def __init__(self, bpf_map: BpfMap, on_record: Callable[[bytes], None]) -> None:
        self._on_record = on_record
        self._callback = _RING_CALLBACK(self._deliver)  # kept alive as long as the ring
        self._handle: int | None = _check_pointer(
            library().lib.ring_buffer__new(bpf_map.fd, ctypes.cast(self._callback, ctypes.c_void_p),
                                           None, None),
            f"ring buffer on map {bpf_map.name}")

    def _deliver(self, _ctx: int, data: int, size: int) -> int:
        self._on_record(ctypes.string_at(data, size))
        return 0

    def poll(self, timeout_ms: int = 0) -> int:
        """Deliver what is ready (waiting up to timeout_ms); returns the number of records."""
        if self._handle is None:
            raise ValueError("ring buffer is closed")
        return _check(library().lib.ring_buffer__poll(self._handle, timeout_ms), "ring buffer poll")

    def close(self) -> None:
        if self._handle is not None:
            library().lib.ring_buffer__free(self._handle)
            self._handle = None
