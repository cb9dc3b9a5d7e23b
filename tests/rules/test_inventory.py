"""Server inventory and outdated servers: one record and at most one alert per server."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sensor.analysis import RULE_OUTDATED, Verdicts
from sensor.config import PolicySettings, SanctionedEntry
from sensor.metrics import Metrics
from sensor.model import Alert, Evidence, FlowRecord, Session
from sensor.rules.inventory import Inventory

NS = 1_000_000_000
T0_NS = 1_709_283_600 * NS
SC, AD = "screenconnect", "anydesk"
VENDOR = ("198.51.100.7", 8040)
OLD = "19.2.24707.7131"
KEY = "fea249e33df7a4669c607cb1878705f1ee5b3cf9c2e29d380b4b89458758ca28"
MINIMUM = {SC: "23.9.8"}


def session(
    start_s: float = 0,
    *,
    tool: str = SC,
    channel: str = "web",
    server: tuple[str, int] = VENDOR,
    client: str = "10.20.0.61",
    attrs: dict[str, str] | None = None,
    name: str | None = "support.vendor.example",
    verdict: str = "",
    sid: int = 0,
) -> Session:
    start = T0_NS + int(start_s * NS)
    return Session(
        session_id=sid,
        tool=tool,
        channel=channel,
        proto=6,
        src_ip=client,
        src_port=50611,
        dest_ip=server[0],
        dest_port=server[1],
        community_id="1:test",
        start_ns=start,
        end_ns=start + 2 * NS,
        bytes_toserver=500,
        bytes_toclient=900,
        pkts_toserver=5,
        pkts_toclient=5,
        server_name=name,
        instance=name,
        confidence="high",
        evidence=(Evidence("screenconnect-http-server", "http.server", "x", "high"),),
        attributes=tuple((attrs if attrs is not None else {"server_version": OLD}).items()),
        flow_ids=(sid,),
        verdict=verdict,
    )


# --------------------------------------------------------------------------------------------
# The inventory


def test_first_session_makes_a_server_record() -> None:
    inv = Inventory(MINIMUM)
    attrs = {"server_version": OLD, "key_sha256": KEY, "resolved_name": "support.vendor.example"}
    server, newly = inv.observe(session(attrs=attrs, channel="download"))
    assert newly is True
    assert server is not None
    assert dataclasses.asdict(server) == {
        "tool": SC,
        "address": "198.51.100.7",
        "port": 8040,
        "names": ("support.vendor.example",),
        "version": OLD,
        "instance_key": KEY,
        "channels": ("download",),
        "first_ns": T0_NS,
        "last_ns": T0_NS + 2 * NS,
        "sessions": 1,
        "sanctioned": False,
        "outdated": True,
    }
    assert inv.servers() == [server]


def test_outdated_is_reported_once_per_server() -> None:
    inv = Inventory(MINIMUM)
    newly = [inv.observe(session(t, sid=t))[1] for t in range(10)]
    assert newly == [True] + [False] * 9
    (server,) = inv.servers()
    assert server.sessions == 10 and server.outdated
    assert inv.outdated_counts() == {SC: 1}


def test_each_server_is_its_own_record() -> None:
    inv = Inventory(MINIMUM)
    results = [
        inv.observe(session(0))[1],
        inv.observe(session(1, server=("198.51.100.7", 8041), channel="relay", attrs={}))[1],
        inv.observe(session(2, server=("10.20.5.20", 8040)))[1],
        inv.observe(session(3, tool=AD, server=("198.51.100.7", 8040), attrs={}))[1],
    ]
    assert results == [True, False, True, False]
    assert [(s.tool, s.address, s.port) for s in inv.servers()] == [
        (AD, "198.51.100.7", 8040),
        (SC, "198.51.100.7", 8040),
        (SC, "198.51.100.7", 8041),
        (SC, "10.20.5.20", 8040),
    ]
    assert inv.outdated_counts() == {SC: 2}


def test_facts_accumulate_across_sessions() -> None:
    inv = Inventory(MINIMUM)
    inv.observe(session(10, attrs={}, name=None))
    inv.observe(session(0, attrs={"key_sha256": KEY, "relay_host": "relay.vendor.example"}))
    inv.observe(session(5, channel="download", attrs={"server_version": "23.9.7.8804"}))
    server, newly = inv.observe(session(20, attrs={}, name="198.51.100.7"))  # an address: no name
    assert server is not None and newly is False
    assert server.names == ("support.vendor.example", "relay.vendor.example")
    assert server.version == "23.9.7.8804"
    assert server.instance_key == KEY
    assert server.channels == ("download", "web")
    assert (server.first_ns, server.last_ns) == (T0_NS, T0_NS + 22 * NS)
    assert server.sessions == 4 and server.outdated


def test_names_are_bounded() -> None:
    inv = Inventory(MINIMUM)
    for i in range(20):
        server, _ = inv.observe(session(i, name=f"n{i}.example"))
    assert server is not None
    assert server.names == tuple(f"n{i}.example" for i in range(8))


def test_a_sanctioned_session_makes_the_server_sanctioned() -> None:
    inv = Inventory(MINIMUM)
    inv.observe(session(0, verdict="unsanctioned"))
    assert inv.counts() == {(SC, "unsanctioned"): 1}
    inv.observe(session(1, verdict="sanctioned"))
    inv.observe(session(2, verdict="unsanctioned"))
    assert inv.counts() == {(SC, "sanctioned"): 1}
    assert inv.servers()[0].sanctioned


@pytest.mark.parametrize("channel", ["dns", "discovery"])
def test_channels_without_a_server_are_not_inventoried(channel: str) -> None:
    inv = Inventory(MINIMUM)
    assert inv.observe(session(channel=channel)) == (None, False)
    assert inv.servers() == []


@pytest.mark.parametrize("channel", ["relay", "web", "download", "direct"])
def test_server_channels_are_inventoried(channel: str) -> None:
    server, _ = Inventory(MINIMUM).observe(session(channel=channel))
    assert server is not None and server.channels == (channel,)


@pytest.mark.parametrize(
    ("minimum", "version", "outdated"),
    [
        ({SC: "23.9.8"}, "23.9.7.8804", True),
        ({SC: "23.9.8"}, "23.9.8.8811-2863243764", False),
        ({SC: "23.9.8"}, "24.1", False),
        ({SC: "23.9.8"}, "garbage", False),
        ({SC: "19.0"}, OLD, False),
        ({SC: "24.1"}, "23.9.8", True),
        ({}, OLD, False),  # no minimum for the tool: never outdated
        ({AD: "9.0"}, OLD, False),
    ],
)
def test_minimum_versions(minimum: dict[str, str], version: str, outdated: bool) -> None:
    server, newly = Inventory(minimum).observe(session(attrs={"server_version": version}))
    assert server is not None
    assert (server.outdated, newly) == (outdated, outdated)


def test_a_raised_minimum_reports_a_server_again() -> None:
    inv = Inventory({SC: "19.0"})
    assert inv.observe(session(0))[1] is False
    inv.minimum_versions = {SC: "23.9.8"}
    assert inv.observe(session(1))[1] is True


def test_an_upgraded_server_is_no_longer_outdated() -> None:
    inv = Inventory(MINIMUM)
    inv.observe(session(0))
    server, newly = inv.observe(session(1, attrs={"server_version": "24.1.0.8811"}))
    assert server is not None and not server.outdated and not newly
    assert inv.outdated_counts() == {}


def test_a_session_seen_before_is_not_counted_again() -> None:
    inv = Inventory(MINIMUM)
    inv.observe(session(0, attrs={}))
    server, newly = inv.observe(session(0), new_session=False)
    assert server is not None and server.sessions == 1
    assert newly is True  # the version came with the final record


def test_the_table_is_bounded_dropping_the_least_recent() -> None:
    inv = Inventory(MINIMUM, max_servers=3)
    for i in range(5):
        inv.observe(session(i, server=(f"198.51.100.{i}", 8040)))
    assert inv.evicted == 2
    assert [s.address for s in inv.servers()] == ["198.51.100.2", "198.51.100.3", "198.51.100.4"]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(["19.2.24707.7131", "23.9.7.8804", "23.9.8", "24.1", "", "x"]),
            st.sampled_from(["web", "relay", "download", "dns"]),
        ),
        max_size=40,
    )
)
def test_at_most_one_newly_outdated_while_the_version_stays_old(
    events: list[tuple[int, str, str]],
) -> None:
    inv = Inventory(MINIMUM, max_servers=2)
    for i, (server, version, channel) in enumerate(events):
        attrs = {"server_version": version} if version else {}
        before = {(s.address, s.port): s.outdated for s in inv.servers()}
        got, newly = inv.observe(
            session(i, server=(f"198.51.100.{server}", 8040), attrs=attrs, channel=channel)
        )
        if got is None:
            assert channel == "dns" and not newly
            continue
        assert newly == (got.outdated and not before.get((got.address, got.port), False))
        assert len(inv.servers()) <= 2


# --------------------------------------------------------------------------------------------
# In the verdict stage


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


def outdated(sink: Collect) -> list[Alert]:
    return [a for a in sink.alerts if a.rule == RULE_OUTDATED]


@pytest.mark.parametrize("sanctioned", [True, False])
def test_one_outdated_alert_per_server_with_many_sessions(sanctioned: bool) -> None:
    entry = SanctionedEntry(name="vendor", tool=SC, hosts=("support.vendor.example",))
    policy = PolicySettings(sanctioned=(entry,) if sanctioned else ())
    sink = Collect()
    registry = CollectorRegistry()
    verdicts = Verdicts(policy, [sink], Metrics(registry))
    for i in range(6):
        verdicts.session(session(i * 600, sid=i))
    verdicts.session(session(4000, server=("10.20.5.20", 8040), name="control.clinic.example"))
    verdicts.finish()
    alerts = outdated(sink)
    assert [(a.session.dest_ip, a.severity) for a in alerts] == [
        ("198.51.100.7", "high"),
        ("10.20.5.20", "high"),
    ]
    assert alerts[0].message == (
        "screenconnect server 198.51.100.7:8040 (support.vendor.example) runs version "
        "19.2.24707.7131, older than 23.9.8"
    )
    assert alerts[0].session.verdict == ("sanctioned" if sanctioned else "unsanctioned")
    assert registry.get_sample_value("rmm_sensor_outdated_servers", {"tool": SC}) == 2
    servers = {
        verdict: registry.get_sample_value("rmm_sensor_servers", {"tool": SC, "verdict": verdict})
        for verdict in ("sanctioned", "unsanctioned")
    }
    assert servers == (
        {"sanctioned": 1, "unsanctioned": 1}
        if sanctioned
        else {"sanctioned": None, "unsanctioned": 2}
    )


def test_minimum_versions_from_the_policy_and_a_reload() -> None:
    sink = Collect()
    verdicts = Verdicts(PolicySettings(minimum_versions={SC: "19.0"}), [sink])
    verdicts.session(session(0, sid=1))
    assert outdated(sink) == []
    verdicts.reconfigure(PolicySettings(minimum_versions={SC: "20.0"}))
    verdicts.session(session(1, sid=2))
    (alert,) = outdated(sink)
    assert alert.message.endswith("runs version 19.2.24707.7131, older than 20.0")


def test_a_version_in_the_final_record_of_an_early_session_still_alerts() -> None:
    """Live: the session was first seen before the response with the Server header came."""
    sink = Collect()
    verdicts = Verdicts(PolicySettings(allowed_tools=(SC,)), [sink])
    early = session(0, attrs={}, sid=7)
    verdicts.early(early)
    assert outdated(sink) == []
    verdicts.session(dataclasses.replace(early, attributes=(("server_version", OLD),)))
    assert len(outdated(sink)) == 1
    assert verdicts.inventory.servers()[0].sessions == 1  # still one session
