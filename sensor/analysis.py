"""Wires the stages behind the engine in a fixed, visible order.

  Detection (one per worker process):
    engine (decode, flows, parsers) -> flow record
      -> on_flow                         (every flow, when --flows)
      -> detector.detect                 (signatures -> evidence)
      -> sessions.add                    (evidence of one or more flows -> one session)
      -> on_session
  Verdicts (once per sensor, so the policy and alert limits are global):
      -> policy.judge                    (sanctioned or not, severity)
      -> sinks.session, metrics
      -> alerts (condense -> throttle)   (unsanctioned and confident enough)
      -> sinks.alert, metrics

DNS answers reach the detector as soon as they are parsed, before the flows they name end, so
relays reached without SNI can be attributed.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from sensor.alerts.stage import AlertStage
from sensor.capture.files import Frame
from sensor.config import PolicySettings
from sensor.counters import EngineSnapshot, protocol_label
from sensor.fingerprints.attribution import NameCache
from sensor.flows.table import FlowSettings
from sensor.model import Alert, FlowRecord, Session
from sensor.pipeline import Engine
from sensor.policy.verdicts import Policy
from sensor.protocols.dns import DnsMessage
from sensor.rules.chains import ChainTracker
from sensor.rules.exploits import Exploit, ExploitDetector, exploit_session
from sensor.rules.inventory import Inventory

if TYPE_CHECKING:  # the Prometheus library is imported only by runs that write metrics
    from sensor.metrics import Metrics

MAX_EARLY: Final = 1_000_000  # flow ids remembered between early and final session records
NS: Final = 1_000_000_000
RULE_OUTDATED: Final = "outdated_rmm_server"
RULE_CHAIN: Final = "rmm_chain"
RULE_EXPLOIT: Final = "rmm_exploit_attempt"


class Sink(Protocol):
    def flow(self, record: FlowRecord) -> None: ...
    def session(self, session: Session) -> None: ...
    def alert(self, alert: Alert) -> None: ...
    def close(self) -> None: ...


class Detector(Protocol):
    def dns_answer(self, ts_ns: int, client: bytes, message: DnsMessage) -> None: ...
    def detect(self, record: FlowRecord) -> Session | None: ...


class SessionStage(Protocol):
    def add(self, session: Session) -> list[Session]: ...
    def expire(self, now_ns: int) -> list[Session]: ...
    def flush(self) -> list[Session]: ...


class Detection:
    """One engine and the stages that turn its flows into per-flow sessions."""

    def __init__(
        self,
        settings: FlowSettings,
        detector: Detector,
        on_session: Callable[[Session], None],
        on_flow: Callable[[FlowRecord], None] | None = None,
        on_tick: Callable[[int], None] | None = None,
        shard: tuple[int, int] = (0, 1),
        on_early: Callable[[Session], None] | None = None,
        worker: tuple[int, int] = (0, 1),
        on_exploit: Callable[[Exploit, Session], None] | None = None,
    ) -> None:
        identified = self._on_identified if on_early is not None else None
        self.engine = Engine(
            settings, self._on_flow, self._on_dns, self._tick, shard, identified, worker
        )
        self.on_early = on_early
        self.on_exploit = on_exploit
        self.exploits = ExploitDetector()
        self.detector = detector
        self.on_session = on_session
        self.on_flow = on_flow
        self.on_tick = on_tick

    def run(self, frames: Iterable[Frame]) -> None:
        self.engine.run(frames)

    def finish(self) -> None:
        """End all flows."""
        self.engine.flush()

    def snapshot(self) -> EngineSnapshot:
        e = self.engine
        t = e.table
        return EngineSnapshot(
            packets=e.stats.packets,
            bytes=e.stats.bytes,
            non_ip=e.stats.non_ip,
            decode_errors=tuple(e.stats.decode_errors.items()),
            other_protocols=_by_label(e.stats.other_protocols),
            parse_errors=tuple(e.inspector.parse_errors.items()),
            flows_created=t.created,
            flows_active=t.active,
            flows_ended=tuple(t.ended_by.items()),
            last_packet_ns=e.stats.last_packet_ns,
        )

    def _on_dns(self, ts: int, client: bytes, message: DnsMessage) -> None:
        self.detector.dns_answer(ts, client, message)

    def _on_identified(self, record: FlowRecord) -> None:
        """A running flow's first bytes are in: report its session now, not when it ends."""
        session = self.detector.detect(record)
        if session is not None and self.on_early is not None:
            self.on_early(session)

    def _on_flow(self, record: FlowRecord) -> None:
        if self.on_flow is not None:
            self.on_flow(record)
        if self.on_exploit is not None and record.http is not None:
            for exploit in self.exploits.check(record):
                self.on_exploit(exploit, exploit_session(record, exploit))
        session = self.detector.detect(record)
        if session is not None:
            self.on_session(session)

    def _tick(self, now_ns: int) -> None:
        if self.on_tick is not None:
            self.on_tick(now_ns)


