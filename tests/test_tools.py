"""Every tool beyond ScreenConnect and AnyDesk: its capture in, the right sessions out.

Project captures (pcaps/tool-<tool>.pcap, written by pcaps/generate_tools.py) and the real
TeamViewer, RDP and VNC captures in the shared captures. RDP and VNC are reported only where a
session crosses the boundary of the policy's internal networks (``boundary: crossing``), so they
are run with the default networks and with narrower ones. Also unit-tests that boundary field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sensor.config import DEFAULT_INTERNAL
from sensor.fingerprints import ENRICHERS
from sensor.fingerprints.detector import Detector
from sensor.signatures.index import SignatureIndex
from sensor.signatures.loader import load_index
from sensor.signatures.schema import load_tool_file
from sensor.yamlsource import SourceError
from tests.signatures.test_index import flow
from tests.test_detection import (
    PCAPS,
    SHARED,
    SIGNATURES,
    Event,
    run_analyze,
    sessions,
    shared_captures,
    triples,
)

OLD_TOOLS = ("anydesk", "screenconnect")
Row = tuple[str, int, str, set[str]]  # server address, server port, channel, signature ids

# Each tool capture: its sessions in output order. The tool is the capture's.
TOOL_SESSIONS: dict[str, list[Row]] = {
    "action1": [
        ("10.20.0.53", 53, "dns", {"action1-dns"}),
        ("203.0.113.218", 443, "relay", {"action1-tls-sni"}),
        ("10.20.0.53", 53, "dns", {"action1-dns-packages"}),
        ("203.0.113.219", 443, "download", {"action1-tls-sni-packages"}),
    ],
    "atera": [
        ("10.20.0.53", 53, "dns", {"atera-dns", "atera-dns-agent"}),
        (
            "203.0.113.208",
            443,
            "relay",
            {"atera-dns-agent", "atera-tls-sni", "atera-tls-sni-agent"},
        ),
        ("10.20.0.53", 53, "dns", {"atera-dns"}),
        ("203.0.113.209", 443, "web", {"atera-tls-sni"}),
        ("10.20.0.53", 53, "dns", {"atera-dns-alphacontrol"}),
        ("203.0.113.210", 443, "relay", {"atera-tls-sni-alphacontrol"}),
    ],
    "beyondtrust": [
        ("10.20.0.53", 53, "dns", {"beyondtrust-dns"}),
        ("203.0.113.230", 443, "relay", {"beyondtrust-dns", "beyondtrust-tls-sni"}),
    ],
    "chrome-remote-desktop": [
        ("10.20.0.53", 53, "dns", {"chrome-remote-desktop-dns-api"}),
        ("203.0.113.233", 443, "relay", {"chrome-remote-desktop-tls-sni-api"}),
        ("10.20.0.53", 53, "dns", {"chrome-remote-desktop-dns-web"}),
        ("203.0.113.234", 443, "web", {"chrome-remote-desktop-tls-sni-web"}),
        ("10.20.0.53", 53, "dns", {"chrome-remote-desktop-dns-chromoting"}),
    ],
    "kaseya": [
        ("10.20.0.53", 53, "dns", {"kaseya-dns-vsa"}),
        ("203.0.113.223", 443, "relay", {"kaseya-tls-sni-vsa"}),
        ("10.20.0.53", 53, "dns", {"kaseya-dns-deploy", "kaseya-dns-site"}),
    ],
    "level": [
        ("10.20.0.53", 53, "dns", {"level-dns", "level-dns-agents"}),
        (
            "203.0.113.220",
            443,
            "relay",
            {"level-dns-agents", "level-tls-sni", "level-tls-sni-agents"},
        ),
        ("10.20.0.53", 53, "dns", {"level-dns", "level-dns-builds"}),
        ("203.0.113.221", 443, "web", {"level-tls-sni"}),
    ],
    "logmein": [
        ("10.20.0.53", 53, "dns", {"logmein-dns-gateway"}),
        ("203.0.113.227", 443, "relay", {"logmein-dns-gateway", "logmein-tls-sni-gateway"}),
        ("10.20.0.53", 53, "dns", {"logmein-dns"}),
        ("203.0.113.228", 443, "web", {"logmein-tls-sni"}),
        ("10.20.0.53", 53, "dns", {"logmein-dns-goto"}),
    ],
    "meshcentral": [
        ("198.51.100.202", 443, "web", {"meshcentral-tls-root"}),
        ("198.51.100.202", 80, "download", {"meshcentral-http-agent-download"}),
        ("198.51.100.202", 80, "relay", {"meshcentral-http-agent", "meshcentral-http-relay"}),
        ("198.51.100.202", 80, "web", {"meshcentral-http-control"}),
        ("10.20.0.53", 53, "dns", {"meshcentral-dns"}),
    ],
    "netsupport": [
        ("10.20.0.53", 53, "dns", {"netsupport-dns", "netsupport-dns-geo"}),
        ("203.0.113.215", 80, "web", {"netsupport-geo-lookup", "netsupport-http-user-agent"}),
        ("198.51.100.203", 443, "relay", {"netsupport-http-server", "netsupport-http-user-agent"}),
    ],
    "ninjaone": [
        ("10.20.0.53", 53, "dns", {"ninjaone-dns"}),
        ("203.0.113.222", 443, "relay", {"ninjaone-tls-sni"}),
    ],
    "nomachine": [
        ("10.20.0.53", 53, "dns", {"nomachine-dns"}),
        ("198.51.100.205", 4000, "direct", {"nomachine-nxd", "nomachine-nxsh"}),
    ],
    "quick-assist": [
        ("10.20.0.53", 53, "dns", {"quick-assist-dns", "quick-assist-dns-services"}),
        ("203.0.113.216", 443, "relay", {"quick-assist-tls-sni", "quick-assist-tls-sni-services"}),
        ("10.20.0.53", 53, "dns", {"quick-assist-dns-services"}),
        ("203.0.113.217", 443, "web", {"quick-assist-tls-sni-services"}),
    ],
    "radmin": [
        ("10.20.0.53", 53, "dns", {"radmin-dns"}),
        ("198.51.100.204", 4899, "direct", {"radmin-handshake", "radmin-reply"}),
    ],
    "rdp": [
        ("10.20.8.100", 3389, "direct", {"rdp-cookie", "rdp-udp-syn", "rdp-x224-cr"}),
        ("203.0.113.236", 3389, "direct", {"rdp-x224-cr"}),
    ],
    "rustdesk": [
        ("10.20.0.53", 53, "dns", {"rustdesk-dns", "rustdesk-dns-rendezvous"}),
        ("203.0.113.212", 21115, "relay", {"rustdesk-dns-rendezvous", "rustdesk-nat-test"}),
        (
            "203.0.113.212",
            21116,
            "relay",
            {"rustdesk-dns-rendezvous", "rustdesk-register-peer", "rustdesk-register-pk"},
        ),
        ("10.20.255.255", 21119, "discovery", {"rustdesk-lan-ping"}),
        ("10.20.0.53", 53, "dns", {"rustdesk-dns"}),
        ("203.0.113.213", 443, "web", {"rustdesk-tls-sni"}),
    ],
    "simplehelp": [
        ("198.51.100.201", 80, "web", {"simplehelp-http-server"}),
        ("198.51.100.201", 80, "download", {"simplehelp-http-jwrapper", "simplehelp-http-server"}),
        ("198.51.100.201", 443, "web", {"simplehelp-tls-default-cert"}),
        ("10.20.0.53", 53, "dns", {"simplehelp-dns"}),
    ],
    "splashtop": [
        ("10.20.0.53", 53, "dns", {"splashtop-dns", "splashtop-dns-relay"}),
        (
            "203.0.113.204",
            443,
            "relay",
            {"splashtop-dns-relay", "splashtop-tls-sni", "splashtop-tls-sni-relay"},
        ),
        ("10.20.0.53", 53, "dns", {"splashtop-dns"}),
        ("203.0.113.205", 443, "web", {"splashtop-tls-sni"}),
        ("203.0.113.206", 6783, "relay", {"splashtop-checkin-6783"}),
        ("10.20.8.112", 6784, "direct", {"splashtop-session-6784", "splashtop-session-reply-6784"}),
    ],
    "syncro": [
        ("10.20.0.53", 53, "dns", {"syncro-dns"}),
        ("203.0.113.225", 443, "relay", {"syncro-tls-sni"}),
    ],
    "teamviewer": [
        ("10.20.0.53", 53, "dns", {"teamviewer-dns", "teamviewer-dns-router"}),
        (
            "203.0.113.201",
            5938,
            "relay",
            {"teamviewer-dns-router", "teamviewer-tcp-5938", "teamviewer-tcp-magic"},
        ),
        (
            "203.0.113.201",
            80,
            "relay",
            {"teamviewer-dns-router", "teamviewer-http-dyngate", "teamviewer-http-host"},
        ),
        (
            "203.0.113.203",
            5938,
            "relay",
            {"teamviewer-keepalive-in", "teamviewer-keepalive-out", "teamviewer-tcp-5938"},
        ),
        ("10.20.0.53", 53, "dns", {"teamviewer-dns"}),
        ("203.0.113.202", 443, "web", {"teamviewer-tls-sni"}),
        ("198.51.100.206", 40123, "direct", {"teamviewer-udp-p2p"}),
    ],
    "zoho-assist": [
        ("10.20.0.53", 53, "dns", {"zoho-assist-dns", "zoho-assist-dns-gateway"}),
        (
            "203.0.113.226",
            443,
            "relay",
            {"zoho-assist-dns-gateway", "zoho-assist-tls-sni", "zoho-assist-tls-sni-gateway"},
        ),
    ],
}


def rows(events: Sequence[Event]) -> list[Row]:
    return [
        (e["dest_ip"], e["dest_port"], e["rmm"]["channel"],
         {ev["signature"] for ev in e["rmm"]["evidence"]})
        for e in events
    ]  # fmt: skip


def tool_files() -> list[str]:
    return sorted(p.stem for p in SIGNATURES.glob("*.yaml") if p.stem not in OLD_TOOLS)


def test_every_new_tool_has_a_capture_and_a_table_row() -> None:
    captures = sorted(p.stem[len("tool-") :] for p in PCAPS.glob("tool-*.pcap"))
    assert captures == sorted(TOOL_SESSIONS)
    # vnc is covered by the real captures alone
    assert set(tool_files()) == {*TOOL_SESSIONS, "vnc"}


@pytest.mark.parametrize("tool", sorted(TOOL_SESSIONS))
def test_tool_capture_sessions(tool: str) -> None:
    events = sessions(PCAPS / f"tool-{tool}.pcap")
    assert {e["rmm"]["tool"] for e in events} == {tool}
    assert rows(events) == TOOL_SESSIONS[tool]
    assert all(e["rmm"]["confidence"] in ("medium", "high") for e in events)
    assert all(e["rmm"]["verdict"] == "unsanctioned" for e in events)


@pytest.mark.parametrize("tool", tool_files())
def test_every_signature_of_a_tool_fires_on_its_captures(tool: str) -> None:
    """Each new signature fires on its tool's project capture or on a real capture."""
    real = {"teamviewer": ["teamviewer-ndpi.pcap"], "vnc": ["vnc-ndpi.pcap"]}.get(tool, [])
    captures = [SHARED / name for name in real]
    if tool in TOOL_SESSIONS:
        captures.append(PCAPS / f"tool-{tool}.pcap")
    fired = {sig for c in captures for t, _, sig in triples(sessions(c)) if t == tool}
    declared = {s.id for s in load_tool_file(str(SIGNATURES / f"{tool}.yaml")).signatures}
    assert declared - fired == set()


