"""Shared set-up of the XDP tests: one namespace and one verified BPF object for the whole run.

Loading the program (the verifier) costs about half a second, so tests share one loaded
XdpDataplane and `reset()` it between tests; the frames run from inside a namespace of our own
(tests/xdp/netns.py) whose interface indexes the fixtures name.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dsrlb.xdp.dataplane import XdpDataplane, XdpSizes
from netns import ScratchNamespace

# Small maps keep the load fast; the tables array is services x 65537 entries.
TEST_SIZES = XdpSizes(services=8, service_keys=4096, targets=64, sessions=4096, nat_returns=4096,
                      routes=64, local_addresses=16, vips=64, ring_bytes=1 << 16)


@pytest.fixture(scope="session")
def test_namespace() -> Iterator[ScratchNamespace]:
    namespace = ScratchNamespace()
    try:
        yield namespace
    finally:
        namespace.remove()


@pytest.fixture(scope="session")
def loaded_dataplane() -> Iterator[XdpDataplane]:
    dataplane = XdpDataplane(TEST_SIZES, test_inputs=True)
    try:
        yield dataplane
    finally:
        dataplane.close()


@pytest.fixture
def xdp(loaded_dataplane: XdpDataplane, test_namespace: ScratchNamespace) -> Iterator[XdpDataplane]:
    """The shared dataplane, reset, with this thread inside the test namespace."""
    loaded_dataplane.reset()
    with test_namespace.entered():
        yield loaded_dataplane
