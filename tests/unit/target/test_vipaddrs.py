"""vipaddrs expansion (seed 002): our parser against the seed's own bash scripts, plus the error cases."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsrlb.target.persist import IFUP_LO, IFVIP_UTILS
from dsrlb.target.vipaddrs import VipAddrsError, expand_vipaddrs, parse_vipaddrs

SEED_EXAMPLE = """# single addresses
72.20.112.45
72.20.112.46
# a subnetwork
72.20.112.48/29
"""


def test_seed_example_expands_to_two_addresses_and_a_slash_29() -> None:
    got = expand_vipaddrs(SEED_EXAMPLE)
    expected = [IPv4Address("72.20.112.45"), IPv4Address("72.20.112.46")]
    expected += [IPv4Address(f"72.20.112.{48 + i}") for i in range(8)]
    assert got == expected


def test_mask_below_24_is_the_seed_error_and_rejects_the_whole_file() -> None:
    with pytest.raises(VipAddrsError, match=r"vipaddrs:2: Incorrect mask: 72\.20\.0\.0/16"):
        expand_vipaddrs("72.20.112.45\n72.20.0.0/16\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("72.20.112\n", "not an IPv4 address"),
        ("72.20.112.300\n", "not an IPv4 address"),
        ("example.com\n", "not an IPv4 address"),
        ("72.20.112.0/x\n", "bad mask"),
        ("72.20.112.0/33\n", "more than 32"),
        ("72.20.112.250/29\n", "runs past .255"),
    ],
)
def test_bad_entries_give_clear_errors(text: str, message: str) -> None:
    with pytest.raises(VipAddrsError, match=message):
        expand_vipaddrs(text)


def test_blank_lines_comments_several_words_and_duplicates() -> None:
    text = "\n   \n# comment 1.2.3.4\n192.0.2.1 192.0.2.2\n192.0.2.1  # trailing comment 10.0.0.1\n"
    assert expand_vipaddrs(text) == [IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")]


def test_start_is_taken_as_written_like_the_seed_script() -> None:
    # $xIP0.$((xIP1 + index)): a /30 written from .5 covers .5-.8, not the aligned .4-.7.
    assert expand_vipaddrs("192.0.2.5/30") == [IPv4Address(f"192.0.2.{i}") for i in (5, 6, 7, 8)]


def test_entries_keep_line_numbers() -> None:
    entries = parse_vipaddrs("# x\n\n192.0.2.0/24\n")
    assert [(e.line, e.mask, e.count) for e in entries] == [(3, 24, 256)]


# --- the seed's scripts as the oracle -------------------------------------------------------------

FAKE_IP = """#!/bin/sh
# stands in for iproute2: `ip address show dev lo` lists nothing, `ip address add X dev lo` prints X
if [ "$2" = "add" ]; then echo "$3"; fi
"""


def _seed_expansion(tmp: Path, vipaddrs: str) -> tuple[int, list[str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "vipaddrs").write_text(vipaddrs)
    fake_ip = tmp / "ip"
    fake_ip.write_text(FAKE_IP)
    fake_ip.chmod(fake_ip.stat().st_mode | stat.S_IEXEC)
    utils = IFVIP_UTILS.replace("/etc/sysconfig/vipaddrs", str(tmp / "vipaddrs"))
    (tmp / "ifvip-utils").write_text(utils)
    body = IFUP_LO.replace("/etc/sysconfig/network-scripts/ifup-eth ${1} ${2}", ":")
    body = body.replace(". /etc/sysconfig/network-scripts/ifvip-utils", f". {tmp / 'ifvip-utils'}")
    env = {"PATH": f"{tmp}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", body], capture_output=True, text=True, env=env, timeout=20)
    return done.returncode, [line.removesuffix("/32") for line in done.stdout.split()]


# Masks 29-32 keep the bash oracle fast (a /24 forks `ip` 256 times); /24-/28 are covered above.
entry = st.builds(
    lambda a, b, last, mask: f"{a}.{b}.7.{last - last % (1 << (32 - mask))}/{mask}" if mask < 32
    else f"{a}.{b}.7.{last}",
    st.integers(1, 223), st.integers(0, 255), st.integers(0, 255), st.integers(29, 32),
)
several = st.lists(entry, min_size=2, max_size=3).map(" ".join)
line = st.one_of(entry, st.just("# a comment"), st.just(""), several)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the seed's scripts need bash")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line, min_size=1, max_size=6))
def test_same_addresses_as_the_seed_ifup_lo_script(tmp_path: Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    code, seed_added = _seed_expansion(tmp_path / str(abs(hash(text))), text)
    assert code == 0
    # The script adds duplicates once per occurrence only if absent at start; ours dedupes.
    assert [str(a) for a in expand_vipaddrs(text)] == list(dict.fromkeys(seed_added))


@pytest.mark.skipif(shutil.which("bash") is None, reason="the seed's scripts need bash")
def test_seed_script_and_ours_both_refuse_a_slash_23(tmp_path: Path) -> None:
    code, added = _seed_expansion(tmp_path, "192.0.2.0/23\n")
    assert code == 1 and added == []
    with pytest.raises(VipAddrsError, match="Incorrect mask"):
        expand_vipaddrs("192.0.2.0/23\n")
