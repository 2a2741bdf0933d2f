"""Prometheus metrics: a custom collector that reads the daemon's counters at scrape time.

The daemon passes a provider callback returning a `MetricsSnapshot`; nothing is copied into
prometheus-client's own counters, so a scrape always shows the engine's numbers as they are (and a
restarted engine's counters simply start again from zero, which Prometheus' rate() handles).
Names and labels are listed in docs/control.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from dsrlb import __version__
from dsrlb.control.views import TARGET_STATES

PREFIX = "dsrlb"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class ServiceCounters:
    """One server (service) as the data path counts it."""

    id: int
    name: str | None
    address: str
    ports: str  # "80", "80,443" or "any"
    packets: int
    bytes: int
    sessions_created: int
    sessions_active: int


@dataclass(frozen=True)
class TargetCounters:
    id: int
    name: str | None
    address: str
    state: str  # one of views.TARGET_STATES
    packets: int
    bytes: int
    sessions_created: int
    sessions_active: int
    latency_ms: float | None = None  # last successful health probe


@dataclass(frozen=True)
class MetricsSnapshot:
    """Everything one scrape shows. `drops` are dropped packets by reason (malformed, fragment, ...)."""

    hostname: str
    engine: str
    services: tuple[ServiceCounters, ...] = ()
    targets: tuple[TargetCounters, ...] = ()
    engine_counters: Mapping[str, int] = field(default_factory=dict)
    drops: Mapping[str, int] = field(default_factory=dict)
    vrrp_master: bool | None = None  # None: no VRRP configured
    uptime_s: float | None = None


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


def snapshot_metrics(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    """The metric families of one snapshot."""
    info = InfoMetricFamily(f"{PREFIX}_build", "dsrlb version, host name and data-path engine")
    info.add_metric([], {"version": __version__, "hostname": snapshot.hostname, "engine": snapshot.engine})
    yield info
    if snapshot.uptime_s is not None:
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "seconds since the daemon started",
                                value=snapshot.uptime_s)
    if snapshot.vrrp_master is not None:
        yield GaugeMetricFamily(f"{PREFIX}_vrrp_master", "1 when this node is the VRRP master",
                                value=1 if snapshot.vrrp_master else 0)

    service_labels = ["service", "name", "address", "ports"]
    s_packets = _counter("service_packets", "packets balanced for a server", service_labels)
    s_bytes = _counter("service_bytes", "bytes balanced for a server", service_labels)
    s_created = _counter("service_sessions_created", "sessions created for a server", service_labels)
    s_active = _gauge("service_sessions", "active sessions of a server", service_labels)
    for service in snapshot.services:
        labels = [str(service.id), service.name or "", service.address, service.ports]
        s_packets.add_metric(labels, service.packets)
        s_bytes.add_metric(labels, service.bytes)
        s_created.add_metric(labels, service.sessions_created)
        s_active.add_metric(labels, service.sessions_active)
    yield from (s_packets, s_bytes, s_created, s_active)

    target_labels = ["target", "name", "address"]
    t_packets = _counter("target_packets", "packets sent to a target", target_labels)
    t_bytes = _counter("target_bytes", "bytes sent to a target", target_labels)
    t_created = _counter("target_sessions_created", "sessions assigned to a target", target_labels)
    t_active = _gauge("target_sessions", "active sessions of a target", target_labels)
    t_up = _gauge("target_up", "1 when the target takes new sessions", target_labels)
    # One series per possible state, 1 for the current one (the OpenMetrics StateSet pattern, spelled as
    # a gauge so that the classic text format carries it).
    t_state = _gauge("target_state", "1 for the target's current state", [*target_labels, "state"])
    t_latency = _gauge("target_probe_latency_seconds", "round trip of the last successful health probe",
                       target_labels)
    for target in snapshot.targets:
        labels = [str(target.id), target.name or "", target.address]
        t_packets.add_metric(labels, target.packets)
        t_bytes.add_metric(labels, target.bytes)
        t_created.add_metric(labels, target.sessions_created)
        t_active.add_metric(labels, target.sessions_active)
        t_up.add_metric(labels, 1 if target.state == "up" else 0)
        for state in TARGET_STATES:
            t_state.add_metric([*labels, state], 1 if target.state == state else 0)
        if target.latency_ms is not None:
            t_latency.add_metric(labels, target.latency_ms / 1000)
    yield from (t_packets, t_bytes, t_created, t_active, t_up, t_state, t_latency)

    engine = _counter("engine_packets", "data-path counters (docs/datapath.md §6)", ["counter"])
    for name, value in sorted(snapshot.engine_counters.items()):
        engine.add_metric([name], value)
    yield engine
    drops = _counter("engine_drops", "packets dropped by the data path, by reason", ["reason"])
    for reason, value in sorted(snapshot.drops.items()):
        drops.add_metric([reason], value)
    yield drops


class DsrlbCollector:
    """A prometheus-client collector over a snapshot provider (called at every scrape)."""

    def __init__(self, provider: Callable[[], MetricsSnapshot]) -> None:
        self._provider = provider

    def describe(self) -> list[Metric]:
        # Registering must not call the provider (the daemon may not be ready yet).
        return []

    def collect(self) -> Iterator[Metric]:
        yield from snapshot_metrics(self._provider())


def exposition(provider: Callable[[], MetricsSnapshot]) -> bytes:
    """The Prometheus text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DsrlbCollector(provider))
    return bytes(generate_latest(registry))
