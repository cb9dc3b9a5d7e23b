"""Alert stage, after the verdict: condense, then throttle, then hand to the outputs.

Condensing: the first unsanctioned session of a (client, tool, instance) raises an alert at once;
later ones within ``condense_window_s`` are only counted, and when the window closes one follow-up
alert reports how many there were. Throttling: at most ``max_alerts_per_minute`` alerts per
minute of packet time (a token bucket); the rest are counted as suppressed, never silently lost.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

from sensor.config import PolicySettings
from sensor.model import Alert, Session

NS = 1_000_000_000
RULE_UNSANCTIONED = "unsanctioned_rmm_session"
SEVERITY_ORDER = ("low", "medium", "high", "critical")

CondenseKey = tuple[str, str, str]  # client, tool, server


@dataclasses.dataclass(slots=True)
class _Window:
    alert: Alert
    until_ns: int
    repeats: int = 0
    last_ns: int = 0
    severity: str = ""
    last_start_ns: int = 0


class AlertStage:
    def __init__(
        self,
        settings: PolicySettings,
        emit: Callable[[Alert], None],
        on_suppressed: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.emit = emit
        self.on_suppressed = on_suppressed
        self.raised: dict[tuple[str, str], int] = {}  # (rule, severity) -> count
        self.suppressed: dict[str, int] = {}  # reason -> count
        self._windows: dict[CondenseKey, _Window] = {}
        self._ids = itertools.count(1)
        self._tokens = float(settings.max_alerts_per_minute)
        self._refill_ns = 0

    def session(self, s: Session) -> None:
        """A judged session the policy says must alert."""
        key = (s.src_ip, s.tool, s.dest_ip)
        window = self._windows.get(key)
        if window is not None and s.start_ns <= window.until_ns:
            window.repeats += 1
            window.last_ns = max(window.last_ns, s.end_ns)
            window.last_start_ns = max(window.last_start_ns, s.start_ns)
            window.severity = _worse(window.severity, s.severity)
            self._suppress("condensed")
            return
        if window is not None:
            self._close(key, window)
        alert = Alert(
            alert_id=next(self._ids),
            rule=RULE_UNSANCTIONED,
            severity=s.severity or "medium",
            ts_ns=s.start_ns,
            message=f"unsanctioned {s.tool} {s.channel} session: {s.verdict_reason}",
            session=s,
        )
        until = s.start_ns + self.settings.condense_window_s * NS
        self._windows[key] = _Window(alert, until, 0, s.end_ns, alert.severity)
        self._send(alert)

    def raise_alert(self, alert: Alert) -> None:
        """An alert from another rule (inventory, exploitation, chains): throttled only."""
        self._send(dataclasses.replace(alert, alert_id=next(self._ids)))

    def expire(self, now_ns: int) -> None:
        for key in [k for k, w in self._windows.items() if w.until_ns < now_ns]:
            self._close(key, self._windows[key])

    def flush(self) -> None:
        for key in list(self._windows):
            self._close(key, self._windows[key])

    def _close(self, key: CondenseKey, window: _Window) -> None:
        del self._windows[key]
        if window.repeats:
            follow = dataclasses.replace(
                window.alert,
                alert_id=next(self._ids),
                ts_ns=window.last_start_ns or window.alert.ts_ns,  # when the latest repeat began
                repeats=window.repeats,
                last_ns=window.last_ns,
                severity=_worse(window.alert.severity, window.severity),
                message=f"{window.alert.message} (repeated {window.repeats} more times)",
            )
            self._send(follow)

    def _suppress(self, reason: str) -> None:
        self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
        if self.on_suppressed is not None:
            self.on_suppressed(reason)

    def _send(self, alert: Alert) -> None:
        limit = self.settings.max_alerts_per_minute
        if limit:
            # Token bucket on packet time: bursts up to a minute's worth, then the rate.
            elapsed = max(0, alert.ts_ns - self._refill_ns)
            self._refill_ns = max(self._refill_ns, alert.ts_ns)
            self._tokens = min(float(limit), self._tokens + elapsed * limit / (60 * NS))
            if self._tokens < 1:
                self._suppress("throttled")
                return
            self._tokens -= 1
        key = (alert.rule, alert.severity)
        self.raised[key] = self.raised.get(key, 0) + 1
        self.emit(alert)


def _worse(a: str, b: str) -> str:
    return max(a, b, key=lambda s: SEVERITY_ORDER.index(s) if s in SEVERITY_ORDER else -1)