# --------------------------------------------------------------------------------------------
# Evidence values a tool's signatures must show


def one(capture: str, port: int, channel: str | None = None) -> Event:
    found = [
        e for e in sessions(PCAPS / capture)
        if e["dest_port"] == port and channel in (None, e["rmm"]["channel"])
    ]  # fmt: skip
    assert len(found) == 1, found
    return found[0]


def values(event: Event, signature: str) -> list[str]:
    return [ev["value"] for ev in event["rmm"]["evidence"] if ev["signature"] == signature]


@pytest.mark.parametrize(
    ("capture", "port", "signature", "value"),
    [
        ("tool-teamviewer.pcap", 5938, "teamviewer-keepalive-out", "17241b0000"),
        ("tool-teamviewer.pcap", 80, "teamviewer-http-dyngate",
         "Mozilla/4.0 (compatible; MSIE 6.0; DynGate)"),
        ("tool-teamviewer.pcap", 40123, "teamviewer-udp-p2p", "00000000000000000000031724475000"),
        ("tool-splashtop.pcap", 6783, "splashtop-checkin-6783", "000100080000000000020100"),
        ("tool-splashtop.pcap", 6784, "splashtop-session-reply-6784", "3100"),
        ("tool-simplehelp.pcap", 443, "simplehelp-tls-default-cert",
         "C=US, ST=US, L=US, O=Remote Access, OU=Administration, CN=localhost"),
        ("tool-rustdesk.pcap", 21115, "rustdesk-nat-test", "14a201020801"),
        ("tool-rustdesk.pcap", 21119, "rustdesk-lan-ping", "b201060a0470696e67"),
        ("tool-meshcentral.pcap", 443, "meshcentral-tls-root", "CN=MeshCentralRoot-3f6a1c"),
        ("tool-meshcentral.pcap", 80, "meshcentral-http-agent-download", "/meshagents"),
        ("tool-netsupport.pcap", 443, "netsupport-http-server", "NetSupport Gateway/1.8"),
        ("tool-radmin.pcap", 4899, "radmin-handshake", "01000000010000000808"),
        ("tool-nomachine.pcap", 4000, "nomachine-nxsh", "4e5853482d382e31302e310a"),
        ("tool-nomachine.pcap", 4000, "nomachine-nxd", "4e58442d382e31302e310a"),
    ],
)  # fmt: skip
def test_evidence_value(capture: str, port: int, signature: str, value: str) -> None:
    found = [v for e in sessions(PCAPS / capture) if e["dest_port"] == port
             for v in values(e, signature)]  # fmt: skip
    assert [v[: len(value)] for v in found] == [value]  # the evidence runs on past the match


