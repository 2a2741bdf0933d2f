"""The VRRP state machine of one virtual router (RFC 5798 §6, RFC 3768 §6): pure, no sockets, no clock.

Inputs are `start`, `receive`, `timer`, `set_priority` and `shutdown`, each with the driver's
monotonic `now` in seconds; each returns an `Output`: the datagrams to send (IP payloads, addressed to
the VRRP group: see `codec.readdress` for unicast peers) and events. The driver calls `timer(now)` at
or after `next_deadline`, sends with TTL/hop limit 255, and on `StateChanged` to MASTER adds the
virtual addresses and announces them (gratuitous ARP / unsolicited NA); on leaving MASTER it removes
them. The same inputs always give the same outputs.

Timers (RFC 5798 §6.1; RFC 3768 §6.1 for v2), all in seconds here:

- v3: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256,
  Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time, where Master_Adver_Interval is
  learnt from the master's advertisements (our own Advertisement_Interval until one arrives).
- v2: Skew_Time = (256 - Priority) / 256, Master_Down_Interval = 3 * Advertisement_Interval +
  Skew_Time; the interval is not learnt: an advertisement with another one is dropped (§7.1).

Decisions beyond the RFCs (docs/vrrp.md):

- Two routers of priority 255 (two address owners: a misconfiguration) resolve by the address
  tie-break, as in keepalived, where RFC 5798 §7.1 has an owner drop every advertisement and both
  would stay master for good.
- `preempt_delay` follows keepalived: a backup may preempt a lower-priority master only once
  `preempt_delay` seconds have passed since it started, or since it first saw a lower-priority
  master after a higher one; until then such advertisements hold it back as with `nopreempt`.
- Our own advertisements looped back (source = our primary address) are dropped as "own".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dsrlb.vrrp.codec import (
    AUTH_NONE,
    AUTH_SIMPLE,
    DECODE_REASONS,
    MAX_INTERVAL,
    VRRP_TTL,
    Advertisement,
    IPAddress,
    VrrpDecodeError,
    decode,
    encode,
    group_address,
    simple_auth_data,
)


class State(enum.StrEnum):
    INITIALIZE = "initialize"
    BACKUP = "backup"
    MASTER = "master"


# Every drop reason `receive` can count, so a driver can export all of them from the start.
DROP_REASONS: tuple[str, ...] = tuple(dict.fromkeys(
    ("initialize", "family", "ttl", *DECODE_REASONS, "own", "version", "vrid", "auth", "interval")))


@dataclass(frozen=True, kw_only=True)
class RouterConfig:
    """One virtual router. Times in seconds; v3 intervals are carried in centiseconds (0.01-40.95),
    v2 intervals in whole seconds (1-255). `unicast_peers` is carried for the driver only."""

    vrid: int
    priority: int = 100
    version: int = 3
    family: int = 4
    advert_interval: float = 1.0
    preempt: bool = True
    preempt_delay: float = 0.0
    primary_address: IPAddress
    addresses: tuple[IPAddress, ...]
    auth_pass: str | None = None
    unicast_peers: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        if self.version not in (2, 3):
            raise ValueError(f"VRRP version must be 2 or 3, not {self.version!r}")
        if self.family not in (4, 6):
            raise ValueError(f"address family must be 4 or 6, not {self.family!r}")
        if self.version == 2 and self.family != 4:
            raise ValueError("VRRPv2 runs over IPv4 only (RFC 3768); use version 3 for IPv6")
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"VRID must be 1-255, not {self.vrid}")
        if not 1 <= self.priority <= 255:
            raise ValueError(f"priority must be 1-255, not {self.priority}")
        for address in (self.primary_address, *self.addresses, *self.unicast_peers):
            if address.version != self.family:
                raise ValueError(f"{address} is not an IPv{self.family} address")
        if not 1 <= len(self.addresses) <= 255:  # RFC 5798 §5.2.5: at least one
            raise ValueError("a virtual router has 1-255 virtual addresses")
        units = self.interval_units  # validates the interval
        if not 1 <= units <= MAX_INTERVAL[self.version]:
            limit = "0.01-40.95 s" if self.version == 3 else "1-255 s"
            raise ValueError(f"v{self.version} advertisement interval must be {limit}, "
                             f"not {self.advert_interval}")
        if self.preempt_delay < 0:
            raise ValueError("preempt_delay must not be negative")
        if self.auth_pass is not None:
            if self.version != 2:
                raise ValueError("authentication exists in VRRPv2 only (RFC 5798 §9 removed it)")
            simple_auth_data(self.auth_pass)  # validates the length

    @property
    def interval_units(self) -> int:
        """The interval as sent: centiseconds (v3, RFC 5798 §5.2.7) or seconds (v2, RFC 3768 §5.3.7)."""
        scale = 100 if self.version == 3 else 1
        units = round(self.advert_interval * scale)
        if abs(self.advert_interval * scale - units) > 1e-6:
            unit = "0.01 s" if self.version == 3 else "whole seconds"
            raise ValueError(f"v{self.version} advertisement interval is in {unit}, "
                             f"not {self.advert_interval}")
        return units


def skew_time(version: int, priority: int, interval: float) -> float:
    """Skew_Time in seconds; `interval` is Master_Adver_Interval (v3) or Advertisement_Interval (v2)."""
    if version == 3:
        return (256 - priority) * interval / 256  # RFC 5798 §6.1
    return (256 - priority) / 256  # RFC 3768 §6.1: a fraction of a second whatever the interval


def master_down_interval(version: int, priority: int, interval: float) -> float:
    """Master_Down_Interval in seconds: 3 * interval + Skew_Time (RFC 5798 §6.1, RFC 3768 §6.1)."""
    return 3 * interval + skew_time(version, priority, interval)


@dataclass(frozen=True)
class StateChanged:
    old: State
    new: State
    reason: str
    at: float


@dataclass(frozen=True)
class DropCounted:
    """A received datagram was dropped; `reason` is one of `DROP_REASONS`."""

    reason: str


Event = StateChanged | DropCounted


@dataclass(frozen=True)
class Output:
    packets: tuple[bytes, ...] = ()
    events: tuple[Event, ...] = ()


_NOTHING = Output()


class VrrpRouter:
    """The state of one virtual router. All times are the driver's monotonic seconds."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self._priority = config.priority
        self._state = State.INITIALIZE
        self._deadline: float | None = None  # Master_Down_Timer in BACKUP, Adver_Timer in MASTER
        self._master_address: IPAddress | None = None
        self._master_adver_interval = config.advert_interval  # learnt in v3 (RFC 5798 §6.4.2)
        self._preempt_at: float | None = None  # keepalived's preempt_time; None: no delay running
        self._down_reason = "master down"  # the reason the Master_Down_Timer will give when it fires
        self._group = group_address(config.family)
        # what a v2 advertisement's (auth type, auth data) must be; type 0's data is ignored (zeros here)
        self._auth = ((AUTH_SIMPLE, simple_auth_data(config.auth_pass)) if config.auth_pass
                      else (AUTH_NONE, bytes(8)))
        self._counters: dict[str, int] = dict.fromkeys(("rx", "tx", "became_master", "became_backup"), 0)
        self._counters.update((f"drop_{reason}", 0) for reason in DROP_REASONS)

    # --- what the driver reads -----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def next_deadline(self) -> float | None:
        """When `timer` must be called; None only in INITIALIZE."""
        return self._deadline

    @property
    def master_address(self) -> IPAddress | None:
        """The current master's primary address: ours in MASTER, the last advertiser in BACKUP."""
        return self._master_address

    @property
    def priority(self) -> int:
        """The effective priority (the configured one as changed by `set_priority`)."""
        return self._priority

    @property
    def master_adver_interval(self) -> float:
        return self._master_adver_interval

    @property
    def skew_time(self) -> float:
        return skew_time(self.config.version, self._priority, self._master_adver_interval)

    @property
    def master_down_interval(self) -> float:
        return master_down_interval(self.config.version, self._priority, self._master_adver_interval)

    @property
    def counters(self) -> dict[str, int]:
        """rx, tx, became_master, became_backup and drop_<reason> for every reason: a copy."""
        return dict(self._counters)

    # --- inputs --------------------------------------------------------------------------------

    def start(self, now: float) -> Output:
        """Startup (RFC 5798 §6.4.1). Does nothing unless in INITIALIZE."""
        if self._state is not State.INITIALIZE:
            return _NOTHING
        if self._priority == 255:  # the address owner takes over at once
            return self._become_master(now, "address owner (priority 255)")
        self._master_adver_interval = self.config.advert_interval
        if self.config.preempt_delay > 0:
            self._preempt_at = now + self.config.preempt_delay
        return self._become_backup(now, "start", master=None)

    def timer(self, now: float) -> Output:
        """The timer of the current state, if it is due at `now`; otherwise nothing."""
        if self._deadline is None or now < self._deadline:
            return _NOTHING
        if self._state is State.BACKUP:  # Master_Down_Timer fired (RFC 5798 §6.4.2)
            return self._become_master(now, self._down_reason)
        # Adver_Timer fired (RFC 5798 §6.4.3): send, and re-arm from now, not from the old deadline:
        # a late driver sends one advertisement, not a burst of the missed ones.
        self._deadline = now + self.config.advert_interval
        return Output(packets=(self._advertisement(self._priority),))

    def set_priority(self, priority: int, now: float) -> Output:
        """Change the effective priority (tracking). It shows in the next advertisement we send and in
        Skew_Time from the next time the Master_Down_Timer is set; a master that falls below a
        preempting backup is taken over when that backup's timer runs out."""
        if not 1 <= priority <= 255:
            raise ValueError(f"priority must be 1-255, not {priority}")
        self._priority = priority
        return _NOTHING

    def shutdown(self, now: float) -> Output:
        """Shutdown (RFC 5798 §6.4.2 / §6.4.3): a master resigns with one priority-0 advertisement."""
        if self._state is State.INITIALIZE:
            return _NOTHING
        packets = (self._advertisement(0),) if self._state is State.MASTER else ()
        old = self._state
        self._state, self._deadline, self._master_address = State.INITIALIZE, None, None
        self._preempt_at = None
        return Output(packets=packets, events=(StateChanged(old, State.INITIALIZE, "shutdown", now),))

    def receive(
        self, datagram: bytes, src: IPAddress, ttl: int, now: float, *, dst: IPAddress | None = None,
    ) -> Output:
        """One received VRRP datagram (the IP payload) from `src`, with its TTL / hop limit.

        `dst` is the datagram's destination, needed for the v3 checksum: the group (default), or our
        own address when a peer sends unicast. Invalid datagrams are counted drops, never exceptions.
        """
        self._counters["rx"] += 1
        if self._state is State.INITIALIZE:
            return self._drop("initialize")
        if src.version != self.config.family or (dst is not None and dst.version != self.config.family):
            return self._drop("family")
        if ttl != VRRP_TTL:  # RFC 5798 §7.1, RFC 3768 §7.1: proves the sender is on the link
            return self._drop("ttl")
        if dst is None:
            dst = self._group
        try:
            advert = decode(datagram, src=src, dst=dst, family=self.config.family)
        except VrrpDecodeError as error:
            return self._drop(error.reason)
        if src == self.config.primary_address:
            return self._drop("own")
        if advert.version != self.config.version:
            return self._drop("version")
        if advert.vrid != self.config.vrid:  # normal on a link shared by several virtual routers
            return self._drop("vrid")
        if self.config.version == 2:
            if (advert.auth_type, advert.auth_data if advert.auth_type else bytes(8)) != self._auth:
                return self._drop("auth")  # RFC 2338 §7.1: method and password must both match
            if advert.interval != self.config.interval_units:  # RFC 3768 §7.1
                return self._drop("interval")
        if self._state is State.BACKUP:
            return self._backup_receives(advert, src, now)
        return self._master_receives(advert, src, now)

    # --- the states --------------------------------------------------------------------------

    def _backup_receives(self, advert: Advertisement, src: IPAddress, now: float) -> Output:
        # RFC 5798 §6.4.2 / RFC 3768 §6.4.2
        if advert.priority == 0:
            # The master resigned: take over after Skew_Time instead of Master_Down_Interval, so the
            # highest-priority backup (smallest skew) speaks first and the others hear it in time.
            self._deadline = now + self.skew_time
            self._master_address = None
            self._down_reason = f"master down ({src} sent priority 0)"
            return _NOTHING
        self._master_address = src  # it is the master, even when we are about to preempt it
        if advert.priority >= self._priority:
            self._preempt_at = None  # keepalived: a master we do not outrank stops the preempt delay
        if not self.config.preempt or advert.priority >= self._priority or self._preempt_held(advert, now):
            if self.config.version == 3:
                self._master_adver_interval = advert.interval_seconds
            self._deadline = now + self.master_down_interval
            self._down_reason = "master down"
        # else: a lower-priority master and preemption allowed: discard, and let the Master_Down_Timer
        # run out so that we take over
        return _NOTHING

    def _preempt_held(self, advert: Advertisement, now: float) -> bool:
        """keepalived preempt_delay: whether a lower-priority advertisement still holds us back."""
        if self.config.preempt_delay <= 0:
            return False
        if self._preempt_at is None:  # the first lower-priority master since a higher one: start
            self._preempt_at = now + self.config.preempt_delay
        return now < self._preempt_at

    def _master_receives(self, advert: Advertisement, src: IPAddress, now: float) -> Output:
        # RFC 5798 §6.4.3 / RFC 3768 §6.4.3
        if advert.priority == 0:  # another master resigned: make sure the backups hear from us now
            self._deadline = now + self.config.advert_interval
            return Output(packets=(self._advertisement(self._priority),))
        if advert.priority > self._priority:
            reason = f"higher priority master {src}"
        elif advert.priority == self._priority and int(src) > int(self.config.primary_address):
            reason = f"equal priority master {src} with higher address"
        else:
            return _NOTHING  # a lower master: it hears us and yields
        if self.config.version == 3:
            self._master_adver_interval = advert.interval_seconds
        return self._become_backup(now, reason, master=src)

    def _become_master(self, now: float, reason: str) -> Output:
        old = self._state
        self._state = State.MASTER
        self._deadline = now + self.config.advert_interval
        self._master_address = self.config.primary_address
        self._preempt_at = None
        self._counters["became_master"] += 1
        return Output(packets=(self._advertisement(self._priority),),
                      events=(StateChanged(old, State.MASTER, reason, now),))

    def _become_backup(self, now: float, reason: str, master: IPAddress | None) -> Output:
        old = self._state
        self._state = State.BACKUP
        self._deadline = now + self.master_down_interval
        self._down_reason = "master down"
        self._master_address = master
        if master is not None:
            self._preempt_at = None  # keepalived: a higher master stops the preempt delay
        self._counters["became_backup"] += 1
        return Output(events=(StateChanged(old, State.BACKUP, reason, now),))

    # --- helpers -------------------------------------------------------------------------------

    def _advertisement(self, priority: int) -> bytes:
        config = self.config
        auth_type, auth_data = self._auth if config.version == 2 else (AUTH_NONE, b"")
        advert = Advertisement(config.version, config.vrid, priority, config.interval_units,
                               config.addresses, auth_type, auth_data)
        self._counters["tx"] += 1
        return encode(advert, src=config.primary_address, dst=self._group)

    def _drop(self, reason: str) -> Output:
        self._counters[f"drop_{reason}"] += 1
        return Output(events=(DropCounted(reason),))
