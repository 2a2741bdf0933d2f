"""Remembering what we added, so that stopping removes exactly that and nothing an operator made."""

from __future__ import annotations

from dsrlb.netlink.errors import LinkNotFoundError
from dsrlb.netlink.handle import Netlink
from dsrlb.netlink.types import IPInterface


class AddressKeeper:
    """Adds addresses through a `Netlink` handle and records the ones that were not there before.

    release() removes the recorded ones (newest first) and forgets them. An address that was
    already present when add() was called is not recorded, so release() never removes it.
    """

    def __init__(self, netlink: Netlink) -> None:
        self.netlink = netlink
        self._added: list[tuple[str, IPInterface]] = []

    @property
    def added(self) -> tuple[tuple[str, IPInterface], ...]:
        return tuple(self._added)

    def add(self, ifname: str, interface: IPInterface, nodad: bool = False) -> bool:
        if self.netlink.add_address(ifname, interface, nodad=nodad):
            self._added.append((ifname, interface))
            return True
        return False

    def remove(self, ifname: str, interface: IPInterface) -> bool:
        """Remove one address this keeper added; False (and nothing done) for any other."""
        if (ifname, interface) not in self._added:
            return False
        self._added.remove((ifname, interface))
        try:
            return self.netlink.remove_address(ifname, interface)
        except LinkNotFoundError:
            return False

    def release(self) -> list[tuple[str, IPInterface]]:
        removed: list[tuple[str, IPInterface]] = []
        for ifname, interface in reversed(self._added):
            try:
                if self.netlink.remove_address(ifname, interface):
                    removed.append((ifname, interface))
            except LinkNotFoundError:
                continue  # the link is gone, and its addresses with it
        self._added.clear()
        return removed