def test_teamviewer_keepalives_open_a_flow_picked_up_mid_session() -> None:
    (e,) = [x for x in sessions(PCAPS / "tool-teamviewer.pcap") if x["dest_ip"] == "203.0.113.203"]
    # both keep-alives of each side are in the first bytes; the first segment was 5 bytes
    assert values(e, "teamviewer-keepalive-in") == ["17241b000017241b0000"]
    assert e["src_port"] == 50880  # oriented by ports: no handshake was seen


def test_relay_reached_after_a_lookup_is_attributed() -> None:
    relay = one("tool-rustdesk.pcap", 21116)
    (attributed,) = [ev for ev in relay["rmm"]["evidence"] if ev["field"] == "dns-attribution"]
    assert attributed == {"signature": "rustdesk-dns-rendezvous", "field": "dns-attribution",
                          "value": "rs-ny.rustdesk.com", "confidence": "medium"}  # fmt: skip
    assert relay["rmm"]["server_name"] == "rs-ny.rustdesk.com"


# --------------------------------------------------------------------------------------------
# The real TeamViewer capture


def test_real_teamviewer_capture() -> None:
    got = [
        (e["proto"], e["src_ip"], e["dest_ip"], e["dest_port"], e["rmm"]["tool"],
         e["rmm"]["channel"], sorted(ev["signature"] for ev in e["rmm"]["evidence"]))
        for e in sessions(SHARED / "teamviewer-ndpi.pcap")
    ]  # fmt: skip
    assert got == [
        ("TCP", "10.0.2.15", "162.250.2.170", 5938, "teamviewer", "relay",
         ["teamviewer-tcp-5938", "teamviewer-tcp-magic"]),
        ("UDP", "10.0.2.15", "93.47.224.241", 36037, "teamviewer", "direct",
         ["teamviewer-udp-p2p"]),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# RDP and VNC: only across the boundary of the internal networks

# capture -> (server address, the signatures a crossing session of it shows)
BOUNDARY_CAPTURES: dict[str, list[tuple[str, set[str]]]] = {
    "rdp-ndpi.pcap": [("192.168.2.142", {"rdp-x224-cr"})],
    "rdp-tls-ndpi.pcap": [("89.31.79.12", {"rdp-x224-cr", "rdp-cookie"})],
    "rdp-2006-ndpi.pcap": [("10.157.4.161", {"rdp-x224-cr", "rdp-cookie"})],
    "rdp-legacy-enc-zeek.pcap": [("10.226.24.52", {"rdp-x224-cr", "rdp-cookie"})],
    "rdp-suricata-RDP-003.pcap": [("10.226.29.74", {"rdp-x224-cr", "rdp-cookie"})],
    "rdp-to-ssl-zeek.pcap": [("192.168.1.150", {"rdp-x224-cr", "rdp-cookie"})],
    # three unrelated UDP flows; the third starts mid-session (no SYN datagram): never reported
    "rdp-udp-ndpi.pcap": [("192.168.122.2", {"rdp-udp-syn"}), ("10.50.73.36", {"rdp-udp-syn"})],
    "rdp-udp2-zeek.pcap": [("192.168.57.8", {"rdp-udp-syn"})],
    "vnc-ndpi.pcap": [("192.168.2.110", {"vnc-rfb-banner"})],
    "vnc-mac-to-linux-zeek.pcap": [("192.168.2.125", {"vnc-rfb-banner"})],
    "vnc-rfb38-suricata.pcap": [("192.168.1.10", {"vnc-rfb-banner"})],
}


def test_boundary_table_covers_every_rdp_and_vnc_capture() -> None:
    names = {p.name for p in shared_captures() if p.name.startswith(("rdp-", "vnc-"))}
    assert names == set(BOUNDARY_CAPTURES)


def config(tmp_path: Path, networks: Sequence[str]) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"policy:\n  internal_networks: [{', '.join(networks)}]\n", encoding="utf-8")
    return path