class Sessions:
    """Per-flow sessions -> whole sessions -> verdicts; one per sensor (after the workers), so
    the connections of one session are joined whichever worker saw them."""

    def __init__(self, builder: SessionStage, verdicts: Verdicts) -> None:
        self.builder = builder
        self.verdicts = verdicts
        self._arrived: list[Session] = []

    def add(self, session: Session) -> None:
        # Held until the tick: flows that end at one tick of packet time are joined and judged
        # in one fixed order, whichever worker (and in whatever order) reported them.
        self._arrived.append(session)

    def tick(self, now_ns: int) -> None:
        """Join what arrived; hand on sessions nothing joined for a while; close alert windows."""
        self._join_arrived()
        for done in self.builder.expire(now_ns):
            self.verdicts.session(done)
        self.verdicts.tick(now_ns)

    def finish(self) -> None:
        self._join_arrived()
        for done in self.builder.flush():
            self.verdicts.session(done)
        self.verdicts.finish()

    def _join_arrived(self) -> None:
        arrived, self._arrived = self._arrived, []
        for session in sorted(arrived, key=_arrival_order):
            for done in self.builder.add(session):
                self.verdicts.session(done)


def _arrival_order(s: Session) -> tuple[int, str, int, str, int, str, str, tuple[int, ...]]:
    return (s.start_ns, s.src_ip, s.src_port, s.dest_ip, s.dest_port, s.tool, s.channel,
            s.flow_ids)  # fmt: skip


