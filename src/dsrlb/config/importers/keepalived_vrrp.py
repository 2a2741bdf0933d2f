"""keepalived `vrrp_instance` -> dsrlb VRRP, interfaces and the balancer's network.

- virtual_router_id, priority, advert_int, unicast_peer and authentication PASS map one to one;
- `interface` and the `dev` of virtual addresses become interfaces;
- track_interface: an interface with `weight -N` lowers the priority by N when down (trackval N); without
  weight keepalived goes to FAULT, rendered as trackval 255 (the node can no longer win); a positive
  weight +N (priority raised while up) is rendered exactly as base priority + N and trackval N;
- unicast_src_ip is the node's own address (`real`); a virtual address that is not a virtual server's
  becomes the network's shared `virt` address (the targets' gateway under NAT);
- nopreempt -> `set vrrppreempt 0` (BalanceNG's spelling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface, ip_interface

from dsrlb.config.importers.common import fail
from dsrlb.config.importers.keepalived_parse import (
    Statement,
    address,
    expect_args,
    expect_block,
    integer,
    seconds,
    signed_integer,
    unknown,
)
from dsrlb.config.keywords import PREEMPT_DELAY_MAX
from dsrlb.model import IPAddress, Vrrp

_IGNORED: dict[str, str] = {
    name: "has no equivalent (ignored)"
    for name in (
        "track_script",
        "track_process",
        "track_file",
        "track_bfd",
        "notify_master",
        "notify_backup",
        "notify_fault",
        "notify_stop",
        "notify_deleted",
        "notify",
        "smtp_alert",
        "garp_master_delay",
        "garp_master_repeat",
        "garp_master_refresh",
        "garp_master_refresh_repeat",
        "garp_lower_prio_delay",
        "garp_lower_prio_repeat",
        "garp_extra_if",
        "lower_prio_no_advert",
        "higher_prio_send_advert",
        "mcast_src_ip",
        "dont_track_primary",
        "version",
        "use_vmac",
        "vmac_xmit_base",
        "native_ipv6",
        "virtual_routes",
        "virtual_rules",
        "accept",
        "no_accept",
        "strict_mode",
        "debug",
        "skip_check_adv_addr",
        "unicast_ttl",
        "check_unicast_src",
        "lvs_sync_daemon_interface",
        "kernel_rx_buf_size",
        "linkbeat_use_polling",
        "old_unicast_checksum",
        "promote_secondaries",
        "unicast_fault_no_peer",
    )
}
_MAPPED = (
    "state",
    "interface",
    "virtual_router_id",
    "priority",
    "advert_int",
    "authentication",
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "track_interface",
    "unicast_peer",
    "unicast_src_ip",
    "nopreempt",
    "preempt",
    "preempt_delay",
)


@dataclass
class VirtualAddress:
    interface: IPv4Interface | IPv6Interface
    device: str | None
    stmt: Statement


@dataclass
class VrrpInstance:
    stmt: Statement
    vrid: int | None = None
    priority: int = 100
    advert_interval: float = 1.0
    interface: str | None = None
    addresses: list[VirtualAddress] = field(default_factory=list)
    unicast_peers: tuple[IPAddress, ...] = ()
    own_address: IPAddress | None = None
    auth_pass: str | None = None
    nopreempt: bool = False
    preempt_delay: float = 0.0
    trackvals: dict[str, int] = field(default_factory=dict)
    tracked_devices: list[str] = field(default_factory=list)
    priority_bonus: int = 0

    def interface_names(self) -> list[str]:
        names = [self.interface] if self.interface else []
        names += [a.device for a in self.addresses if a.device]
        names += self.tracked_devices
        return list(dict.fromkeys(n for n in names if n))

    def addresses_on(self, device: str) -> list[VirtualAddress]:
        """The virtual addresses on `device` (an address without `dev` is on the instance's interface)."""
        return [a for a in self.addresses if (a.device or self.interface) == device]

    def to_model(self, network: int | None) -> Vrrp:
        assert self.vrid is not None
        return Vrrp(
            vrid=self.vrid,
            priority=min(254, self.priority + self.priority_bonus),
            network=network,
            tracking=bool(self.trackvals),
            advert_interval=self.advert_interval,
            unicast_peers=self.unicast_peers,
            auth_pass=self.auth_pass,
            preempt_delay=self.preempt_delay,
        )


def _addresses(instance: VrrpInstance, stmt: Statement) -> None:
    for entry in expect_block(stmt):
        try:
            iface = ip_interface(entry.name)
        except ValueError:
            raise fail(
                entry.keyword.position, "bad virtual address", "ADDRESS[/PREFIX] [dev DEVICE] ..."
            ) from None
        device: str | None = None
        args = entry.args
        for i, tok in enumerate(args):
            if tok.text == "dev":
                if i + 1 >= len(args):
                    raise fail(tok.end_of_line, "missing device name", "dev DEVICE")
                device = args[i + 1].text
        instance.addresses.append(VirtualAddress(iface, device, entry))


def _track_interface(instance: VrrpInstance, stmt: Statement, warn: Callable[..., None]) -> None:
    for entry in expect_block(stmt):
        args = expect_args(entry, 0, 2, "DEVICE [weight N]")
        name = entry.name
        instance.tracked_devices.append(name)
        if not args:
            instance.trackvals[name] = 255  # keepalived: FAULT while the link is down
            continue
        if args[0].text != "weight" or len(args) != 2:
            raise fail(args[0].position, "bad track_interface entry", "DEVICE [weight -254..254]")
        weight = signed_integer(args[1], -254, 254)
        if weight < 0:
            instance.trackvals[name] = -weight
        elif weight:
            instance.priority_bonus += weight
            instance.trackvals[name] = weight
        else:
            warn(
                entry,
                "weight 0: the link state does not change the priority (not tracked)",
                "track_interface",
            )
            del instance.trackvals[name]


def read_vrrp_instance(stmt: Statement, warn: Callable[..., None]) -> VrrpInstance:
    expect_args(stmt, 1, 1, "vrrp_instance NAME")
    instance = VrrpInstance(stmt)
    for sub in expect_block(stmt):
        name = sub.name
        if name == "state":
            tok = expect_args(sub, 1, 1, "state MASTER|BACKUP")[0]
            if tok.text.upper() not in ("MASTER", "BACKUP"):
                raise fail(tok.position, "unknown state", "MASTER or BACKUP")
        elif name == "interface":
            instance.interface = expect_args(sub, 1, 1, "interface DEVICE")[0].text
        elif name == "virtual_router_id":
            instance.vrid = integer(expect_args(sub, 1, 1, "virtual_router_id 1..255")[0], 1, 255)
        elif name == "priority":
            instance.priority = integer(expect_args(sub, 1, 1, "priority 1..255")[0], 1, 255)
        elif name == "advert_int":
            instance.advert_interval = seconds(expect_args(sub, 1, 1, "advert_int SECONDS")[0], 0.01)
        elif name == "authentication":
            _authentication(instance, sub, warn)
        elif name in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
            _addresses(instance, sub)
        elif name == "track_interface":
            _track_interface(instance, sub, warn)
        elif name == "unicast_peer":
            instance.unicast_peers = tuple(address(e.keyword) for e in expect_block(sub))
        elif name == "unicast_src_ip":
            instance.own_address = address(expect_args(sub, 1, 1, "unicast_src_ip ADDRESS")[0])
        elif name == "nopreempt":
            expect_args(sub, 0, 0, "nopreempt")
            instance.nopreempt = True
        elif name == "preempt":
            expect_args(sub, 0, 0, "preempt")
            instance.nopreempt = False
        elif name == "preempt_delay":  # dsrlb's `preemptdelay` (the vrrp block's *ext* key)
            token = expect_args(sub, 1, 1, "preempt_delay SECONDS")[0]
            instance.preempt_delay = seconds(token, 0.0)
            if instance.preempt_delay > PREEMPT_DELAY_MAX:
                raise fail(token.position, "number out of range", f"0..{PREEMPT_DELAY_MAX} seconds")
        elif name in _IGNORED:
            warn(sub, _IGNORED[name])
        else:
            raise unknown(sub, "vrrp_instance", [*_MAPPED, *_IGNORED])
    if instance.vrid is None:
        raise fail(
            stmt.keyword.position,
            f"vrrp_instance {stmt.args[0].text} has no virtual_router_id",
            "virtual_router_id 1..255",
        )
    if instance.priority + instance.priority_bonus > 254:
        warn(stmt, "priority plus positive track_interface weights exceeds 254; capped at 254", "priority")
    return instance


def _authentication(instance: VrrpInstance, stmt: Statement, warn: Callable[..., None]) -> None:
    auth_type = "PASS"
    for sub in expect_block(stmt):
        if sub.name == "auth_type":
            tok = expect_args(sub, 1, 1, "auth_type PASS|AH")[0]
            if tok.text.upper() not in ("PASS", "AH"):
                raise fail(tok.position, "unknown authentication type", "PASS or AH")
            auth_type = tok.text.upper()
            if auth_type == "AH":
                warn(sub, "IPsec AH authentication has no equivalent; VRRP runs unauthenticated")
        elif sub.name == "auth_pass":
            secret = expect_args(sub, 1, 1, "auth_pass SECRET")[0].text
            if len(secret) > 8:
                warn(sub, "keepalived uses only the first 8 characters of auth_pass; so does the conversion")
            instance.auth_pass = secret[:8]
        else:
            raise unknown(sub, "authentication", ["auth_type", "auth_pass"])
    if auth_type == "AH":
        instance.auth_pass = None