def boundary_sessions(capture: str, *extra: str) -> list[tuple[str, str, str, set[str]]]:
    code, events = run_analyze(SHARED / capture, *extra)
    assert code in (0, 1)
    return [
        (e["dest_ip"], e["rmm"]["tool"], e["rmm"]["channel"],
         {ev["signature"] for ev in e["rmm"]["evidence"]})
        for e in events if e["event_type"] == "session"
    ]  # fmt: skip


@pytest.mark.parametrize("capture", sorted(BOUNDARY_CAPTURES))
def test_default_networks_report_only_sessions_that_cross(capture: str) -> None:
    """Only vnc-ndpi.pcap (95.237.48.208 -> 192.168.2.110) crosses the default networks;
    rdp-tls-ndpi.pcap runs between two internet hosts, the others inside private ranges."""
    expected = [
        (server, capture.split("-", maxsplit=1)[0], "direct", sigs)
        for server, sigs in BOUNDARY_CAPTURES[capture]
        if capture == "vnc-ndpi.pcap"
    ]
    assert boundary_sessions(capture) == expected


@pytest.mark.parametrize("capture", sorted(BOUNDARY_CAPTURES))
def test_only_the_server_internal_crosses(tmp_path: Path, capture: str) -> None:
    servers = [server for server, _ in BOUNDARY_CAPTURES[capture]]
    got = boundary_sessions(
        capture, "--config", str(config(tmp_path, [f"{s}/32" for s in servers]))
    )
    tool = capture.split("-", maxsplit=1)[0]
    assert got == [(server, tool, "direct", sigs) for server, sigs in BOUNDARY_CAPTURES[capture]]


