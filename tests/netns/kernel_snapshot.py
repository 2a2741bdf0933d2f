"""What the daemon may change in a balancer's namespace, and must put back on stop (docs/operations.md)."""

from __future__ import annotations

import subprocess

SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")  # what the daemon may set


def in_netns(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          check=True).stdout


def kernel_state(netns: str) -> dict[str, str]:
    """Addresses, IPv4 and IPv6 routes (every table) and the daemon's sysctls in `netns`."""
    state = {"addresses": in_netns(netns, "ip", "-br", "addr"),
             "routes4": in_netns(netns, "ip", "-4", "route", "show", "table", "all"),
             "routes6": in_netns(netns, "ip", "-6", "route", "show", "table", "all")}
    state.update({key: in_netns(netns, "sysctl", "-n", key).strip() for key in SYSCTLS})
    return state


def assert_as_before(netns: str, before: dict[str, str]) -> None:
    """Everything of `before` is back, and no XDP program is left on any link."""
    after = kernel_state(netns)
    for key, value in before.items():
        assert after[key] == value, f"{key} differs after stop:\nbefore:\n{value}\nafter:\n{after[key]}"
    assert "prog/xdp" not in in_netns(netns, "ip", "-d", "link", "show")
