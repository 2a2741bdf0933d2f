"""XDP map sizes come from the config at start (daemon/xdp_runner.py); a reload outgrowing them is refused."""

from __future__ import annotations

import pytest

from dsrlb.config import loads
from dsrlb.daemon.xdp_runner import SPARE_SERVICES, capacity_problem, sizes_for
from dsrlb.engine.compile import Environment, compile_state, diff
from dsrlb.engine.dataplane import NextHop
from dsrlb.model import Config
from dsrlb.xdp.dataplane import XdpDataplane, XdpDataplaneError, XdpSizes
from dsrlb.xdp.slots import SlotsExhausted


def config(servers: int, targets_each: int, tabsize: int | None = None) -> Config:
    lines = ["interface 1 { name eth0 }", "register interface 1", "enable interface 1",
             "network 1 {", " addr 192.0.2.0", " mask 255.255.255.0", " real 192.0.2.252",
             " interface 1", "}", "register network 1", "enable network 1"]
    if tabsize is not None:
        lines.append(f"set sessiontabsize {tabsize}")
    tid = 0
    for sid in range(1, servers + 1):
        ids = list(range(tid + 1, tid + targets_each + 1))
        tid += targets_each
        lines += [f"server {sid} {{", f" ipaddr 192.0.2.{sid}", " port 80", " protocol tcp",
                  f" targets {','.join(map(str, ids))}", "}",
                  f"register server {sid}", f"enable server {sid}"]
    for t in range(1, tid + 1):
        lines.append(f"target {t} {{ ipaddr 192.0.2.{100 + t % 100} }}")  # addresses may repeat
    lines += [f"register targets 1-{tid}", f"enable targets 1-{tid}"]
    return loads("\n".join(lines) + "\n", "sizes.conf")


def test_small_configs_get_the_defaults_and_sessiontabsize_sets_the_session_tables() -> None:
    sizes = sizes_for(config(2, 2))
    default = XdpSizes()
    assert (sizes.services, sizes.targets, sizes.service_keys) == (default.services, default.targets,
                                                                    default.service_keys)
    assert sizes.sessions == sizes.nat_returns == default.sessions
    tuned = sizes_for(config(2, 2, tabsize=1 << 20))
    assert tuned.sessions == tuned.nat_returns == 1 << 20


def test_large_configs_get_room_to_grow_and_a_reload_beyond_it_needs_a_restart() -> None:
    big = config(80, 20)  # 80 servers, 1600 targets: over the defaults of 64 and 1024
    sizes = sizes_for(big)
    assert sizes.services == 80 + SPARE_SERVICES and sizes.targets == 3200
    assert capacity_problem(sizes, big) is None
    assert capacity_problem(sizes, config(80 + SPARE_SERVICES, 1)) is None
    problem = capacity_problem(sizes, config(80 + SPARE_SERVICES + 1, 1))
    assert problem is not None and "servers 97 > 96" in problem and "restart the daemon" in problem
    changed = capacity_problem(sizes, config(80, 20, tabsize=1 << 17))
    assert changed is not None and "sessiontabsize 131072" in changed


@pytest.mark.root
def test_the_sized_maps_take_a_config_the_default_maps_cannot() -> None:
    """The real BPF maps: 80 servers and 1600 targets overflow the defaults, not sizes_for()."""
    big = config(80, 20)
    hop = NextHop(1, bytes.fromhex("020000000001"), bytes.fromhex("020000000002"))
    environment = Environment(next_hops={t.id: hop for t in big.targets})
    changes = diff(None, compile_state(big, environment))
    default = XdpDataplane(XdpSizes())
    try:
        with pytest.raises((XdpDataplaneError, SlotsExhausted)):
            default.apply(changes)
    finally:
        default.close()
    sized = XdpDataplane(sizes_for(big))
    try:
        sized.apply(changes)
        assert sized.stats()["rx"] == 0  # loaded and programmed; nothing has run yet
    finally:
        sized.close()