@pytest.mark.parametrize("capture", sorted(BOUNDARY_CAPTURES))
def test_both_ends_internal_or_both_external_is_not_reported(tmp_path: Path, capture: str) -> None:
    everything = config(tmp_path, ["0.0.0.0/0"])
    assert boundary_sessions(capture, "--config", str(everything)) == []
    nothing = config(tmp_path, ["192.0.2.0/24"])
    assert boundary_sessions(capture, "--config", str(nothing)) == []


def test_project_rdp_capture_reports_the_crossing_sessions_only() -> None:
    """Inbound from 198.51.100.250 (TCP with cookie, then UDP SYN), outbound to 203.0.113.236;
    the internal session to 10.20.8.101 is not reported."""
    got = {(e["src_ip"], e["dest_ip"], e["proto"]) for e in sessions(PCAPS / "tool-rdp.pcap")}
    assert got == {("198.51.100.250", "10.20.8.100", "TCP"), ("10.20.8.30", "203.0.113.236", "TCP")}


def test_inbound_vnc_from_the_internet_is_critical() -> None:
    code, events = run_analyze(SHARED / "vnc-ndpi.pcap")
    assert code == 1
    (alert,) = [e for e in events if e["event_type"] == "alert"]
    assert (alert["rmm"]["tool"], alert["alert"]["severity"]) == ("vnc", "critical")


