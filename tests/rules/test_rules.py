"""Inventory, outdated servers, exploitation and chaining, end to end on the project captures.

`rmm-sensor analyze --format json` (and `inventory`) run in-process on incident-2023.pcap (the
2023 pharmacy incident, protocols.md §1.9) and the two ScreenConnect exploitation captures
(§1.7), with and without the vendor allowlisted. The first section checks that the captures
hold what pcaps/README.md says, so a failure below points at the sensor, not at the file.
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import itertools
import json
import signal
import textwrap
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from sensor.cli import main
from tests.test_pcaps import (
    ALLOWED_NETS,
    T0_US,
    Connection,
    assert_anydesk_client_cert,
    checksum_ok,
    conn_to,
    connections,
    dns_answers,
    packets,
    tls_view,
    transport_checksum_ok,
)

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT / "pcaps"
SIGNATURES = ROOT / "signatures"
INCIDENT = "incident-2023.pcap"
CVE_1709 = "sc-exploit-cve-2024-1709.pcap"
CVE_1708 = "sc-exploit-cve-2024-1708.pcap"
NEW_FILES = [INCIDENT, CVE_1709, CVE_1708]

PHARMACY = "10.20.0.61"
VENDOR = ("198.51.100.7", 8040)
VENDOR_RELAY = ("198.51.100.7", 8041)
ANYDESK_RELAY = ("203.0.113.45", 443)
CLINIC = ("10.20.5.20", 8040)
OTHER = ("198.51.100.80", 8040)
ATTACKER = "203.0.113.66"
INSIDER = "10.20.0.71"
TECHNICIAN = "10.20.0.41"
VENDOR_KEY = "fea249e33df7a4669c607cb1878705f1ee5b3cf9c2e29d380b4b89458758ca28"

WIZARD_LINE = "GET /SetupWizard.aspx/literallyanything HTTP/1.1"
HANDLER_LINE = "POST /App_Extensions/evil.ashx HTTP/1.1"
INSTALL_LINE = "POST /Services/ExtensionService.ashx/InstallExtension HTTP/1.1"

OUTDATED = "outdated_rmm_server"
CHAIN = "rmm_chain"
EXPLOIT = "rmm_exploit_attempt"
UNSANCTIONED = "unsanctioned_rmm_session"

VENDOR_ALLOWED = """
    sanctioned:
      - name: vendor-support
        tool: screenconnect
        hosts: [support.vendor.example]
        addresses: [198.51.100.7/32]
"""

Event = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Running the command line


@dataclass(frozen=True)
class Run:
    code: int
    events: list[Event]
    metrics: str

    def alerts(self, rule: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if e["event_type"] == "alert" and rule in (None, e["alert"]["signature"])
        ]

    @property
    def sessions(self) -> list[Event]:
        return [e for e in self.events if e["event_type"] == "session"]

    def rules(self) -> Counter[str]:
        return Counter(a["alert"]["signature"] for a in self.alerts())

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the --metrics-out file (counters by their _total sample name)."""
        for family in text_string_to_metric_families(self.metrics):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        raise AssertionError(f"no sample {name}{labels}")


def cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of one in-process `rmm-sensor` run."""
    out, err = io.StringIO(), io.StringIO()
    before = signal.getsignal(signal.SIGHUP)  # --config installs a reload handler
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        signal.signal(signal.SIGHUP, before)
    return code, out.getvalue(), err.getvalue()


def config_file(directory: Path, text: str | None) -> list[str]:
    if text is None:
        return []
    path = directory / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return ["--config", str(path)]


def analyze(
    directory: Path, capture: Path | str, config: str | None = None, workers: int = 1
) -> Run:
    metrics = directory / "metrics.prom"
    code, out, err = cli(
        [
            "analyze",
            "--format",
            "json",
            "--signatures",
            str(SIGNATURES),
            "--metrics-out",
            str(metrics),
            "--workers",
            str(workers),
            *config_file(directory, config),
            str(PCAPS / capture),
        ]
    )
    assert err == ""
    events = [json.loads(line) for line in out.splitlines()]
    return Run(code, events, metrics.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Each capture analysed once per module, by name: 'incident-vendor' has the allowlist."""
    out = {}
    for key, capture, config in (
        ("incident-vendor", INCIDENT, VENDOR_ALLOWED),
        ("incident-open", INCIDENT, None),
        ("1709", CVE_1709, None),
        ("1708", CVE_1708, None),
    ):
        out[key] = analyze(tmp_path_factory.mktemp(key), capture, config)
    return out


