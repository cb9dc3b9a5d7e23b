"""`rmm-sensor analyze`: offline analysis of capture files."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sensor.analysis import Detection, Sessions, Sink, Verdicts
from sensor.capture.files import CaptureError, Frame, read_frames
from sensor.config import Settings, load_settings
from sensor.counters import EngineSnapshot
from sensor.fingerprints import ENRICHERS
from sensor.fingerprints.detector import Detector
from sensor.output.sinks import JsonLinesSink, TableSink
from sensor.pipeline import settle_collector
from sensor.reload import ConfigWatcher
from sensor.sessions import SessionBuilder
from sensor.signatures.index import SignatureIndex
from sensor.signatures.loader import load_index
from sensor.signatures.schema import CHANNELS
from sensor.yamlsource import SourceError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sensor.metrics import Metrics

EXIT_CLEAN, EXIT_UNSANCTIONED, EXIT_ERROR = 0, 1, 2
PROGRESS_EVERY = 1 << 16


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "analyze",
        help="analyze capture files (pcap, pcapng, gzip; - for stdin)",
        description="Report every remote-access session in the captures. Exit status: 0 no "
        "alert, 1 an unsanctioned session raised an alert, 2 usage or input error.",
    )
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="capture file, or - for stdin")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table (default) or JSON lines in Suricata EVE style")  # fmt: skip
    p.add_argument("--flows", action="store_true", help="also report every flow")
    p.add_argument(
        "--metrics-out",
        metavar="FILE",
        help="write Prometheus text format here (node-exporter textfile collector)",
    )
    p.add_argument("--signatures", metavar="DIR", help="signature directory")
    p.add_argument("--config", metavar="FILE", help="configuration file (policy, flow limits)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes; flows are sharded by a symmetric hash (default 1)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config) if args.config else Settings()
        index = load_index(args.signatures or settings.signatures or None)
    except SourceError as exc:
        return _fail(str(exc))
    sink: Sink = (JsonLinesSink if args.format == "json" else TableSink)(sys.stdout, args.flows)
    verdicts, errors = analyze_captures(args, settings, index, [sink])
    for message in errors:
        print(f"rmm-sensor: error: {message}", file=sys.stderr)
    if errors:
        return EXIT_ERROR
    return EXIT_UNSANCTIONED if verdicts.alert_count else EXIT_CLEAN


def analyze_captures(
    args: argparse.Namespace, settings: Settings, index: SignatureIndex, sinks: list[Sink]
) -> tuple[Verdicts, list[str]]:
    """Run the whole pipeline over ``args.captures``; return the verdict stage and errors.

    Shared by ``analyze`` and ``inventory``. ``args`` carries captures, workers, flows,
    metrics_out and config.
    """
    registry: CollectorRegistry | None = None
    metrics: Metrics | None = None
    if args.metrics_out:
        # Only here: the Prometheus library is about 60 ms of start-up, and a run that writes
        # no metrics file has no use for it.
        from sensor.metrics import new_registry, sensor_metrics

        registry = new_registry()
        metrics = sensor_metrics(registry, index, CHANNELS)
    verdicts = Verdicts(settings.policy, sinks, metrics)
    if args.workers != 1:
        errors = _run_workers(args, settings, index, verdicts, registry)
    else:
        errors = _run_one(args, settings, index, verdicts, registry)
    if registry is not None:  # there is one exactly when a metrics file was asked for
        from prometheus_client import write_to_textfile

        try:
            write_to_textfile(args.metrics_out, registry)
        except OSError as exc:
            errors.append(f"{args.metrics_out}: {exc.strerror or exc}")
    return verdicts, errors


def _collect(
    registry: CollectorRegistry | None, snapshots: Callable[[], Iterable[EngineSnapshot]]
) -> None:
    """Read the engine counters into the registry at write time, when metrics are written."""
    if registry is not None:
        from sensor.metrics import EngineCollector

        registry.register(EngineCollector(snapshots))


def _run_one(
    args: argparse.Namespace,
    settings: Settings,
    index: SignatureIndex,
    verdicts: Verdicts,
    registry: CollectorRegistry | None,
) -> list[str]:
    detector = Detector(index, ENRICHERS, internal_networks=settings.policy.internal_networks)
    sessions = Sessions(SessionBuilder(), verdicts)
    detection = Detection(
        settings.flows,
        detector,
        sessions.add,
        on_flow=verdicts.flow if args.flows else None,
        on_tick=sessions.tick,
        on_exploit=verdicts.exploit,
    )
    _collect(registry, lambda: [detection.snapshot()])
    if args.config:
        # A long capture on stdin (tcpdump -w - | rmm-sensor analyze -) may see a new policy.
        def reconfigure(new: Settings) -> None:
            verdicts.reconfigure(new.policy)
            detector.set_internal_networks(new.policy.internal_networks)

        watcher = ConfigWatcher(args.config, settings, reconfigure, verdicts.metrics)
        signal.signal(signal.SIGHUP, lambda _sig, _frame: watcher.request())

        def tick(now_ns: int) -> None:
            sessions.tick(now_ns)
            watcher.check()

        detection.on_tick = tick
    errors = []
    settle_collector()
    for path in args.captures:
        try:
            detection.run(_progress(read_frames(path), path))
        except CaptureError as exc:
            errors.append(str(exc))
    detection.finish()
    sessions.finish()
    return errors


def _run_workers(
    args: argparse.Namespace,
    settings: Settings,
    index: SignatureIndex,
    verdicts: Verdicts,
    registry: CollectorRegistry | None,
) -> list[str]:
    if args.workers < 1:
        return ["--workers must be at least 1"]
    if "-" in args.captures:
        return ["standard input cannot be shared by several workers"]
    # Here, not at the top: multiprocessing and the worker machinery are 13 ms of every start,
    # and a one-process run does without them.
    from sensor.live.supervisor import Supervisor
    from sensor.live.worker import WorkerSpec

    captures = tuple(args.captures)
    specs = [
        WorkerSpec(
            i, settings, captures=captures, shards=args.workers, send_flows=args.flows, index=index
        )
        for i in range(args.workers)
    ]
    sessions = Sessions(SessionBuilder(), verdicts)
    supervisor = Supervisor(
        specs, sessions, verdicts.metrics, restart=False, ordered=True, fork=True
    )
    _collect(registry, supervisor.snapshots)
    # A forked worker flushes the standard streams it inherited when it exits: empty them first,
    # or their buffered text would be written once per worker.
    sys.stdout.flush()
    sys.stderr.flush()
    supervisor.run()
    sessions.finish()
    return list(supervisor.errors)


def _fail(message: str) -> int:
    print(f"rmm-sensor: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _progress(frames: Iterable[Frame], path: str) -> Iterable[Frame]:
    """Packets read and percent of the file on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty() or path == "-":
        return frames
    try:
        size = os.path.getsize(path)
    except OSError:
        return frames
    return _with_progress(frames, path, size)


def _with_progress(frames: Iterable[Frame], path: str, size: int) -> Iterator[Frame]:
    n = 0
    pos = 24
    try:
        for frame in frames:
            n += 1
            pos += 16 + frame[4]  # record header and captured bytes (pcap)
            if not n % PROGRESS_EVERY:
                pct = min(100, 100 * pos // max(size, 1))
                sys.stderr.write(f"\r{os.path.basename(path)}: {n:,} packets {pct:3d}%")
                sys.stderr.flush()
            yield frame
    finally:
        if n >= PROGRESS_EVERY:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
