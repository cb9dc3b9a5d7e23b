"""Prometheus metrics. The registry is passed in; nothing touches the global one.

Hot-path counters live as plain integers in :class:`sensor.pipeline.Stats` and are read at scrape
time by :class:`EngineCollector`; only per-session and per-alert events use library counters.
Every label value comes from a fixed set in code or from the signature files (tools, channels),
never from the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sensor import __version__
from sensor.counters import EngineSnapshot
from sensor.timestamps import NS

if TYPE_CHECKING:
    from sensor.signatures.index import SignatureIndex

VERDICTS = ("sanctioned", "unsanctioned")
ALERT_SERIES = (
    ("unsanctioned_rmm_session", "low"),
    ("unsanctioned_rmm_session", "medium"),
    ("unsanctioned_rmm_session", "high"),
    ("unsanctioned_rmm_session", "critical"),
    ("outdated_rmm_server", "high"),
    ("rmm_exploit_attempt", "critical"),
    ("rmm_chain", "high"),
)


def new_registry() -> CollectorRegistry:
    """An empty registry for one sensor or one analysis run."""
    # *_created series double every counter's series and mean nothing to these counters. The
    # switch is the library's own process-wide setting; every registry here wants it off.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    return CollectorRegistry()


def sensor_metrics(
    registry: CollectorRegistry, index: SignatureIndex, channels: Iterable[str]
) -> Metrics:
    """The event metrics of a sensor running ``index``, with its tools' series started at zero."""
    metrics = Metrics(registry)
    metrics.start_series(index.tools, channels)
    for tool in index.tools:
        metrics.signatures.labels(tool).set(sum(1 for s in index.signatures if s.tool == tool))
    return metrics


