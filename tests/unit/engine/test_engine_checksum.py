"""The checksum model: full computation, the BPF-exact incremental update, and the kernel itself."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsrlb.engine.checksum import (
    bpf_csum_diff,
    csum_add,
    csum_fold,
    csum_from32to16,
    csum_partial,
    csum_replace,
    internet_checksum,
    ones_complement_sum,
)
from dsrlb.xdp.build import compile_object

VECTORS = Path(__file__).parent / "vectors"


def test_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2 (one's complement).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_complement_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_csum_add_wraps_the_carry_around() -> None:
    assert csum_add(0xFFFFFFFF, 1) == 1
    assert csum_add(0xFFFFFFFF, 0xFFFFFFFF) == 0xFFFFFFFF
    assert csum_add(0, 0) == 0
    assert csum_from32to16(0x0001FFFF) == 0x0001
    assert csum_fold(0) == 0xFFFF


def test_csum_partial_zero_only_for_all_zero() -> None:
    assert csum_partial(bytes(8), 0) == 0
    assert csum_partial(b"\xff" * 4, 0) == 0xFFFFFFFF
    assert csum_partial(b"\x01\x00\x00\x00" + b"\xff" * 4, 0) == 1
    with pytest.raises(ValueError):
        csum_partial(b"abc")


def _field(words: bytes, check_offset: int) -> int:
    """The checksum to write over `words` (field at check_offset zeroed), as a host-order u16."""
    zeroed = bytearray(words)
    zeroed[check_offset : check_offset + 2] = b"\x00\x00"
    value = internet_checksum(zeroed)
    return int.from_bytes(value.to_bytes(2, "big"), "little")


@settings(max_examples=400)
@given(
    body=st.binary(min_size=24, max_size=24).map(bytearray),
    start=st.integers(0, 4),
    new=st.binary(min_size=4, max_size=12),
)
def test_incremental_equals_full_recompute_but_for_the_zero_representation(
    body: bytearray, start: int, new: bytes
) -> None:
    check_at = 22  # a checksum field outside the rewritten words
    body[check_at : check_at + 2] = _field(bytes(body), check_at).to_bytes(2, "little")
    begin = start * 4
    length = min(len(new) // 4 * 4, 20 - begin) or 4
    old_words = bytes(body[begin : begin + length])
    new_words = new[:length].ljust(length, b"\x00")
    check = int.from_bytes(body[check_at : check_at + 2], "little")
    incremental = csum_replace(check, old_words, new_words)
    body[begin : begin + length] = new_words
    full = _field(bytes(body), check_at)
    assert incremental == full or {incremental, full} == {0, 0xFFFF}
    body[check_at : check_at + 2] = incremental.to_bytes(2, "little")
    # valid means: the one's-complement sum is zero (0xFFFF, or +0 for all-zero data)
    assert ones_complement_sum(body) % 0xFFFF == 0


def test_zero_class_results_match_the_full_computation() -> None:
    """When the new checksum is zero, the BPF arithmetic writes 0x0000 like a full recompute does."""
    rng = random.Random(1)
    for _ in range(2000):
        body = bytearray(rng.getrandbits(8) for _ in range(20))
        body[10:12] = b"\x00\x00"
        body[10:12] = internet_checksum(body).to_bytes(2, "big")
        old = bytes(body[0:4])
        # new words 0..4 chosen so that the data (checksum field zeroed) sums to 0xFFFF: full check 0
        rest = bytearray(body)
        rest[0:4] = b"\x00\x00\x00\x00"
        rest[10:12] = b"\x00\x00"
        need = (0xFFFF - ones_complement_sum(rest)) % 0xFFFF or 0xFFFF
        new = need.to_bytes(2, "big") + b"\x00\x00"
        check = int.from_bytes(body[10:12], "little")
        body[0:4] = new
        body[10:12] = b"\x00\x00"
        assert internet_checksum(body) == 0
        assert csum_replace(check, old, new) == 0


def test_the_documented_zero_corner() -> None:
    """The one case where incremental and full differ: field 0xFFFF, new words all zero (§3.1)."""
    assert csum_replace(0xFFFF, b"\xff\xff\xff\xff", b"\x00\x00\x00\x00") == 0xFFFF
    assert csum_replace(0xFFFF, b"\x00\x00\x00\x00", b"\x00\x00\x00\x00") == 0x0000


def _kernel_probe_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("clang", "bpftool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.mark.root
def test_bpf_csum_diff_model_matches_the_running_kernel(tmp_path: Path) -> None:
    """Run bpf_csum_diff in the kernel (BPF_PROG_TEST_RUN via bpftool) on random and corner inputs."""
    problem = _kernel_probe_problem()
    if problem is not None:
        pytest.fail(problem)
    obj = tmp_path / "probe.o"
    # The package's own clang flags: they carry the multiarch include <asm/types.h> needs on Debian.
    compile_object(VECTORS / "csum_diff_probe.bpf.c", obj)
    pin = Path(f"/sys/fs/bpf/dsrlb_csum_probe_{uuid.uuid4().hex[:8]}")
    subprocess.run(["bpftool", "prog", "load", str(obj), str(pin), "type", "xdp"], check=True,
                   capture_output=True)
    try:
        rng = random.Random(42)
        checked = zero_class = 0
        for _ in range(5):
            records = []
            for _ in range(40):
                n = rng.choice([1, 2, 4, 5])
                seed = rng.choice([rng.getrandbits(16), 0, 0xFFFF, rng.getrandbits(32)])
                old = [rng.getrandbits(32) for _ in range(n)]
                new = [rng.getrandbits(32) for _ in range(n)] if rng.random() < 0.7 else list(old)
                if rng.random() < 0.15:
                    old, new, seed = [0xFFFFFFFF] * n, [0] * n, 0
                records.append((seed, old, new, n))
            data = b"".join(struct.pack("<I5I5III", s, *(o + [0] * (5 - n)), *(w + [0] * (5 - n)), n, 0)
                            for s, o, w, n in records)
            (tmp_path / "in.bin").write_bytes(data)
            subprocess.run(["bpftool", "prog", "run", "pinned", str(pin), "data_in", str(tmp_path / "in.bin"),
                            "data_out", str(tmp_path / "out.bin")], check=True, capture_output=True)
            out = (tmp_path / "out.bin").read_bytes()
            for i, (seed, old, new, n) in enumerate(records):
                got = struct.unpack_from("<I", out, i * 52 + 48)[0]
                want = bpf_csum_diff(struct.pack(f"<{n}I", *old), struct.pack(f"<{n}I", *new), seed)
                assert got == want, (hex(seed), old, new)
                checked += 1
                zero_class += want in (0, 0xFFFF)
        assert checked == 200
        assert zero_class > 0
    finally:
        pin.unlink(missing_ok=True)


@settings(max_examples=500)
@given(
    check=st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0xFFFF])),
    words=st.integers(0, 9).flatmap(lambda n: st.tuples(
        st.one_of(st.binary(min_size=4 * n, max_size=4 * n), st.just(b"\xff" * 4 * n)),
        st.one_of(st.binary(min_size=4 * n, max_size=4 * n), st.just(bytes(4 * n))))),
)
def test_fused_replace_equals_the_helper_composition(check: int, words: tuple[bytes, bytes]) -> None:
    old, new = words
    assert csum_replace(check, old, new) == csum_fold(bpf_csum_diff(old, new, ~check & 0xFFFF))
