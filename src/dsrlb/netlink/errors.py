"""Errors of the netlink facade: every kernel refusal becomes one of these, with a sentence that says what."""

from __future__ import annotations


class NetlinkFacadeError(Exception):
    """A netlink request failed; the message names the object and the kernel's reason."""


class NamespaceNotFoundError(NetlinkFacadeError):
    """The named network namespace does not exist (no /run/netns/NAME)."""


class LinkNotFoundError(NetlinkFacadeError):
    """No interface with that name or index in the namespace."""


class NoRouteError(NetlinkFacadeError):
    """The kernel has no route to the address."""
