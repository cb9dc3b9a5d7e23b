"""Where records go: JSON lines (streamed as they happen) or tables (printed at the end)."""

from __future__ import annotations

from typing import TextIO

from sensor.model import Alert, FlowRecord, Session
from sensor.output import eve, table


class JsonLinesSink:
    def __init__(self, out: TextIO, flows: bool) -> None:
        self.out = out
        self.flows = flows

    def flow(self, record: FlowRecord) -> None:
        if self.flows:
            self.out.write(eve.flow_json(record) + "\n")

    def session(self, session: Session) -> None:
        self.out.write(eve.dumps(eve.session_event(session)) + "\n")
        self.out.flush()  # a reader at the end of a pipe sees sessions as they happen

    def alert(self, alert: Alert) -> None:
        self.out.write(eve.dumps(eve.alert_event(alert)) + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


class TableSink:
    def __init__(self, out: TextIO, flows: bool) -> None:
        self.out = out
        self.flows = flows
        self._flows: list[FlowRecord] = []
        self._sessions: list[Session] = []
        self._alerts: list[Alert] = []

    def flow(self, record: FlowRecord) -> None:
        if self.flows:
            self._flows.append(record)

    def session(self, session: Session) -> None:
        self._sessions.append(session)

    def alert(self, alert: Alert) -> None:
        self._alerts.append(alert)

    def close(self) -> None:
        out = self.out
        if self.flows:
            out.write(f"Flows ({len(self._flows)})\n")
            flows = sorted(self._flows, key=lambda f: (f.start_ns, f.flow_id))
            table.render(table.FLOW_HEADERS, table.flow_rows(flows), out)
            out.write("\n")
        # In time order: a follow-up alert (sessions condensed while it waited) is only written
        # when its window closes, after alerts of later sessions.
        out.write(f"Remote-access sessions ({len(self._sessions)})\n")
        if self._sessions:
            sessions = sorted(self._sessions, key=lambda s: (s.start_ns, s.session_id))
            table.render(table.SESSION_HEADERS, table.session_rows(sessions), out)
        out.write(f"\nAlerts ({len(self._alerts)})\n")
        if self._alerts:
            alerts = sorted(self._alerts, key=lambda a: (a.ts_ns, a.alert_id))
            table.render(table.ALERT_HEADERS, table.alert_rows(alerts), out)
        out.flush()