# --------------------------------------------------------------------------------------------
# The captures hold what pcaps/README.md says


def http_messages(stream: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """(start line, headers by lower-case name, body) of each message on a keep-alive stream."""
    out = []
    while stream:
        head, sep, rest = stream.partition(b"\r\n\r\n")
        assert sep, "incomplete head"
        start, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        size = int(headers.get("content-length", "0"))
        out.append((start, headers, rest[:size]))
        stream = rest[size:]
    return out


def to_server(name: str, server: tuple[str, int]) -> list[Connection]:
    return [c for c in connections(name) if c.server == server]


@pytest.mark.parametrize("name", NEW_FILES)
def test_capture_format_time_addresses_checksums(name: str) -> None:
    data = (PCAPS / name).read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"  # classic pcap, microseconds
    assert len(data) < 200_000
    stamps = [p.ts_us for p in packets(name)]
    assert stamps[0] == T0_US
    assert all(b > a for a, b in itertools.pairwise(stamps))
    for p in packets(name):
        for raw in (p.ip.src, p.ip.dst):
            assert any(ipaddress.IPv4Address(raw) in net for net in ALLOWED_NETS)
        assert checksum_ok(bytes(p.ip)[: p.ip.hl * 4])
        assert transport_checksum_ok(p.ip, p.ip.p)
        assert len(p.eth) <= 1514


@pytest.mark.parametrize("name", NEW_FILES)
def test_capture_tcp_connections_open_and_close(name: str) -> None:
    for conn in connections(name):
        flags = [s.flags for s in conn.segments]
        assert flags[0] == 0x02 and flags[1] == 0x12  # SYN, SYN/ACK
        assert sum(1 for f in flags if f & 0x01) == 2  # a FIN each way
        for side in (conn.client, conn.server):
            segs = [s for s in conn.segments if s.src == side]
            expected = segs[0].seq
            for s in segs:
                assert s.seq == expected & 0xFFFFFFFF
                expected += len(s.payload) + bool(s.flags & 0x03)


def test_incident_capture_timeline() -> None:
    assert dns_answers(INCIDENT) == [("support.vendor.example", ["198.51.100.7"])]
    (web,) = to_server(INCIDENT, VENDOR)
    (request, response) = http_messages(web.stream(True)) + http_messages(web.stream(False))
    path, _, query = request[0].split(" ")[1].partition("?")
    assert path == "/Bin/ScreenConnect.ClientSetup.exe"
    assert query.startswith("e=Access&y=Guest&h=support.vendor.example&p=8041&k=")
    assert response[0] == "HTTP/1.1 200 OK"
    assert response[1]["server"] == "ScreenConnect/19.2.24707.7131"
    relay = conn_to(INCIDENT, VENDOR_RELAY)
    hello = relay.payloads(True)[0]
    assert hello[:16] == bytes.fromhex("87151000") + bytes(12) and len(hello) < 600
    relay_span = relay.segments[-1].ts_us - relay.segments[0].ts_us
    assert 150 * 10**6 < relay_span < 240 * 10**6  # a few minutes
    anydesk = conn_to(INCIDENT, ANYDESK_RELAY)
    gap = anydesk.segments[0].ts_us - relay.segments[-1].ts_us
    assert 9 * 60 * 10**6 < gap < 11 * 60 * 10**6  # about ten minutes later
    assert {c.client[0] for c in connections(INCIDENT)} == {PHARMACY}


def test_incident_anydesk_is_a_real_relay_handshake_by_address() -> None:
    view = tls_view(conn_to(INCIDENT, ANYDESK_RELAY))
    assert view.sni is None
    assert view.alpn == ["anydesk/7.1.0/windows"]
    assert [c.subject.rfc4514_string() for c in view.server_certs] == [
        "CN=AnyNet Relay,O=philandro Software GmbH,C=DE",
        "CN=AnyNet Root CA,O=philandro Software GmbH,C=DE",
    ]
    assert_anydesk_client_cert(view.client_certs[0])
    # No look-up names the AnyDesk relay: it was reached by address.
    assert all("anydesk" not in name for name, _ in dns_answers(INCIDENT))


def test_cve_1709_capture_requests() -> None:
    for client, server in ((ATTACKER, CLINIC), (INSIDER, OTHER)):
        (conn,) = [c for c in to_server(CVE_1709, server) if c.client[0] == client]
        requests = http_messages(conn.stream(True))
        assert [r[0] for r in requests] == [
            WIZARD_LINE,
            "POST /SetupWizard.aspx/literallyanything HTTP/1.1",
            "POST /SetupWizard.aspx/literallyanything HTTP/1.1",
        ]
        start = urllib.parse.parse_qs(requests[1][2].decode(), keep_blank_values=True)
        assert start["ctl00$Main$wizard$StartNavigationTemplateContainerID$StartNextButton"] == [
            "Next"
        ]
        admin = urllib.parse.parse_qs(requests[2][2].decode(), keep_blank_values=True)
        for box in ("userNameBox", "emailBox", "passwordBox", "verifyPasswordBox"):
            assert admin[f"ctl00$Main$wizard${box}"][0]
        responses = http_messages(conn.stream(False))
        assert [r[0] for r in responses] == ["HTTP/1.1 200 OK"] * 3
        assert {r[1]["server"] for r in responses} == {"ScreenConnect/23.9.7.8804"}
        assert b'name="__VIEWSTATE"' in responses[0][2]
    (ordinary,) = [c for c in to_server(CVE_1709, CLINIC) if c.client[0] == TECHNICIAN]
    lines = [r[0].split("?")[0] for r in http_messages(ordinary.stream(True))]
    assert lines == [
        "GET /Login HTTP/1.1",
        "GET /Host HTTP/1.1",
        "GET /Bin/ScreenConnect.ClientSetup.exe",
    ]


def test_cve_1708_capture_requests_and_zip() -> None:
    for client, server in ((ATTACKER, CLINIC), (INSIDER, OTHER)):
        conns = [c for c in to_server(CVE_1708, server) if c.client[0] == client]
        requests = [http_messages(c.stream(True)) for c in conns]
        assert [[r[0] for r in rs] for rs in requests] == [
            [INSTALL_LINE],
            [HANDLER_LINE],
            ["POST /Services/ExtensionService.ashx/UninstallExtension HTTP/1.1"],
        ]
        _, headers, body = requests[0][0]
        assert headers["content-type"] == "application/json"
        assert headers["x-anti-forgery-token"]
        (encoded,) = json.loads(body)
        names = zipfile.ZipFile(io.BytesIO(base64.b64decode(encoded, validate=True))).namelist()
        guid = names[0].split("/")[0]
        assert names == [f"{guid}/Manifest.xml", f"{guid}/../evil.ashx"]
        assert json.loads(requests[2][0][2]) == [guid]
    (normal,) = [c for c in to_server(CVE_1708, CLINIC) if c.client[0] == TECHNICIAN]
    assert [r[0] for r in http_messages(normal.stream(True))] == [
        "GET /App_Extensions/2d558935-686a-4f8b-a8e9-4c3c5b1a6b7c/Web.ashx HTTP/1.1"
    ]


# --------------------------------------------------------------------------------------------
# The 2023 incident


def test_incident_with_the_vendor_allowlisted_raises_exactly_three_alerts(
    runs: dict[str, Run],
) -> None:
    run = runs["incident-vendor"]
    assert run.rules() == Counter({OUTDATED: 1, UNSANCTIONED: 1, CHAIN: 1})
    assert run.code == 1
    got = sorted(
        (s["rmm"]["tool"], s["rmm"]["channel"], s["dest_ip"], s["dest_port"], s["rmm"]["verdict"])
        for s in run.sessions
    )
    assert got == [
        ("anydesk", "relay", *ANYDESK_RELAY, "unsanctioned"),
        ("screenconnect", "download", *VENDOR, "sanctioned"),
        ("screenconnect", "relay", *VENDOR_RELAY, "sanctioned"),
    ]
    assert all(s["src_ip"] == PHARMACY for s in run.sessions)


def test_incident_outdated_alert_names_server_version_and_minimum(runs: dict[str, Run]) -> None:
    (alert,) = runs["incident-vendor"].alerts(OUTDATED)
    assert (alert["dest_ip"], alert["dest_port"]) == VENDOR
    assert alert["alert"]["severity"] == "high"
    assert alert["alert"]["message"] == (
        "screenconnect server 198.51.100.7:8040 (support.vendor.example) runs version "
        "19.2.24707.7131, older than 23.9.8"
    )
    assert alert["rmm"]["verdict"] == "sanctioned"  # sanctioned or not, it is out of date
    assert alert["rmm"]["attributes"]["key_sha256"] == VENDOR_KEY


def test_incident_unsanctioned_alert_is_the_anydesk_relay(runs: dict[str, Run]) -> None:
    (alert,) = runs["incident-vendor"].alerts(UNSANCTIONED)
    assert (alert["rmm"]["tool"], alert["rmm"]["channel"]) == ("anydesk", "relay")
    assert (alert["src_ip"], alert["dest_ip"], alert["dest_port"]) == (PHARMACY, *ANYDESK_RELAY)


def test_incident_chain_alert_relates_screenconnect_then_anydesk(runs: dict[str, Run]) -> None:
    (alert,) = runs["incident-vendor"].alerts(CHAIN)
    body = alert["alert"]
    assert body["severity"] == "high"
    assert (alert["rmm"]["tool"], alert["dest_ip"], alert["dest_port"]) == (
        "anydesk",
        *ANYDESK_RELAY,
    )
    related = body["related_session"]
    assert (related["tool"], related["src_ip"]) == ("screenconnect", PHARMACY)
    assert related["verdict"] == "sanctioned"  # the way in was the sanctioned vendor session
    # The closest ScreenConnect session before AnyDesk is the relay, 780 s earlier.
    assert (related["channel"], related["dest_port"]) == ("relay", 8041)
    assert body["message"] == (
        "10.20.0.61 used screenconnect (relay, support.vendor.example) and then anydesk "
        f"(relay, {alert['rmm']['instance']}) within 780 s"
    )


def test_incident_without_allowlist_still_raises_outdated_and_chain(runs: dict[str, Run]) -> None:
    run = runs["incident-open"]
    rules = run.rules()
    assert rules[OUTDATED] == 1 and rules[CHAIN] == 1 and rules[EXPLOIT] == 0
    assert {a["rmm"]["tool"] for a in run.alerts(UNSANCTIONED)} == {"anydesk", "screenconnect"}
    assert {s["rmm"]["verdict"] for s in run.sessions} == {"unsanctioned"}
    (chain,) = run.alerts(CHAIN)
    assert chain["alert"]["related_session"]["verdict"] == "unsanctioned"


@pytest.mark.parametrize(
    ("key", "verdict", "screenconnect_servers"),
    [("incident-vendor", "sanctioned", 2), ("incident-open", "unsanctioned", 2)],
)
def test_incident_metrics(
    runs: dict[str, Run], key: str, verdict: str, screenconnect_servers: int
) -> None:
    run = runs[key]
    assert (
        run.metric("rmm_sensor_chains_total", first_tool="screenconnect", second_tool="anydesk")
        == 1
    )
    assert run.metric("rmm_sensor_outdated_servers", tool="screenconnect") == 1
    assert run.metric("rmm_sensor_outdated_servers", tool="anydesk") == 0
    assert run.metric("rmm_sensor_servers", tool="screenconnect", verdict=verdict) == (
        screenconnect_servers
    )
    assert run.metric("rmm_sensor_servers", tool="anydesk", verdict="unsanctioned") == 1
    for cve in ("CVE-2024-1709", "CVE-2024-1708"):
        assert run.metric("rmm_sensor_exploit_attempts_total", cve=cve) == 0


@pytest.mark.parametrize(
    ("window_s", "chains"),
    [(779, 0), (780, 0), (781, 1), (3600, 1)],  # AnyDesk starts 780.409 s after the relay
)
def test_incident_chain_window_is_configurable(tmp_path: Path, window_s: int, chains: int) -> None:
    run = analyze(tmp_path, INCIDENT, f"policy:\n  chain_window_s: {window_s}\n")
    assert run.rules()[CHAIN] == chains


@pytest.mark.parametrize(
    ("minimum", "outdated"),
    [("19.2.24707.7131", 0), ("19.2", 0), ("19.2.24707.7132", 1), ("20", 1), ("23.9.8", 1)],
)
def test_incident_minimum_version_is_configurable(
    tmp_path: Path, minimum: str, outdated: int
) -> None:
    config = f'policy:\n  minimum_versions:\n    screenconnect: "{minimum}"\n'
    run = analyze(tmp_path, INCIDENT, config)
    assert run.rules()[OUTDATED] == outdated
    assert run.metric("rmm_sensor_outdated_servers", tool="screenconnect") == outdated


# --------------------------------------------------------------------------------------------
# Exploitation


@pytest.mark.parametrize(
    ("key", "cve", "line", "detail"),
    [
        (
            "1709",
            "CVE-2024-1709",
            WIZARD_LINE,
            "setup wizard past its completion check: 3 requests, 2 POST "
            "(administrator account replaced if accepted)",
        ),
        (
            "1708",
            "CVE-2024-1708",
            HANDLER_LINE,
            f"handler at the root of App_Extensions, after {INSTALL_LINE}",
        ),
    ],
)
def test_exploit_alert_per_attacking_connection_both_directions(
    runs: dict[str, Run], key: str, cve: str, line: str, detail: str
) -> None:
    alerts = runs[key].alerts(EXPLOIT)
    directions = sorted((a["src_ip"], a["dest_ip"], a["dest_port"]) for a in alerts)
    # Our server attacked from the internet, and our host attacking someone else's server.
    assert directions == [(INSIDER, *OTHER), (ATTACKER, *CLINIC)]
    for a in alerts:
        assert a["alert"]["severity"] == "critical"
        assert a["rmm"]["tool"] == "screenconnect"
        assert a["rmm"]["evidence"] == [
            {"signature": cve.lower(), "field": "http.request", "value": line, "confidence": "high"}
        ]
        assert a["rmm"]["attributes"]["cve"] == cve
        assert a["alert"]["message"] == (
            f"{cve} exploitation attempt against {a['dest_ip']}:{a['dest_port']} from "
            f"{a['src_ip']}: {line} ({detail})"
        )


@pytest.mark.parametrize("key", ["1709", "1708"])
def test_ordinary_requests_to_the_same_server_do_not_alert_as_exploits(
    runs: dict[str, Run], key: str
) -> None:
    run = runs[key]
    assert all(a["src_ip"] != TECHNICIAN for a in run.alerts(EXPLOIT))
    # The technician's traffic is there, and recognised as ScreenConnect.
    assert any(s["src_ip"] == TECHNICIAN for s in run.sessions)
    values = [ev["value"] for a in run.alerts(EXPLOIT) for ev in a["rmm"]["evidence"]]
    assert not any("Install" in v or "Uninstall" in v or "/Login" in v for v in values)


@pytest.mark.parametrize(("key", "counts"), [("1709", (2, 0)), ("1708", (0, 2))])
def test_exploit_attempts_metric(runs: dict[str, Run], key: str, counts: tuple[int, int]) -> None:
    run = runs[key]
    for cve, n in zip(("CVE-2024-1709", "CVE-2024-1708"), counts, strict=True):
        assert run.metric("rmm_sensor_exploit_attempts_total", cve=cve) == n
    assert run.metric("rmm_sensor_alerts_total", rule=EXPLOIT, severity="critical") == sum(counts)


@pytest.mark.parametrize("key", ["1709", "1708"])
def test_exploited_servers_are_outdated_once_each(runs: dict[str, Run], key: str) -> None:
    run = runs[key]
    servers = sorted((a["dest_ip"], a["dest_port"]) for a in run.alerts(OUTDATED))
    assert servers == sorted([CLINIC, OTHER])  # 10.20.5.20 has several sessions, one alert
    assert sum(1 for s in run.sessions if (s["dest_ip"], s["dest_port"]) == CLINIC) >= 2
    assert all(
        "23.9.7.8804, older than 23.9.8" in a["alert"]["message"] for a in run.alerts(OUTDATED)
    )
    assert run.metric("rmm_sensor_outdated_servers", tool="screenconnect") == 2


@pytest.mark.parametrize(
    ("capture", "cve", "line"),
    [(CVE_1709, "CVE-2024-1709", WIZARD_LINE), (CVE_1708, "CVE-2024-1708", HANDLER_LINE)],
)
def test_exploits_are_found_with_several_workers(
    tmp_path: Path, capture: str, cve: str, line: str
) -> None:
    """Flows are sharded over workers; each attacking request is still seen by one of them."""
    run = analyze(tmp_path, capture, workers=2)
    alerts = run.alerts(EXPLOIT)
    assert sorted(a["src_ip"] for a in alerts) == sorted([ATTACKER, INSIDER])
    assert {a["rmm"]["evidence"][0]["value"] for a in alerts} == {line}
    assert run.metric("rmm_sensor_exploit_attempts_total", cve=cve) == 2


def test_exploit_alert_needs_no_allowlist_miss(tmp_path: Path) -> None:
    """A sanctioned server is still attacked: the exploit alert is raised all the same."""
    config = """
        sanctioned:
          - name: clinic
            tool: screenconnect
            addresses: [10.20.5.20/32, 198.51.100.80/32]
    """
    run = analyze(tmp_path, CVE_1709, config)
    assert run.rules() == Counter({EXPLOIT: 2, OUTDATED: 2})
    assert {a["rmm"]["verdict"] for a in run.alerts(EXPLOIT)} == {"sanctioned"}


# --------------------------------------------------------------------------------------------
# `rmm-sensor inventory`


@pytest.mark.parametrize(("config", "sanctioned"), [(VENDOR_ALLOWED, True), (None, False)])
def test_inventory_json_lists_the_vendor_server(
    tmp_path: Path, config: str | None, sanctioned: bool
) -> None:
    code, out, err = cli(
        ["inventory", "--format", "json", *config_file(tmp_path, config), str(PCAPS / INCIDENT)]
    )
    assert (code, err) == (0, "")
    records = [json.loads(line) for line in out.splitlines()]
    by_server = {(r["address"], r["port"]): r for r in records}
    assert set(by_server) == {VENDOR, VENDOR_RELAY, ANYDESK_RELAY}
    web = by_server[VENDOR]
    assert web == {
        "event_type": "rmm_server",
        "tool": "screenconnect",
        "address": "198.51.100.7",
        "port": 8040,
        "names": ["support.vendor.example"],
        "version": "19.2.24707.7131",
        "instance_key_sha256": VENDOR_KEY,
        "channels": ["download"],
        "sessions": 1,
        "first_seen": "2024-03-01T09:00:00.040000+0000",
        "last_seen": web["last_seen"],
        "sanctioned": sanctioned,
        "outdated": True,
    }
    relay = by_server[VENDOR_RELAY]
    assert (relay["sanctioned"], relay["outdated"], relay["version"]) == (sanctioned, False, None)
    assert relay["names"] == ["support.vendor.example"]
    anydesk = by_server[ANYDESK_RELAY]
    assert (anydesk["tool"], anydesk["sanctioned"], anydesk["names"]) == ("anydesk", False, [])


@pytest.mark.parametrize(("config", "sanctioned"), [(VENDOR_ALLOWED, "yes"), (None, "no")])
def test_inventory_table_lists_the_vendor_server(
    tmp_path: Path, config: str | None, sanctioned: str
) -> None:
    code, out, err = cli(["inventory", *config_file(tmp_path, config), str(PCAPS / INCIDENT)])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:2] == ["tool", "server"] and header[-2:] == ["sanctioned", "outdated"]
    (row,) = [line for line in lines if "198.51.100.7:8040" in line]
    cells = row.split()
    assert cells[:5] == [
        "screenconnect",
        "198.51.100.7:8040",
        "support.vendor.example",
        "19.2.24707.7131",
        VENDOR_KEY[:16],
    ]
    assert cells[-2:] == [sanctioned, "YES"]
    (relay,) = [line for line in lines if "198.51.100.7:8041" in line]
    assert relay.split()[-2:] == [sanctioned, "no"]


