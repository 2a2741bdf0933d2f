"""Session sync, the pure parts: the datagram codec (sync/codec.py) and the peer core (sync/peer.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsrlb.engine.dataplane import SessionEntry
from dsrlb.model import Config
from dsrlb.sync.codec import (
    HEADER,
    MAX_ENTRIES,
    SESSIONS,
    Datagram,
    SyncDecodeError,
    SyncedSession,
    decode,
    encode,
)
from dsrlb.sync.driver import DEFAULT_PORT, SyncConfigError, plan_sync
from dsrlb.sync.peer import HELLO_SECONDS, PEER_DEAD_SECONDS, SyncPeer

MS = 1_000_000

addresses = st.one_of(st.builds(IPv4Address, st.integers(0, 2**32 - 1)),
                      st.builds(IPv6Address, st.integers(0, 2**128 - 1)))
sessions = st.builds(SyncedSession, st.integers(0, 2**32 - 1), addresses, st.integers(0, 65535),
                     st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.lists(sessions, max_size=MAX_ENTRIES))
def test_a_datagram_round_trips(boot: int, sequence: int, entries: list[SyncedSession]) -> None:
    datagram = Datagram(SESSIONS, boot, sequence, tuple(entries))
    data = encode(datagram)
    assert len(data) == HEADER.size + 32 * len(entries) <= 1296
    assert decode(data) == datagram


@given(st.binary(max_size=2000))
def test_any_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except SyncDecodeError as error:
        assert error.reason in ("short", "magic", "version", "type", "count", "family", "auth")


@given(st.lists(sessions, min_size=1, max_size=3), st.integers(0, 2000), st.integers(0, 255))
def test_a_damaged_datagram_is_refused_or_still_well_formed(entries: list[SyncedSession], at: int,
                                                            value: int) -> None:
    data = bytearray(encode(Datagram(SESSIONS, 7, 1, tuple(entries))))
    data[at % len(data)] = value
    try:
        decoded = decode(bytes(data))
    except SyncDecodeError:
        return
    assert len(decoded.sessions) == len(entries)


def entry(client: str, target: int, last_seen_ns: int, service: int = 1) -> SessionEntry:
    return SessionEntry(service, IPv4Address(client), 0, target, last_seen_ns)


def test_sessions_travel_with_their_age_not_their_timestamp() -> None:
    """The two balancers' monotonic clocks share no origin: the receiver dates each session on its own."""
    a, b = SyncPeer(boot=1), SyncPeer(boot=2)
    out = a.sessions([entry("198.51.100.7", 2, 100_000 * MS)], now_ns=100_250 * MS)  # idle 250 ms at a
    assert len(out) == 1
    got = b.receive(out[0], now=5.0, now_ns=7_000 * MS)  # b's clock reads 7 s
    assert got.sessions == (entry("198.51.100.7", 2, 6_750 * MS),)  # idle 250 ms at b too
    assert got.resync  # the first word from a peer: it gets our table


def test_many_sessions_are_split_into_datagrams_below_the_mtu() -> None:
    peer = SyncPeer(boot=1)
    out = peer.sessions([entry(f"198.51.100.{i % 250}", 1, 0) for i in range(101)], now_ns=0)
    assert [len(decode(d).sessions) for d in out] == [40, 40, 21]
    assert peer.counters["sessions_sent"] == 101


def test_hellos_liveness_restarts_and_own_datagrams() -> None:
    a, b = SyncPeer(boot=1), SyncPeer(boot=2)
    assert a.timer(0.0) and not a.timer(0.5) and a.timer(HELLO_SECONDS)  # one hello a second
    hello = a.timer(2 * HELLO_SECONDS)[0]
    assert b.receive(hello, 2.0, 0).resync  # a new peer
    assert not b.receive(hello, 2.5, 0).resync  # the same boot: nothing to resend
    assert b.peer_up(2.5 + PEER_DEAD_SECONDS) and not b.peer_up(2.6 + PEER_DEAD_SECONDS)
    restarted = SyncPeer(boot=3).timer(0.0)[0]
    assert b.receive(restarted, 3.0, 0).resync  # a restarted peer lost its table: resend it
    assert not a.receive(hello, 3.0, 0).sessions and a.counters["drop_own"] == 1
    assert not b.receive(b"junk", 3.0, 0).sessions and b.counters["drop_short"] == 1


def test_plan_follows_syncpeer_and_the_set_keys() -> None:
    from dsrlb.config import loads
    from dsrlb.examples import example

    config = loads(example("seed000-node1").text())
    plan = plan_sync(config)
    assert plan is not None
    assert (str(plan.local), str(plan.peer), plan.port, plan.autoresync) == (
        "172.16.1.252", "172.16.1.251", DEFAULT_PORT, True)
    off = Config(settings=(("sessionsync", "0"),), networks=config.networks)
    assert plan_sync(off) is None
    assert plan_sync(loads(example("seed001-dsr").text())) is None  # no syncpeer


def test_with_a_secret_only_signed_datagrams_count() -> None:
    """`set syncsecretfile`: both sides sign with HMAC-SHA256; unsigned, forged or differently keyed
    datagrams are dropped as `auth` and install nothing."""
    a, b = SyncPeer(boot=1, secret=b"s3cret"), SyncPeer(boot=2, secret=b"s3cret")
    signed = a.sessions([entry("198.51.100.7", 2, 0)], now_ns=0)[0]
    assert len(signed) == HEADER.size + 32 + 16
    assert len(b.receive(signed, 1.0, 0).sessions) == 1
    forged = bytearray(signed)
    forged[HEADER.size] ^= 1  # another service id, MAC unchanged
    unsigned = SyncPeer(boot=3).sessions([entry("198.51.100.7", 1, 0)], now_ns=0)[0]
    other_key = SyncPeer(boot=4, secret=b"other").sessions([entry("198.51.100.7", 1, 0)], now_ns=0)[0]
    for bad in (bytes(forged), unsigned, other_key, b"x"):
        assert b.receive(bad, 1.0, 0).sessions == ()
    assert b.counters["drop_auth"] == 4


def test_the_secret_file_fails_closed(tmp_path: Path) -> None:
    from dsrlb.config import loads
    from dsrlb.examples import example

    base = example("seed000-node1").text()
    secret = tmp_path / "sync.secret"
    secret.write_text("s3cret\nignored\n")
    plan = plan_sync(loads(base + f'set syncsecretfile "{secret}"\n'))
    assert plan is not None and plan.secret == b"s3cret"
    for path, why in ((tmp_path / "missing", "No such file"), (tmp_path / "empty", "empty")):
        if why == "empty":
            path.write_text("\n")
        with pytest.raises(SyncConfigError, match=why):
            plan_sync(loads(base + f'set syncsecretfile "{path}"\n'))
