"""The supervisor: starts worker processes, judges their sessions, restarts the ones that die.

It owns everything that must be one per sensor: joining flows into sessions, the policy and the
alert throttle (``Sessions``, ``Verdicts``),
the outputs, the metrics registry (worker counters arrive as snapshots once a second and are
summed at scrape time) and the configuration watcher.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import TYPE_CHECKING, Any

from sensor.analysis import Sessions
from sensor.counters import EngineSnapshot
from sensor.live.worker import EXIT_SETUP_ERROR, WorkerSpec, run_worker

if TYPE_CHECKING:
    from sensor.metrics import Metrics

log = logging.getLogger(__name__)

POLL_S = 0.2
STOP_GRACE_S = 30.0
MIN_RESTART_INTERVAL_S = 1.0


class Supervisor:
    def __init__(
        self,
        specs: list[WorkerSpec],
        sessions: Sessions,
        metrics: Metrics | None = None,
        restart: bool = True,
        on_idle: Callable[[], None] | None = None,
        ordered: bool = False,
        fork: bool = False,
    ) -> None:
        self.specs = {s.worker_id: s for s in specs}
        self.sessions = sessions
        self.verdicts = sessions.verdicts
        self.metrics = metrics
        self.restart = restart
        self.on_idle = on_idle
        self.errors: list[str] = []
        self.restarts = 0
        self.stopping = False
        # Live workers are spawned: the supervisor restarts them while its HTTP thread runs, and
        # forking a threaded process is unsafe. analyze forks (no threads yet), which spares
        # each worker the imports and signature loading (about 0.2 s of a 3 s run).
        self._ctx = mp.get_context("fork") if fork else mp.get_context("spawn")
        self._out: Queue[Any] = self._ctx.Queue()
        self._inboxes: dict[int, Queue[Any]] = {}
        self._procs: dict[int, BaseProcess] = {}
        self._done: set[int] = set()
        self._snapshots: dict[int, EngineSnapshot] = {}
        self._retired: list[EngineSnapshot] = []
        self._fatal = False
        self._last_start: dict[int, float] = {}
        # Offline, results are put back in packet-time order (see _hold): every worker reads
        # every packet's time and ticks at the same instants, so the instants line them up.
        self.ordered = ordered
        self._pending: dict[int, list[tuple[str, int, Any]]] = {wid: [] for wid in self.specs}
        self._epochs: dict[int, deque[tuple[int, list[tuple[str, int, Any]]]]] = {
            wid: deque() for wid in self.specs
        }

    # --- state for metrics and health -----------------------------------------------------

    def snapshots(self) -> Iterable[EngineSnapshot]:
        return [*self._retired, *self._snapshots.values()]

    def alive(self) -> int:
        return sum(1 for p in self._procs.values() if p.is_alive())

    def health(self) -> tuple[bool, str]:
        alive = self.alive()
        last = max((s.last_packet_ns for s in self.snapshots()), default=0)
        age = f"{(time.time_ns() - last) / 1e9:.0f}s" if last else "never"
        text = f"workers {alive}/{len(self.specs)}, last packet {age} ago"
        return alive == len(self.specs) and not self._fatal, text

    # --- running ----------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True

    def run(self) -> None:
        for wid in self.specs:
            self._start(wid)
        stop_sent = 0.0
        while len(self._done) < len(self.specs):
            self._handle_some()
            if self.stopping and not stop_sent:
                stop_sent = time.monotonic()
                for inbox in self._inboxes.values():
                    inbox.put(("stop", None))
            if stop_sent and time.monotonic() - stop_sent > STOP_GRACE_S:
                log.error("workers did not stop within %.0f s; terminating them", STOP_GRACE_S)
                for proc in self._procs.values():
                    proc.terminate()
                break
            self._check_workers()
            if self.on_idle is not None:
                self.on_idle()
        self._drain()
        if self.ordered:
            self._release(final=True)
        for proc in self._procs.values():
            proc.join(timeout=5)

    def _start(self, wid: int) -> None:
        inbox: Queue[Any] = self._ctx.Queue()
        self._inboxes[wid] = inbox
        proc = self._ctx.Process(
            target=run_worker, args=(self.specs[wid], self._out, inbox), name=f"rmm-worker-{wid}"
        )
        proc.start()
        self._procs[wid] = proc
        self._last_start[wid] = time.monotonic()
        if self.metrics is not None:
            self.metrics.workers.set(len(self._procs))

    def _check_workers(self) -> None:
        for wid, proc in list(self._procs.items()):
            if wid in self._done or proc.is_alive():
                continue
            if self._drain() and wid in self._done:
                continue  # its last messages were still queued
            if not self.restart or self.stopping or self._fatal:
                self.errors.append(f"worker {wid} exited with status {proc.exitcode}")
                self._done.add(wid)
                continue
            if time.monotonic() - self._last_start[wid] < MIN_RESTART_INTERVAL_S:
                continue  # do not spin on a worker that dies at once
            log.error("worker %d died (exit status %s); restarting it", wid, proc.exitcode)
            last = self._snapshots.pop(wid, None)
            if last is not None:
                # Keep its counters so the sums stay monotonic; it holds no flows any more.
                self._retired.append(dataclasses.replace(last, flows_active=0))
            self.restarts += 1
            if self.metrics is not None:
                self.metrics.worker_restarts.inc()
            self._start(wid)

    def _handle_some(self) -> None:
        try:
            message = self._out.get(timeout=POLL_S)
        except queue.Empty:
            return
        self._handle(message)
        self._drain()

    def _drain(self) -> bool:
        got = False
        while True:
            try:
                message = self._out.get_nowait()
            except queue.Empty:
                return got
            got = True
            self._handle(message)

    def _hold(self, message: tuple[str, int, Any]) -> bool:
        """Offline: keep a worker's results until every worker has reached the same time.

        Single-worker analysis ends flows, joins sessions and closes alert windows at each
        tick of packet time, in that order. A worker ahead of the others must not have its later
        sessions joined before the others' earlier ones are in and the tick is done, or the
        joining (and so the output) would depend on which process ran faster.
        """
        kind, wid, payload = message
        if kind in ("session", "early", "exploit"):
            self._pending[wid].append(message)
            return True
        if kind == "tick":
            self._epochs[wid].append((payload, self._pending[wid]))
            self._pending[wid] = []
            self._release()
            return True
        return False

    def _release(self, final: bool = False) -> None:
        """Hand on every tick that all running workers have passed, oldest first."""
        epochs = self._epochs
        while True:
            heads = [e[0][0] for e in epochs.values() if e]
            waiting = any(not epochs[w] and w not in self._done for w in epochs)
            if not heads or (waiting and not final):
                break
            now = min(heads)
            for wid in sorted(epochs):
                if epochs[wid] and epochs[wid][0][0] == now:
                    for message in epochs[wid].popleft()[1]:
                        self._deliver(message)
            self.sessions.tick(now)
        if final:
            for wid in sorted(self._pending):
                for message in self._pending[wid]:
                    self._deliver(message)
                self._pending[wid] = []

    def _handle(self, message: tuple[str, int, Any]) -> None:
        if message[0] == "batch":  # a worker's messages, in the order it sent them
            for each in message[2]:
                self._handle(each)
            return
        if self.ordered and self._hold(message):
            return
        self._deliver(message)
        if self.ordered and message[0] == "done":
            self._release()  # the others need not wait for this worker's ticks any more

    def _deliver(self, message: tuple[str, int, Any]) -> None:
        kind, wid, payload = message
        if kind == "session":
            self.sessions.add(payload)
        elif kind == "early":
            self.verdicts.early(payload)
        elif kind == "exploit":
            self.verdicts.exploit(*payload)
        elif kind == "flow":
            self.verdicts.flow(payload)
        elif kind == "snapshot":
            self._snapshots[wid] = payload
        elif kind == "learned":
            names, _attributions = payload
            self.verdicts.learn_names(names)
            for other, inbox in self._inboxes.items():
                if other != wid:
                    inbox.put(("learned", payload))
        elif kind == "error":
            self.errors.append(payload)  # the command prints these once, as it ends
        elif kind == "done":
            self._done.add(wid)
            if payload == EXIT_SETUP_ERROR:
                self._fatal = True  # the capture cannot be opened: restarting will not help
                self.stopping = True