class Verdicts:
    """Policy, alerts, outputs and session/alert metrics.

    Live, a session is first seen *early* (while its flow runs): it is counted and may alert
    then. When its flows end, the final record is written; it is neither counted nor alerted
    again. Offline, only final records arrive.
    """

    def __init__(
        self, settings: PolicySettings, sinks: Sequence[Sink], metrics: Metrics | None = None
    ) -> None:
        self.policy = Policy(settings)
        self.alerts = AlertStage(settings, self._on_alert, self._on_suppressed)
        self.sinks = sinks
        self.metrics = metrics
        self.session_counts: dict[str, int] = {}
        self.alert_count = 0
        self.inventory = Inventory(dict(settings.minimum_versions))
        # Names any worker resolved for an address: a session seen by one worker may need the
        # DNS answer another worker saw to match a sanctioned entry's hosts.
        self.names = NameCache()
        self.chains = ChainTracker(settings.chain_window_s)
        self._ids = itertools.count(1)
        # Flows whose session was already counted (and alerted) early, with its tool.
        self._early: OrderedDict[int, str] = OrderedDict()

    def reconfigure(self, settings: PolicySettings) -> None:
        """Judge sessions from now on with a new policy (a reload)."""
        self.policy = Policy(settings)
        self.alerts.settings = settings
        self.inventory.minimum_versions = dict(settings.minimum_versions)
        self.chains.window = settings.chain_window_s * NS

    def exploit(self, exploit: Exploit, session: Session) -> None:
        """An exploitation attempt against (or by) one of the hosts we watch."""
        session = self.policy.judge(session)
        if self.metrics is not None:
            self.metrics.exploit_attempts.labels(exploit.cve).inc()
        message = (
            f"{exploit.cve} exploitation attempt against {session.dest_ip}:{session.dest_port}"
            f" from {session.src_ip}: {exploit.request_line} ({exploit.detail})"
        )
        self.alerts.raise_alert(Alert(0, RULE_EXPLOIT, "critical", exploit.ts_ns, message, session))

    def flow(self, record: FlowRecord) -> None:
        for sink in self.sinks:
            sink.flow(record)

    def learn_names(self, names: list[tuple[str, str]]) -> None:
        for address, name in names:
            self.names.remember(address, name)

    def _named(self, session: Session) -> Session:
        if session.channel == "dns" or any(k == "resolved_name" for k, _ in session.attributes):
            return session
        name = self.names.name(session.dest_ip)
        if name is None:
            return session
        return dataclasses.replace(
            session,
            attributes=(*session.attributes, ("resolved_name", name)),
            server_name=session.server_name or name,
        )

    def early(self, session: Session) -> None:
        """A session seen while its flow still runs: count it and alert now."""
        if any(f in self._early for f in session.flow_ids):
            return
        session = self.policy.judge(self._named(session))
        for flow_id in session.flow_ids:
            self._early[flow_id] = session.tool
        while len(self._early) > MAX_EARLY:
            self._early.popitem(last=False)
        self._count(session)
        self._active(session.tool, 1)
        self._first_sight(session)
        if self.policy.alertable(session):
            self.alerts.session(session)

    def session(self, session: Session) -> None:
        """A finished session: write it; count and alert unless that happened early."""
        session = dataclasses.replace(self._named(session), session_id=next(self._ids))
        session = self.policy.judge(session)
        seen = [f for f in session.flow_ids if f in self._early]
        for flow_id in seen:
            self._active(self._early.pop(flow_id), -1)
        if self.metrics is not None:
            m = self.metrics
            m.session_bytes.labels(session.tool, "toserver").inc(session.bytes_toserver)
            m.session_bytes.labels(session.tool, "toclient").inc(session.bytes_toclient)
        if not seen:
            self._count(session)
            self._first_sight(session)
        else:
            # Seen early: the final record may still bring the version (a later response).
            self._inventory(session, new_session=False)
        for sink in self.sinks:
            sink.session(session)
        if not seen and self.policy.alertable(session):
            self.alerts.session(session)

    def _first_sight(self, session: Session) -> None:
        """Inventory (outdated servers) and chaining, once per session, sanctioned or not."""
        self._inventory(session, new_session=True)
        for first, second in self.chains.observe(session):
            message = (
                f"{second.src_ip} used {first.tool} ({first.channel}, "
                f"{first.instance or first.dest_ip}) and then {second.tool} ({second.channel}, "
                f"{second.instance or second.dest_ip}) within "
                f"{(second.start_ns - first.start_ns) // NS} s"
            )
            self.alerts.raise_alert(
                Alert(0, RULE_CHAIN, "high", second.start_ns, message, second, related=first)
            )
            if self.metrics is not None:
                self.metrics.chains.labels(first.tool, second.tool).inc()

    def _inventory(self, session: Session, new_session: bool) -> None:
        """Record the session's server; alert the first time it is known to be outdated."""
        server, newly_outdated = self.inventory.observe(session, new_session)
        if server is not None and newly_outdated:
            minimum = dict(self.policy.settings.minimum_versions).get(server.tool, "")
            message = (
                f"{server.tool} server {server.address}:{server.port} "
                f"({', '.join(server.names) or 'no name seen'}) runs version {server.version}, "
                f"older than {minimum}"
            )
            alert = Alert(0, RULE_OUTDATED, "high", session.start_ns, message, session)
            self.alerts.raise_alert(alert)
        if self.metrics is not None:
            for (tool, verdict), n in self.inventory.counts().items():
                self.metrics.servers.labels(tool, verdict).set(n)
            outdated = self.inventory.outdated_counts()
            for tool in {s.tool for s in self.inventory.servers()}:
                self.metrics.outdated_servers.labels(tool).set(outdated.get(tool, 0))

    def _count(self, session: Session) -> None:
        self.session_counts[session.verdict] = self.session_counts.get(session.verdict, 0) + 1
        if self.metrics is not None:
            self.metrics.sessions.labels(session.tool, session.channel, session.verdict).inc()

    def _active(self, tool: str, delta: int) -> None:
        if self.metrics is not None:
            self.metrics.sessions_active.labels(tool).inc(delta)

    def tick(self, now_ns: int) -> None:
        self.alerts.expire(now_ns)

    def finish(self) -> None:
        self.alerts.flush()
        for sink in self.sinks:
            sink.close()

    def _on_suppressed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_suppressed.labels(reason).inc()

    def _on_alert(self, alert: Alert) -> None:
        self.alert_count += 1
        if self.metrics is not None:
            self.metrics.alerts.labels(alert.rule, alert.severity).inc()
        for sink in self.sinks:
            sink.alert(alert)


def _by_label(counts: dict[int, int]) -> tuple[tuple[str, int], ...]:
    out: dict[str, int] = {}
    for proto, n in counts.items():
        label = protocol_label(proto)
        out[label] = out.get(label, 0) + n
    return tuple(out.items())
