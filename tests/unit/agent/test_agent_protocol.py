"""The agent protocol core: encoding, authentication, replay safety and fuzzed input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsrlb.agent.protocol import (
    BODY_LEN,
    MAC_LEN,
    AgentProtocolError,
    QueryResponder,
    ReplyMatcher,
    decode_query,
    decode_reply,
    encode_query,
    encode_reply,
)

N1 = bytes(range(16))
N2 = bytes(range(16, 32))
SECRET = b"correct horse battery staple"


def test_query_and_reply_round_trip_without_and_with_secret() -> None:
    for secret in (None, SECRET):
        q = encode_query(N1, secret)
        assert len(q) == BODY_LEN + (MAC_LEN if secret else 0)
        assert decode_query(q, secret).nonce == N1
        r = encode_reply(N1, 42.5, secret)
        assert len(r) == len(q)  # never larger than the query: no amplification
        assert decode_reply(r, secret).load == 42.5
        assert decode_reply(encode_reply(N1, None, secret), secret).load is None


def test_wire_layout_is_stable() -> None:
    q = encode_query(N1)
    assert q[:8] == b"DLBA\x01\x01\x00\x00" and q[8:24] == N1 and q[24:] == bytes(8)
    r = encode_reply(N1, 100.0, SECRET)
    assert r[:8] == b"DLBA\x01\x02\x01\x00" and r[24:32] == bytes.fromhex("4059000000000000")


def test_secret_required_and_checked() -> None:
    with pytest.raises(AgentProtocolError) as err:
        decode_reply(encode_reply(N1, 10.0), SECRET)  # unauthenticated reply
    assert err.value.reason == "unauthenticated"
    forged = bytearray(encode_reply(N1, 10.0, SECRET))
    forged[24:32] = bytes.fromhex("0000000000000000")  # change the load, keep the MAC
    with pytest.raises(AgentProtocolError) as err:
        decode_reply(bytes(forged), SECRET)
    assert err.value.reason == "unauthenticated"
    with pytest.raises(AgentProtocolError):
        decode_reply(encode_reply(N1, 10.0, b"other secret"), SECRET)
    # a query is never accepted as a reply, even with a valid MAC
    with pytest.raises(AgentProtocolError) as err:
        decode_reply(encode_query(N1, SECRET), SECRET)
    assert err.value.reason == "bad_type"


def test_responder_answers_once_per_nonce_and_counts_drops() -> None:
    loads = iter([12.0, 55.0])
    agent = QueryResponder(lambda: next(loads), SECRET, replay_window=60.0)
    reply = agent.handle(encode_query(N1, SECRET), now=0.0)
    assert reply is not None and decode_reply(reply, SECRET).load == 12.0
    assert agent.handle(encode_query(N1, SECRET), now=1.0) is None  # replayed query
    assert agent.handle(encode_query(N2), now=1.0) is None  # no MAC while a secret is set
    assert agent.handle(b"garbage", now=1.0) is None
    assert agent.drops.counts == {"replay": 1, "unauthenticated": 1, "short": 1}
    reply = agent.handle(encode_query(N2, SECRET), now=2.0)
    assert reply is not None and decode_reply(reply, SECRET).load == 55.0
    # after the replay window the nonce may be used again (the balancer never reuses one)
    assert agent.handle(encode_query(N1, SECRET), now=100.0) is not None


def test_responder_reports_unavailable_load() -> None:
    def broken() -> float:
        raise OSError("no /proc")

    agent = QueryResponder(broken)
    reply = agent.handle(encode_query(N1), now=0.0)
    assert reply is not None and decode_reply(reply).load is None
    agent = QueryResponder(lambda: math.nan)
    reply = agent.handle(encode_query(N2), now=0.0)
    assert reply is not None and decode_reply(reply).load is None


def test_matcher_accepts_only_outstanding_nonces_once() -> None:
    m = ReplyMatcher(SECRET)
    m.query(N1)
    reply = encode_reply(N1, 7.0, SECRET)
    assert m.accept(encode_reply(N2, 7.0, SECRET)) is None
    got = m.accept(reply)
    assert got is not None and got.load == 7.0
    assert m.accept(reply) is None  # replayed reply
    m.query(N2)
    m.forget(N2)
    assert m.accept(encode_reply(N2, 1.0, SECRET)) is None  # too late
    assert m.drops.counts == {"unexpected_nonce": 3}


def test_bad_values_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError):
        encode_reply(N1, -1.0)
    with pytest.raises(ValueError):
        encode_query(b"short")
    bad = bytearray(encode_reply(N1, 1.0))
    bad[24:32] = bytes.fromhex("7ff8000000000000")  # NaN on the wire
    with pytest.raises(AgentProtocolError) as err:
        decode_reply(bytes(bad))
    assert err.value.reason == "bad_load"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_fuzzed_datagrams_are_counted_drops_never_exceptions(data: bytes) -> None:
    agent = QueryResponder(lambda: 1.0, SECRET)
    matcher = ReplyMatcher(SECRET)
    matcher.query(N1)
    assert agent.handle(data, now=0.0) is None  # random bytes never carry a valid MAC
    assert matcher.accept(data) is None
    assert agent.drops.total() == 1 and matcher.drops.total() == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=BODY_LEN, max_size=BODY_LEN), st.integers(0, BODY_LEN - 1), st.integers(1, 255))
def test_any_bit_flip_breaks_authentication(nonce_and_more: bytes, index: int, flip: int) -> None:
    good = encode_reply(nonce_and_more[:16], 33.0, SECRET)
    bad = bytearray(good)
    bad[index] ^= flip
    with pytest.raises(AgentProtocolError):
        decode_reply(bytes(bad), SECRET)
