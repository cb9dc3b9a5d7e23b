"""`rmm-sensor live`: watch an interface (a span/mirror port) and serve metrics."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from sensor.alerts.sinks import (
    JsonFileSink,
    SessionFileSink,
    SpoolingSink,
    StdoutSink,
    SyslogSink,
)
from sensor.analysis import Sessions, Verdicts
from sensor.config import Settings, load_settings
from sensor.reload import ConfigWatcher
from sensor.sessions import SessionBuilder
from sensor.signatures.loader import load_index
from sensor.signatures.schema import CHANNELS
from sensor.yamlsource import SourceError

if TYPE_CHECKING:
    from sensor.metrics import Metrics

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "live",
        help="capture from an interface (AF_PACKET) and serve Prometheus metrics",
        description="Needs CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode). SIGHUP reloads "
        "the configuration and reopens the alert file; SIGTERM flushes open sessions and exits.",
    )
    p.add_argument("--interface", "-i", help="interface to capture on (capture.interface)")
    p.add_argument("--config", metavar="FILE", help="configuration file")
    p.add_argument("--workers", type=int, help="worker processes (capture.workers)")
    p.add_argument("--metrics-address", metavar="HOST:PORT", help="metrics.address")
    p.add_argument("--alerts", metavar="FILE", help="JSON-lines alert file (output.alerts_file)")
    p.add_argument("--bpf", metavar="EXPR", help="kernel prefilter, tcpdump syntax (capture.bpf)")
    p.add_argument("--stdout", action="store_true", help="also write alerts to stdout")
    p.add_argument("--syslog", action="store_true", help="also send alerts to syslog")
    p.set_defaults(run=run)


def apply_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags override the file."""
    capture = settings.capture
    if args.interface:
        capture = dataclasses.replace(capture, interface=args.interface)
    if args.workers is not None:
        capture = dataclasses.replace(capture, workers=args.workers)
    if args.bpf is not None:
        capture = dataclasses.replace(capture, bpf=args.bpf)
    output = settings.output
    if args.alerts:
        output = dataclasses.replace(output, alerts_file=args.alerts)
    if args.stdout:
        output = dataclasses.replace(output, stdout=True)
    if args.syslog:
        output = dataclasses.replace(output, syslog=True)
    metrics = settings.metrics
    if args.metrics_address:
        metrics = dataclasses.replace(metrics, address=args.metrics_address)
    return dataclasses.replace(settings, capture=capture, output=output, metrics=metrics)


def build_sinks(settings: Settings, metrics: Metrics) -> list[SpoolingSink]:
    out = settings.output
    sinks: list[SpoolingSink] = []
    if out.alerts_file:
        sinks.append(JsonFileSink(out.alerts_file, out.spool_max, metrics))
    if out.stdout:
        sinks.append(StdoutSink(out.spool_max, metrics))
    if out.syslog:
        sinks.append(SyslogSink(out.syslog_address, out.spool_max, metrics))
    if out.sessions_file:
        sinks.append(SessionFileSink(out.sessions_file, out.spool_max, metrics))
    return sinks


def run(args: argparse.Namespace) -> int:
    # Here, not at the top: every command line imports this module to list the command, and
    # the capture workers' machinery (multiprocessing) is 15 ms of each start, the Prometheus
    # library 60 ms.
    from sensor.live.http import MetricsServer
    from sensor.live.supervisor import Supervisor
    from sensor.live.worker import WorkerSpec
    from sensor.metrics import EngineCollector, new_registry, sensor_metrics

    logging.getLogger().setLevel(logging.INFO)
    try:
        settings = apply_flags(load_settings(args.config) if args.config else Settings(), args)
        index = load_index(settings.signatures or None)
    except SourceError as exc:
        print(f"rmm-sensor: error: {exc}", file=sys.stderr)
        return 2
    capture = settings.capture
    if not capture.interface:
        print("rmm-sensor: error: no interface (--interface or capture.interface)", file=sys.stderr)
        return 2
    if capture.workers < 1:
        print("rmm-sensor: error: --workers must be at least 1", file=sys.stderr)
        return 2
    registry = new_registry()
    metrics = sensor_metrics(registry, index, CHANNELS)
    sinks = build_sinks(settings, metrics)
    verdicts = Verdicts(settings.policy, sinks, metrics)
    sessions = Sessions(SessionBuilder(), verdicts)
    group = os.getpid() & 0xFFFF  # fanout group id, unique per sensor on this host
    iface, n = capture.interface, capture.workers
    specs = [
        WorkerSpec(i, settings, interface=iface, shards=n, fanout_group=group) for i in range(n)
    ]
    watcher = None
    metrics.config_ok.set(1)  # running on the configuration it started with
    metrics.config_last_success.set(time.time())
    if args.config:
        watcher = ConfigWatcher(
            args.config, settings, lambda s: _reload(s, settings, verdicts), metrics
        )

    def idle() -> None:
        sessions.tick(time.time_ns())
        for sink in sinks:
            sink.retry()
        if watcher is not None:
            watcher.check()

    supervisor = Supervisor(specs, sessions, metrics, restart=True, on_idle=idle)
    registry.register(EngineCollector(supervisor.snapshots))
    try:
        server = MetricsServer(settings.metrics, registry, supervisor.health)
    except (OSError, ValueError) as exc:
        where = settings.metrics.address
        print(f"rmm-sensor: error: metrics endpoint {where}: {exc}", file=sys.stderr)
        return 2
    server.start()

    def on_hup(_sig: int, _frame: object) -> None:
        if watcher is not None:
            watcher.request()
        for sink in sinks:
            sink.reopen()

    signal.signal(signal.SIGTERM, lambda _s, _f: supervisor.stop())
    signal.signal(signal.SIGINT, lambda _s, _f: supervisor.stop())
    signal.signal(signal.SIGHUP, on_hup)
    log.info(
        "watching %s with %d worker(s); metrics on %s",
        capture.interface, capture.workers, settings.metrics.address,
    )  # fmt: skip
    try:
        supervisor.run()
    finally:
        sessions.finish()
        server.stop()
    for message in supervisor.errors:
        print(f"rmm-sensor: error: {message}", file=sys.stderr)
    return 2 if supervisor.errors else 0


def _reload(new: Settings, running: Settings, verdicts: Verdicts) -> None:
    verdicts.reconfigure(new.policy)
    for section in ("capture", "flows", "signatures", "output", "metrics"):
        if getattr(new, section) != getattr(running, section):
            log.warning("configuration section %r changed: it applies after a restart", section)
