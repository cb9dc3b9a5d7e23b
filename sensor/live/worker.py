"""A worker process: its own engine, flow table and detector over one share of the traffic.

Live, the share is what the kernel's PACKET_FANOUT flow hash gives this worker's socket; offline
(``analyze --workers N``) every worker reads every file and keeps the flows whose symmetric
hash falls in its shard. Sessions, counters and learned DNS facts go to the supervisor over a
queue; the supervisor judges sessions (one policy, one alert throttle for the whole sensor).

DNS attribution across workers: offline, every shard reads every DNS answer (they are few), so
attribution is exactly what one process would do. Live, a DNS answer lands in one worker only;
that worker sends what it learned to the supervisor after the batch of packets it came in, and the
supervisor passes it to every other worker, which applies it before its next batch: a few hundred
milliseconds. A running flow is looked at two seconds after its first packet at the soonest (the
flow table's identify grace), so the name is there when it is judged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

from sensor.analysis import Detection
from sensor.capture.files import CaptureError, read_frames
from sensor.config import Settings
from sensor.counters import EngineSnapshot
from sensor.fingerprints import ENRICHERS
from sensor.fingerprints.attribution import Attribution
from sensor.fingerprints.detector import Detector
from sensor.model import FlowRecord, Session
from sensor.pipeline import settle_collector
from sensor.rules.exploits import Exploit
from sensor.signatures.index import SignatureIndex
from sensor.signatures.loader import load_index

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0
POLL_MS = 200
BATCH = 512  # messages an offline worker sends at once
EXIT_SETUP_ERROR = 3


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    worker_id: int
    settings: Settings
    interface: str = ""  # live capture
    captures: tuple[str, ...] = ()  # offline shard
    shards: int = 1
    fanout_group: int = 0
    send_flows: bool = False
    # Signatures the parent already loaded (forked workers inherit them); None: load
    # settings.signatures in the worker (a spawned worker starts empty).
    index: SignatureIndex | None = None


class _Outbox:
    """Everything a worker sends, batched where volume can be high."""

    def __init__(self, spec: WorkerSpec, out: Queue[Any]) -> None:
        self.wid = spec.worker_id
        self.out = out
        self.names: list[tuple[str, str]] = []
        self.attributions: list[Attribution] = []
        # Offline, flow records, results and ticks go out in their order, many to a message:
        # one message per tick (a second of packet time) woke the queue's feeder thread so often
        # that it cost a worker about a twentieth of its run. Live, each result goes out at once
        # (live workers send no flow records).
        self.pending: list[tuple[str, int, Any]] | None = [] if spec.captures else None

    def session(self, s: Session) -> None:
        self._send(("session", self.wid, s))

    def tick(self, now_ns: int) -> None:
        """Offline: packet time passed ``now_ns``; what was sent before happened before it."""
        self._send(("tick", self.wid, now_ns))

    def early(self, s: Session) -> None:
        self._send(("early", self.wid, s))

    def exploit(self, e: Exploit, s: Session) -> None:
        self._send(("exploit", self.wid, (e, s)))

    def flow(self, r: FlowRecord) -> None:
        self._send(("flow", self.wid, r))

    def _send(self, message: tuple[str, int, Any]) -> None:
        if self.pending is None:
            self.out.put(message)
            return
        self.pending.append(message)
        if len(self.pending) >= BATCH:
            self.send_batches()

    def send_batches(self) -> None:
        if self.pending:
            self.out.put(("batch", self.wid, self.pending))
            self.pending = []
        self.send_learned()

    def send_learned(self) -> None:
        if self.names or self.attributions:
            self.out.put(("learned", self.wid, (self.names, self.attributions)))
            self.names, self.attributions = [], []


def run_worker(spec: WorkerSpec, out: Queue[Any], inbox: Queue[Any]) -> None:
    """Process entry point (spawned)."""
    # The supervisor decides when workers stop: it sends "stop" and waits for their last words.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.WARNING, format="rmm-sensor worker: %(levelname)s: %(message)s"
    )
    settings = spec.settings
    detector = Detector(
        spec.index if spec.index is not None else load_index(settings.signatures or None),
        ENRICHERS,
        internal_networks=settings.policy.internal_networks,
    )
    box = _Outbox(spec, out)
    detection = Detection(
        settings.flows,
        detector,
        box.session,
        on_flow=box.flow if spec.send_flows else None,
        shard=(spec.worker_id, spec.shards) if spec.captures else (0, 1),
        on_early=box.early if spec.interface else None,
        worker=(spec.worker_id, spec.shards),
        on_exploit=box.exploit,
        on_tick=None if spec.interface else box.tick,
    )
    settle_collector()
    if spec.interface:
        detector.on_learn = lambda address, name: box.names.append((address, name))
        detector.on_attribution = box.attributions.append
        code = _live(spec, detection, detector, box, out, inbox)
    else:
        code = _offline(spec, detection, box, out)
    out.put(("done", spec.worker_id, code))


def _offline(spec: WorkerSpec, detection: Detection, box: _Outbox, out: Queue[Any]) -> int:
    code = 0
    for path in spec.captures:
        try:
            detection.run(read_frames(path, detection.engine.sieve))
        except CaptureError as exc:
            if spec.worker_id == 0:  # every worker reads the same bytes: report once
                out.put(("error", spec.worker_id, str(exc)))
            code = 2
    detection.finish()
    box.send_batches()
    out.put(("snapshot", spec.worker_id, detection.snapshot()))
    return code


def _live(
    spec: WorkerSpec,
    detection: Detection,
    detector: Detector,
    box: _Outbox,
    out: Queue[Any],
    inbox: Queue[Any],
) -> int:
    from sensor.capture.afpacket import CaptureSetupError, RingCapture, RingSettings

    cs = spec.settings.capture
    ring = RingSettings(
        snaplen=cs.snaplen,
        promiscuous=cs.promiscuous,
        bpf=cs.bpf,
        fanout_group=spec.fanout_group if spec.shards > 1 else None,
    )
    try:
        cap = RingCapture(spec.interface, ring)
    except CaptureSetupError as exc:
        out.put(("error", spec.worker_id, str(exc)))
        return EXIT_SETUP_ERROR
    parent = os.getppid()
    next_report = time.monotonic() + REPORT_INTERVAL_S
    retry_at = 0.0
    stopping = False
    try:
        while not stopping:
            if cap.needs_reopen():
                # The interface went away or was re-created: keep the flows, retry each second.
                if time.monotonic() >= retry_at:
                    retry_at = time.monotonic() + 1.0
                    try:
                        cap.reopen()
                    except CaptureSetupError as exc:
                        log.warning("capture not back yet: %s", exc)
                time.sleep(0.2)
            elif not cap.healthy():
                time.sleep(0.2)  # down: the socket rejoins by itself when it comes back up
            else:
                detection.run(cap.frames(POLL_MS))
                # DNS facts go out after every batch (a block, at most ~0.1 s of traffic) and
                # come in before the next one, well within the flow table's identify grace.
                box.send_learned()
            stopping = _read_inbox(detector, inbox)
            detection.engine.advance(time.time_ns())
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + REPORT_INTERVAL_S
                _report(spec, detection, cap.stats(), box, out)
                stopping = stopping or os.getppid() != parent
    finally:
        detection.finish()
        box.send_batches()
        _report(spec, detection, cap.stats(), box, out)
        cap.close()
    return 0


def _report(
    spec: WorkerSpec, detection: Detection, stats: tuple[int, int], box: _Outbox, out: Queue[Any]
) -> None:
    box.send_batches()
    snap = detection.snapshot()
    kernel_packets, kernel_drops = stats
    out.put(("snapshot", spec.worker_id, _with_kernel(snap, kernel_packets, kernel_drops)))


def _with_kernel(snap: EngineSnapshot, packets: int, drops: int) -> EngineSnapshot:
    return dataclasses.replace(snap, kernel_packets=packets, kernel_drops=drops)


def _read_inbox(detector: Detector, inbox: Queue[Any]) -> bool:
    """Apply what other workers learned; return True when asked to stop."""
    while True:
        try:
            kind, payload = inbox.get_nowait()
        except queue.Empty:
            return False
        if kind == "stop":
            return True
        if kind == "learned":
            names, attributions = payload
            detector.learn(names, attributions)