# --------------------------------------------------------------------------------------------
# A version no int() can hold does not stop the sensor


def http_exchange_capture(path: Path, server_header: str) -> Path:
    """One GET and its response on 8040, full TCP session, for a Server header of our choice."""
    client, server = ("10.20.0.41", 50999), ("198.51.100.7", 8040)
    t = T0_US / 1e6
    seq = {"c": 1000, "s": 5000}
    frames = []

    def seg(side: str, flags: str, data: bytes = b"") -> None:
        nonlocal t
        (src, sport), (dst, dport) = (client, server) if side == "c" else (server, client)
        other = "s" if side == "c" else "c"
        tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq[side], ack=seq[other])
        macs = ("02:0a:14:00:00:29", "02:00:0a:14:00:01")  # client, router
        src_mac, dst_mac = macs if side == "c" else macs[::-1]
        pkt = Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst)
        pkt = pkt / (tcp / Raw(data) if data else tcp)
        pkt.time = t
        frames.append(pkt)
        t += 0.01
        seq[side] += len(data) + ("S" in flags or "F" in flags)

    seg("c", "S")
    seg("s", "SA")
    seg("c", "A")
    seg("c", "PA", b"GET /Host HTTP/1.1\r\nHost: support.vendor.example:8040\r\n\r\n")
    response = f"HTTP/1.1 302 Found\r\nServer: {server_header}\r\nContent-Length: 0\r\n\r\n"
    for i in range(0, len(response), 1400):
        seg("s", "PA", response[i : i + 1400].encode())
    seg("c", "FA")
    seg("s", "FA")
    seg("c", "A")
    wrpcap(str(path), frames)
    return path


@pytest.mark.parametrize(
    ("header", "outdated"),
    [
        ("ScreenConnect/" + "1" * 5000, 0),  # over int()'s 4300-digit limit: used to crash
        ("ScreenConnect/" + "9." * 2000 + "1", 0),
        ("ScreenConnect/22.4.20001.1", 1),
        ("ScreenConnect/" + "0" * 13, 0),
    ],
)
def test_absurd_server_versions_are_never_outdated(
    tmp_path: Path, header: str, outdated: int
) -> None:
    capture = http_exchange_capture(tmp_path / "version.pcap", header)
    run = analyze(tmp_path, capture)
    assert run.code == 1  # the unsanctioned web session
    assert run.rules()[OUTDATED] == outdated
    (session,) = run.sessions
    assert session["rmm"]["attributes"]["server_version"] == header.split("/", 1)[1]