# --------------------------------------------------------------------------------------------
# The boundary field


BOUNDARY_SIG = """\
tool: demo
signatures:
  - id: demo-rdp
    channel: direct
    confidence: high
    match:
      payload.client: {pattern: "03 00"}
      boundary: {equals: crossing}
"""


def detector(networks: Sequence[str] | None = None) -> Detector:
    index = SignatureIndex([load_tool_file("demo.yaml", BOUNDARY_SIG)], {})
    nets = None if networks is None else [ipaddress.ip_network(n) for n in networks]
    return Detector(index, ENRICHERS, internal_networks=nets)


@pytest.mark.parametrize(
    ("networks", "client", "server", "where"),
    [
        (None, "10.20.0.41", "203.0.113.9", "crossing"),
        (None, "203.0.113.9", "10.20.0.41", "crossing"),
        (None, "10.20.0.41", "192.168.1.1", "internal"),
        (None, "198.51.100.1", "203.0.113.9", "external"),
        (None, "fe80::1", "2001:db8::1", "crossing"),
        (None, "fd00::1", "fc00::2", "internal"),
        (["10.20.0.0/16"], "10.20.0.41", "10.30.0.1", "crossing"),
        (["10.20.0.0/16"], "192.168.1.1", "10.30.0.1", "external"),
        (["10.20.0.0/16", "203.0.113.0/24"], "10.20.0.41", "203.0.113.9", "internal"),
        ([], "10.20.0.41", "203.0.113.9", "external"),
        (None, "not-an-address", "203.0.113.9", "external"),
    ],
)
def test_boundary_of_a_flow(
    networks: list[str] | None, client: str, server: str, where: str
) -> None:
    d = detector(networks)
    record = flow(
        src_ip=client, dest_ip=server, client_head=b"\x03\x00\x00\x13", first_speaker="client"
    )
    assert d.boundary(record) == where
    session = d.detect(record)
    assert (session is not None) == (where == "crossing")


def test_default_networks_are_the_policy_defaults() -> None:
    assert detector().internal_networks == tuple(ipaddress.ip_network(n) for n in DEFAULT_INTERNAL)


