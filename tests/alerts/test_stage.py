"""Alert stage: condensing repeats of one client, tool and server, then a token-bucket throttle
on packet time; nothing is dropped without being counted."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sensor.alerts.stage import RULE_UNSANCTIONED, AlertStage
from sensor.config import PolicySettings
from sensor.model import Alert, Evidence, Session
from sensor.policy.verdicts import Policy

NS = 1_000_000_000
T0 = 1_709_283_600 * NS  # 2024-03-01T09:00:00Z


def session(at_s: float = 0, **changes: Any) -> Session:
    """An unsanctioned ScreenConnect relay session starting ``at_s`` seconds after T0."""
    start = T0 + int(at_s * NS)
    base = Session(
        session_id=1,
        tool="screenconnect",
        channel="relay",
        proto=6,
        src_ip="10.20.0.21",
        src_port=50111,
        dest_ip="198.51.100.7",
        dest_port=8041,
        community_id="1:qK9gupLVYurUb3JKcJZg39nMSn4=",
        start_ns=start,
        end_ns=start + 30 * NS,
        bytes_toserver=3534,
        bytes_toclient=1856,
        pkts_toserver=19,
        pkts_toclient=16,
        server_name="support.vendor.example",
        instance="support.vendor.example",
        confidence="high",
        evidence=(Evidence("screenconnect-relay-87", "payload.client", "87151000", "high"),),
        verdict="unsanctioned",
        verdict_reason="no sanctioned entry for tool screenconnect",
        severity="high",
    )
    return dataclasses.replace(base, **changes)


class Collect:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, alert: Alert) -> None:
        self.alerts.append(alert)


def stage(window_s: int = 3600, per_minute: int = 60) -> tuple[AlertStage, Collect]:
    out = Collect()
    settings = PolicySettings(condense_window_s=window_s, max_alerts_per_minute=per_minute)
    return AlertStage(settings, out), out


# --------------------------------------------------------------------------------------------
# Condensing


def test_first_session_alerts_at_once() -> None:
    st, out = stage()
    s = session(severity="medium")
    st.session(s)
    [alert] = out.alerts
    assert alert.rule == RULE_UNSANCTIONED == "unsanctioned_rmm_session"
    assert alert.alert_id == 1
    assert alert.severity == "medium"
    assert alert.ts_ns == s.start_ns
    assert alert.session is s
    assert alert.repeats == 0
    assert alert.technique == "T1219"
    assert alert.message == (
        "unsanctioned screenconnect relay session: no sanctioned entry for tool screenconnect"
    )
    assert st.raised == {(RULE_UNSANCTIONED, "medium"): 1}


def test_repeats_in_the_window_become_one_follow_up_with_the_worst_severity() -> None:
    st, out = stage(window_s=600)
    st.session(session(0, severity="medium"))
    st.session(session(100, severity="critical"))
    st.session(session(200, severity="low"))
    assert len(out.alerts) == 1  # one alert at once, the rest only counted
    assert st.suppressed == {"condensed": 2}

    st.expire(T0 + 599 * NS)
    assert len(out.alerts) == 1  # the window is still open
    st.expire(T0 + 601 * NS)
    first, follow = out.alerts
    assert follow.repeats == 2
    assert follow.severity == "critical"
    assert follow.alert_id == first.alert_id + 1
    assert follow.last_ns == T0 + 230 * NS  # end of the last condensed session
    assert follow.session == first.session
    assert follow.message == f"{first.message} (repeated 2 more times)"
    assert st.raised == {(RULE_UNSANCTIONED, "medium"): 1, (RULE_UNSANCTIONED, "critical"): 1}


def test_follow_up_keeps_the_first_severity_when_repeats_are_milder() -> None:
    st, out = stage()
    st.session(session(0, severity="high"))
    st.session(session(10, severity="low"))
    st.flush()
    assert [(a.severity, a.repeats) for a in out.alerts] == [("high", 0), ("high", 1)]


def test_no_follow_up_without_repeats() -> None:
    st, out = stage(window_s=60)
    st.session(session(0))
    st.expire(T0 + 3600 * NS)
    st.flush()
    assert len(out.alerts) == 1
    assert st.suppressed == {}


@pytest.mark.parametrize(
    "other",
    [
        {"dest_ip": "198.51.100.17"},  # another server
        {"src_ip": "10.20.0.22"},  # another client
        {"tool": "anydesk", "channel": "relay"},  # another tool
    ],
)
def test_different_client_tool_or_server_is_not_condensed(other: dict[str, Any]) -> None:
    st, out = stage()
    st.session(session(0))
    st.session(session(5, **other))
    assert len(out.alerts) == 2
    assert st.suppressed == {}
    st.flush()
    assert len(out.alerts) == 2  # neither window had repeats


@pytest.mark.parametrize(
    "same",
    [
        {"src_port": 50999},
        {"dest_port": 8040, "channel": "web"},  # the web console of the same server
        {"community_id": "1:other"},
    ],
)
def test_same_client_tool_and_server_is_condensed(same: dict[str, Any]) -> None:
    st, out = stage()
    st.session(session(0))
    st.session(session(5, **same))
    assert len(out.alerts) == 1
    assert st.suppressed == {"condensed": 1}


def test_session_after_the_window_closes_it_and_alerts_again() -> None:
    st, out = stage(window_s=60)
    st.session(session(0))
    st.session(session(30))  # condensed
    st.session(session(60))  # exactly at the end of the window: still condensed
    st.session(session(61))  # no tick in between: this session closes the window itself
    # The follow-up is dated by the latest session it condensed.
    assert [(a.ts_ns - T0) // NS for a in out.alerts] == [0, 60, 61]
    assert [a.repeats for a in out.alerts] == [0, 2, 0]
    st.session(session(90))
    st.flush()
    assert [a.repeats for a in out.alerts] == [0, 2, 0, 1]


def test_expire_closes_only_windows_that_ended() -> None:
    st, out = stage(window_s=100)
    st.session(session(0))
    st.session(session(50, dest_ip="198.51.100.17"))
    st.session(session(10))
    st.session(session(60, dest_ip="198.51.100.17"))
    st.expire(T0 + 120 * NS)
    assert [(a.session.dest_ip, a.repeats) for a in out.alerts[2:]] == [("198.51.100.7", 1)]
    st.expire(T0 + 151 * NS)
    assert [(a.session.dest_ip, a.repeats) for a in out.alerts[2:]] == [
        ("198.51.100.7", 1),
        ("198.51.100.17", 1),
    ]
    st.flush()
    assert len(out.alerts) == 4


def test_zero_window_alerts_every_session() -> None:
    st, out = stage(window_s=0)
    for at in (0, 1, 2):
        st.session(session(at))
    assert len(out.alerts) == 3
    assert st.suppressed == {}


# --------------------------------------------------------------------------------------------
# Throttling


def client(i: int) -> str:
    return f"10.21.{i // 250}.{i % 250 + 1}"


def burst(st: AlertStage, count: int, at_s: float, spread_s: float, first: int = 0) -> None:
    """``count`` sessions within ``spread_s`` seconds, each from its own client (not condensed);
    clients are numbered from ``first``."""
    for i in range(count):
        at = at_s + spread_s * i / count
        st.session(session(at, src_ip=client(first + i)))


@pytest.mark.parametrize("limit", [1, 5, 60])
def test_burst_beyond_the_limit_is_counted_as_throttled(limit: int) -> None:
    st, out = stage(per_minute=limit)
    burst(st, limit + 5, at_s=0, spread_s=1)
    assert len(out.alerts) == limit
    assert st.suppressed == {"throttled": 5}
    assert sum(st.raised.values()) == limit
    # The alerts that went out are the first ones, in order.
    assert [a.session.src_ip for a in out.alerts] == [client(i) for i in range(limit)]


def test_bucket_refills_after_a_minute() -> None:
    st, out = stage(per_minute=10)
    burst(st, 15, at_s=0, spread_s=1)
    assert (len(out.alerts), st.suppressed) == (10, {"throttled": 5})
    burst(st, 3, at_s=2, spread_s=0.1, first=100)  # a second later: still empty
    assert st.suppressed == {"throttled": 8}
    # A minute later the bucket holds a minute's worth again, and no more.
    burst(st, 12, at_s=62, spread_s=0.1, first=200)
    assert len(out.alerts) == 20
    assert st.suppressed == {"throttled": 10}


def test_bucket_refills_at_the_rate() -> None:
    st, out = stage(per_minute=60)  # one token per second
    burst(st, 60, at_s=0, spread_s=0)
    assert len(out.alerts) == 60
    burst(st, 5, at_s=0.5, spread_s=0, first=100)  # half a token since
    assert st.suppressed == {"throttled": 5}
    burst(st, 3, at_s=3.0, spread_s=0, first=200)  # 0.5 + 2.5 s: three tokens
    assert len(out.alerts) == 63
    burst(st, 1, at_s=3.0, spread_s=0, first=300)
    assert st.suppressed == {"throttled": 6}


def test_zero_limit_means_no_throttle() -> None:
    st, out = stage(per_minute=0)
    burst(st, 500, at_s=0, spread_s=1)
    assert len(out.alerts) == 500
    assert st.suppressed == {}


def test_follow_ups_are_throttled_too() -> None:
    st, out = stage(window_s=10, per_minute=2)
    st.session(session(0))
    st.session(session(1))  # condensed
    st.session(session(2, dest_ip="198.51.100.17"))
    st.expire(T0 + 20 * NS)  # the follow-up finds the bucket nearly empty
    assert [a.repeats for a in out.alerts] == [0, 0]
    assert st.suppressed == {"condensed": 1, "throttled": 1}


def test_other_rules_get_fresh_ids_and_are_throttled() -> None:
    st, out = stage(per_minute=1)
    template = Alert(0, "vulnerable_screenconnect_server", "high", T0, "old server", session())
    st.raise_alert(template)
    st.raise_alert(template)
    assert [(a.rule, a.alert_id) for a in out.alerts] == [("vulnerable_screenconnect_server", 1)]
    assert st.suppressed == {"throttled": 1}
    assert st.raised == {("vulnerable_screenconnect_server", "high"): 1}


# --------------------------------------------------------------------------------------------
# Confidence: port-only (low) sessions get a verdict but never reach the alert stage.


@pytest.mark.parametrize("confidence", ["low", "medium", "high"])
def test_low_confidence_sessions_never_alert(confidence: str) -> None:
    policy = Policy(PolicySettings())
    st, out = stage()
    judged = policy.judge(session(confidence=confidence, verdict="", severity=""))
    assert judged.verdict == "unsanctioned"
    if policy.alertable(judged):
        st.session(judged)
    assert len(out.alerts) == (0 if confidence == "low" else 1)


def test_every_suppression_is_reported() -> None:
    reasons: list[str] = []
    out = Collect()
    settings = PolicySettings(condense_window_s=3600, max_alerts_per_minute=1)
    st = AlertStage(settings, out, reasons.append)
    st.session(session(0))
    st.session(session(1))  # condensed
    st.session(session(2, dest_ip="198.51.100.17"))  # throttled
    assert reasons == ["condensed", "throttled"]
    assert st.suppressed == {"condensed": 1, "throttled": 1}
