"""Chaining: one host, two remote-access tools, sessions starting within the window (§1.9)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sensor.analysis import RULE_CHAIN, Verdicts
from sensor.config import PolicySettings, SanctionedEntry
from sensor.metrics import Metrics
from sensor.model import Alert, Evidence, FlowRecord, Session
from sensor.rules.chains import ChainTracker

NS = 1_000_000_000
T0_NS = 1_709_283_600 * NS
WINDOW_S = 3600
SC, AD = "screenconnect", "anydesk"
HOST = "10.20.0.61"


def session(
    tool: str, start_s: float, host: str = HOST, channel: str = "relay", sid: int = 0
) -> Session:
    start = T0_NS + int(start_s * NS)
    server = {SC: ("198.51.100.7", 8041), AD: ("203.0.113.45", 443)}.get(tool, ("192.0.2.9", 1))
    return Session(
        session_id=sid,
        tool=tool,
        channel=channel,
        proto=6,
        src_ip=host,
        src_port=50612,
        dest_ip=server[0],
        dest_port=server[1],
        community_id="1:test",
        start_ns=start,
        end_ns=start + 60 * NS,
        bytes_toserver=1000,
        bytes_toclient=2000,
        pkts_toserver=10,
        pkts_toclient=10,
        server_name=None,
        instance=f"{tool}-instance",
        confidence="high",
        evidence=(Evidence(f"{tool}-sig", "payload", "x", "high"),),
        flow_ids=(sid,),
    )


def feed(tracker: ChainTracker, sessions: list[Session]) -> list[tuple[str, float, str, float]]:
    """Every chain raised, as (first tool, its start, second tool, its start) in seconds."""
    out = []
    for s in sessions:
        for first, second in tracker.observe(s):
            out.append(
                (
                    first.tool,
                    (first.start_ns - T0_NS) / NS,
                    second.tool,
                    (second.start_ns - T0_NS) / NS,
                )
            )
    return out


# --------------------------------------------------------------------------------------------
# The tracker


@pytest.mark.parametrize(
    ("gap_s", "chained"),
    [(0, True), (1, True), (3599, True), (3600, True), (3600.000000001, False), (3601, False)],
)
def test_window_boundary(gap_s: float, chained: bool) -> None:
    got = feed(ChainTracker(WINDOW_S), [session(SC, 0), session(AD, gap_s)])
    assert got == ([(SC, 0, AD, gap_s)] if chained else [])


@pytest.mark.parametrize("gap_s", [1, 100, 3600])
def test_order_of_arrival_does_not_matter(gap_s: float) -> None:
    """A long session is reported when it ends, after a later short one."""
    got = feed(ChainTracker(WINDOW_S), [session(AD, gap_s), session(SC, 0)])
    assert got == [(SC, 0, AD, gap_s)]


def test_one_tool_alone_never_chains() -> None:
    assert feed(ChainTracker(WINDOW_S), [session(SC, t) for t in range(0, 20_000, 500)]) == []


def test_once_per_host_and_tool_pair_per_window() -> None:
    sessions = [session(SC, 0), session(AD, 100), session(AD, 200), session(SC, 150)]
    sessions += [session(AD, 100 + 3600), session(AD, 100 + 3601)]
    got = feed(ChainTracker(WINDOW_S), sessions)
    assert got == [
        (SC, 0, AD, 100),
        (AD, 100, SC, 150),  # the other order is its own pair
        (SC, 150, AD, 3701),  # a window after the first chain's second session
    ]


def test_hosts_are_independent() -> None:
    sessions = [session(SC, 0, host="10.20.0.61"), session(AD, 10, host="10.20.0.62")]
    sessions += [session(AD, 20, host="10.20.0.61"), session(SC, 30, host="10.20.0.62")]
    got = feed(ChainTracker(WINDOW_S), sessions)
    assert got == [(SC, 0, AD, 20), (AD, 10, SC, 30)]


def test_repeated_use_chains_with_the_latest_session() -> None:
    # The earliest ScreenConnect session is 4000 s before AnyDesk, the latest 1000 s.
    got = feed(ChainTracker(WINDOW_S), [session(SC, 0), session(SC, 3000), session(AD, 4000)])
    assert got == [(SC, 3000, AD, 4000)]


def test_late_session_chains_with_the_earliest() -> None:
    # A long AnyDesk session that started at 100 s is reported after ScreenConnect at 5000 s.
    got = feed(ChainTracker(WINDOW_S), [session(SC, 0), session(SC, 5000), session(AD, 100)])
    assert got == [(SC, 0, AD, 100)]


def test_three_tools_make_every_pair() -> None:
    got = feed(ChainTracker(WINDOW_S), [session(SC, 0), session(AD, 10), session("rustdesk", 20)])
    assert got == [(SC, 0, AD, 10), (SC, 0, "rustdesk", 20), (AD, 10, "rustdesk", 20)]


def test_zero_window_needs_the_same_start() -> None:
    tracker = ChainTracker(0)
    assert feed(tracker, [session(SC, 0), session(AD, 0.5)]) == []
    assert feed(tracker, [session("rustdesk", 0)]) == [(SC, 0, "rustdesk", 0)]


@given(
    st.lists(
        st.tuples(st.sampled_from([SC, AD, "rustdesk"]), st.integers(0, 20_000), st.integers(1, 3)),
        max_size=40,
    )
)
def test_every_chain_is_two_tools_of_one_host_within_the_window(
    events: list[tuple[str, int, int]],
) -> None:
    tracker = ChainTracker(WINDOW_S)
    raised: dict[tuple[str, str, str], list[int]] = {}
    for tool, start, host in events:
        for first, second in tracker.observe(session(tool, start, host=f"10.20.0.{host}")):
            assert first.src_ip == second.src_ip
            assert first.tool != second.tool
            assert 0 <= second.start_ns - first.start_ns <= WINDOW_S * NS
            raised.setdefault((first.src_ip, first.tool, second.tool), []).append(second.start_ns)
    for starts in raised.values():
        # Once per window: second sessions of repeated chains are more than a window apart.
        assert all(b - a > WINDOW_S * NS for a, b in itertools.pairwise(starts))


# --------------------------------------------------------------------------------------------
# In the verdict stage: sanctioned or not, with an alert, a related session and a metric


class Collect:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def flow(self, record: FlowRecord) -> None:
        pass

    def session(self, s: Session) -> None:
        pass

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def close(self) -> None:
        pass


SANCTION_SC = SanctionedEntry(name="vendor", tool=SC, ports=(8041,))


@pytest.mark.parametrize(
    ("sanctioned", "rules"),
    [
        ((), [RULE_CHAIN, "unsanctioned_rmm_session", "unsanctioned_rmm_session"]),
        ((SANCTION_SC,), [RULE_CHAIN, "unsanctioned_rmm_session"]),
    ],
)
def test_sanctioned_sessions_count_towards_a_chain(
    sanctioned: tuple[SanctionedEntry, ...], rules: list[str]
) -> None:
    sink = Collect()
    registry = CollectorRegistry()
    verdicts = Verdicts(PolicySettings(sanctioned=sanctioned), [sink], Metrics(registry))
    verdicts.session(session(SC, 0, sid=1))
    verdicts.session(session(AD, 780, sid=2))
    verdicts.finish()
    assert sorted(a.rule for a in sink.alerts) == sorted(rules)
    (chain,) = [a for a in sink.alerts if a.rule == RULE_CHAIN]
    assert chain.severity == "high"
    assert chain.session.tool == AD and chain.related is not None
    assert chain.related.tool == SC
    assert chain.related.verdict == ("sanctioned" if sanctioned else "unsanctioned")
    assert chain.ts_ns == T0_NS + 780 * NS
    assert chain.message == (
        "10.20.0.61 used screenconnect (relay, screenconnect-instance) and then anydesk "
        "(relay, anydesk-instance) within 780 s"
    )
    value = registry.get_sample_value(
        "rmm_sensor_chains_total", {"first_tool": SC, "second_tool": AD}
    )
    assert value == 1


def test_window_comes_from_the_policy_and_a_reload() -> None:
    sink = Collect()
    verdicts = Verdicts(PolicySettings(chain_window_s=60, allowed_tools=(SC, AD)), [sink])
    verdicts.session(session(SC, 0, sid=1))
    verdicts.session(session(AD, 61, sid=2))
    assert sink.alerts == []
    verdicts.reconfigure(PolicySettings(chain_window_s=120, allowed_tools=(SC, AD)))
    verdicts.session(session(AD, 119, sid=3, host=HOST))
    assert [a.rule for a in sink.alerts] == [RULE_CHAIN]  # allowed tools: no other alert


def test_a_session_seen_early_is_chained_once() -> None:
    sink = Collect()
    verdicts = Verdicts(PolicySettings(allowed_tools=(SC, AD)), [sink])
    verdicts.session(session(SC, 0, sid=1))
    early = session(AD, 30, sid=2)
    verdicts.early(early)  # live: while its flow runs
    verdicts.session(early)  # and its final record when it ends
    assert [a.rule for a in sink.alerts] == [RULE_CHAIN]