class EngineCollector(Collector):
    """Reads engine counters at scrape time."""

    def __init__(self, snapshot: Callable[[], Iterable[EngineSnapshot]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snaps = list(self._snapshot())
        yield _counter("rmm_sensor_packets", "Packets read.", sum(s.packets for s in snaps))
        yield _counter("rmm_sensor_bytes", "Bytes of packets read (wire length).",
                       sum(s.bytes for s in snaps))  # fmt: skip
        yield _counter("rmm_sensor_non_ip_packets", "Packets that carried neither IPv4 nor IPv6.",
                       sum(s.non_ip for s in snaps))  # fmt: skip
        yield _labelled_counter(
            "rmm_sensor_decode_errors", "Packets skipped because they could not be decoded.",
            "reason", snaps, lambda s: s.decode_errors,
        )  # fmt: skip
        yield _labelled_counter(
            "rmm_sensor_other_protocol_packets", "IP packets that were neither TCP nor UDP.",
            "protocol", snaps, lambda s: s.other_protocols,
        )  # fmt: skip
        yield _labelled_counter(
            "rmm_sensor_parse_errors", "Flows whose first bytes did not parse as their protocol.",
            "protocol", snaps, lambda s: s.parse_errors,
        )  # fmt: skip
        yield _counter("rmm_sensor_flows", "Flows created.", sum(s.flows_created for s in snaps))
        yield _labelled_counter(
            "rmm_sensor_flows_ended", "Flows ended, by reason (evicted = table full).",
            "reason", snaps, lambda s: s.flows_ended,
        )  # fmt: skip
        active = GaugeMetricFamily("rmm_sensor_flows_active", "Flows in the flow table.")
        active.add_metric([], sum(s.flows_active for s in snaps))
        yield active
        yield _counter(
            "rmm_sensor_kernel_packets",
            "Packets the kernel passed to the capture ring (live capture).",
            sum(s.kernel_packets for s in snaps),
        )
        yield _counter(
            "rmm_sensor_kernel_drops",
            "Packets the kernel dropped because the capture ring was full (live capture).",
            sum(s.kernel_drops for s in snaps),
        )
        last = max((s.last_packet_ns for s in snaps), default=0)
        stamp = GaugeMetricFamily(
            "rmm_sensor_last_packet_timestamp_seconds", "Capture time of the newest packet read."
        )
        stamp.add_metric([], last / NS)
        yield stamp


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled_counter(
    name: str,
    doc: str,
    label: str,
    snaps: list[EngineSnapshot],
    pick: Callable[[EngineSnapshot], tuple[tuple[str, int], ...]],
) -> CounterMetricFamily:
    totals: dict[str, int] = {}
    for s in snaps:
        for key, value in pick(s):
            totals[key] = totals.get(key, 0) + value
    family = CounterMetricFamily(name, doc, labels=[label])
    for key in sorted(totals):
        family.add_metric([key], totals[key])
    return family


class Metrics:
    """Event metrics of the detection stages, registered on the given registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.sessions = Counter(
            "rmm_sensor_sessions",
            "Remote-access sessions seen, by tool, channel and verdict.",
            ["tool", "channel", "verdict"],
            registry=registry,
        )
        self.sessions_active = Gauge(
            "rmm_sensor_sessions_active",
            "Remote-access sessions seen on flows that are still running (live capture).",
            ["tool"],
            registry=registry,
        )
        self.session_bytes = Counter(
            "rmm_sensor_session_bytes",
            "Bytes carried by remote-access sessions, by tool and direction.",
            ["tool", "direction"],
            registry=registry,
        )
        self.alerts = Counter(
            "rmm_sensor_alerts",
            "Alerts raised, by rule and severity.",
            ["rule", "severity"],
            registry=registry,
        )
        self.alerts_suppressed = Counter(
            "rmm_sensor_alerts_suppressed",
            "Alerts not sent: condensed into a follow-up, or over the rate limit.",
            ["reason"],
            registry=registry,
        )
        for reason in ("condensed", "throttled"):
            self.alerts_suppressed.labels(reason)
        for rule, severity in ALERT_SERIES:
            self.alerts.labels(rule, severity)
        self.exploit_attempts = Counter(
            "rmm_sensor_exploit_attempts",
            "Requests exploiting remote-access servers, by CVE.",
            ["cve"],
            registry=registry,
        )
        for cve in ("CVE-2024-1709", "CVE-2024-1708"):
            self.exploit_attempts.labels(cve)
        self.chains = Counter(
            "rmm_sensor_chains",
            "Hosts that used a second remote-access tool soon after a first one.",
            ["first_tool", "second_tool"],
            registry=registry,
        )
        self.servers = Gauge(
            "rmm_sensor_servers",
            "Remote-access servers seen, by tool and whether any session with them was sanctioned.",
            ["tool", "verdict"],
            registry=registry,
        )
        self.outdated_servers = Gauge(
            "rmm_sensor_outdated_servers",
            "Remote-access servers seen running a version older than the policy's minimum.",
            ["tool"],
            registry=registry,
        )
        self.signatures = Gauge(
            "rmm_sensor_signatures_loaded",
            "Signatures loaded, by tool.",
            ["tool"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "rmm_sensor_config_reloads",
            "Configuration reloads, by result (a failed reload keeps the last good config).",
            ["result"],
            registry=registry,
        )
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        self.config_last_success = Gauge(
            "rmm_sensor_config_last_reload_success_timestamp_seconds",
            "Wall-clock time the running configuration was loaded.",
            registry=registry,
        )
        self.config_ok = Gauge(
            "rmm_sensor_config_last_reload_successful",
            "1 if the last configuration load succeeded, 0 if it failed.",
            registry=registry,
        )
        self.output_failures = Counter(
            "rmm_sensor_output_failures",
            "Failed attempts to write an alert to an output (it stays spooled).",
            ["output"],
            registry=registry,
        )
        self.output_dropped = Counter(
            "rmm_sensor_output_dropped_alerts",
            "Alerts dropped because an output's spool was full.",
            ["output"],
            registry=registry,
        )
        self.output_spooled = Gauge(
            "rmm_sensor_output_spooled_alerts",
            "Alerts waiting for an output that is failing.",
            ["output"],
            registry=registry,
        )
        self.worker_restarts = Counter(
            "rmm_sensor_worker_restarts",
            "Worker processes restarted after they died.",
            registry=registry,
        )
        self.workers = Gauge("rmm_sensor_workers", "Worker processes running.", registry=registry)
        info = Info("rmm_sensor_build", "Build information.", registry=registry)
        info.info({"version": __version__})

    def start_series(self, tools: Iterable[str], channels: Iterable[str]) -> None:
        """Create the known label combinations so their series start at zero."""
        channels = tuple(channels)
        for tool in tools:
            for channel in channels:
                for verdict in VERDICTS:
                    self.sessions.labels(tool, channel, verdict)
            for direction in ("toserver", "toclient"):
                self.session_bytes.labels(tool, direction)
            self.sessions_active.labels(tool)
            self.outdated_servers.labels(tool)
            for verdict in VERDICTS:
                self.servers.labels(tool, verdict)