def test_reloaded_networks_change_the_boundary() -> None:
    d = detector(["10.20.0.0/16"])
    record = flow(src_ip="10.20.0.41", dest_ip="10.30.0.1", client_head=b"\x03\x00")
    assert d.detect(record) is not None
    d.set_internal_networks([ipaddress.ip_network("10.0.0.0/8")])
    assert d.detect(record) is None


def test_boundary_needs_the_detector_to_say_where_a_flow_runs() -> None:
    """The index alone (no boundary function) never satisfies a boundary condition."""
    index = SignatureIndex([load_tool_file("demo.yaml", BOUNDARY_SIG)], {})
    record = flow(src_ip="10.20.0.41", dest_ip="203.0.113.9", client_head=b"\x03\x00")
    assert index.match(record) == []
    assert [m.signature.id for m in index.match(record, lambda r: "crossing")] == ["demo-rdp"]
    assert index.match(record, lambda r: "internal") == []


def test_boundary_is_not_looked_at_unless_a_candidate_needs_it() -> None:
    index = SignatureIndex([load_tool_file("demo.yaml", BOUNDARY_SIG)], {})
    asked: list[Any] = []

    def where(record: Any) -> str:
        asked.append(record)
        return "crossing"

    index.match(flow(client_head=b"\x16\x03\x01"), where)  # no candidate: first byte differs
    assert asked == []
    index.match(flow(client_head=b"\x03\x00"), where)
    assert len(asked) == 1


def test_a_boundary_alone_is_only_as_strong_as_a_port() -> None:
    text = BOUNDARY_SIG.replace('payload.client: {pattern: "03 00"}', "dest_port: {in: [3389]}")
    d = Detector(SignatureIndex([load_tool_file("demo.yaml", text)], {}), ENRICHERS)
    session = d.detect(flow(src_ip="10.20.0.41", dest_ip="203.0.113.9", dest_port=3389))
    assert session is not None
    assert session.confidence == "low"


@pytest.mark.parametrize(
    ("match", "words"),
    [
        ("boundary: {equals: inbound}", "must be one of crossing"),
        ("boundary: {equals: [crossing, internal]}", "must be one of crossing"),
        ("boundary: {suffix: crossing}", "boundary takes exactly one of: equals"),
        ("boundary: crossing", "a mapping is required"),
    ],
)
def test_boundary_values_are_checked(match: str, words: str) -> None:
    text = "tool: demo\nsignatures:\n  - id: demo-b\n    channel: direct\n    confidence: high\n"
    text += f"    match:\n      dest_port: {{in: [3389]}}\n      {match}\n"
    with pytest.raises(SourceError) as info:
        load_tool_file("demo.yaml", text)
    assert words in str(info.value)
    assert "demo.yaml:" in str(info.value)


def test_boundary_alone_is_not_indexable() -> None:
    text = BOUNDARY_SIG.replace('      payload.client: {pattern: "03 00"}\n', "")
    with pytest.raises(SourceError) as info:
        SignatureIndex([load_tool_file("demo.yaml", text)], {})
    assert "needs at least one indexable condition" in str(info.value)


def test_boundary_is_normalised_like_a_name() -> None:
    (s,) = load_tool_file("demo.yaml", BOUNDARY_SIG.replace("crossing}", "Crossing}")).signatures
    assert s.conditions[-1].values == ("crossing",)


# --------------------------------------------------------------------------------------------
# Nothing on background and negative captures


NEGATIVES = [
    *sorted(PCAPS.glob("neg-*.pcap")),
    *(p for p in shared_captures() if p.name.startswith("bg-")),
]


@pytest.mark.parametrize("capture", NEGATIVES, ids=lambda p: p.name)
def test_no_session_on_background_and_negative_captures(capture: Path) -> None:
    assert sessions(capture) == []


def test_signatures_load_for_every_tool() -> None:
    index = load_index(SIGNATURES)
    assert set(index.tools) == {*OLD_TOOLS, *tool_files()}
