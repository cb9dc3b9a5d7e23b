"""End-to-end detection: captures in, `rmm-sensor analyze --format json` session records out.

Drives the CLI in-process on the project captures (pcaps/), the real public captures
(/work/shared/captures) and small captures built here with scapy. Also unit-tests the DNS
attribution cache the detector relies on for relays reached without a name.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from sensor.cli import main
from sensor.fingerprints.attribution import NS, AttributionCache
from sensor.signatures.loader import load_index
from tests.protocols.tlsbuild import (
    alpn_ext,
    client_hello_body,
    handshake,
    record,
    sni_ext,
    u16_list_ext,
)

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
SHARED = ROOT / ".." / "shared" / "captures"
SIGNATURES = ROOT / "signatures"
ANYDESK_2022 = SHARED / "anydesk-2022-ndpi.pcapng"
AD = "anydesk"
SC = "screenconnect"

Event = dict[str, Any]
Triple = tuple[str, str, str]  # tool, channel, signature id


# --------------------------------------------------------------------------------------------
# Running the CLI


def run_analyze(capture: Path, *extra: str) -> tuple[int, list[Event]]:
    """Exit status and every JSON record of `rmm-sensor analyze --format json`."""
    out = io.StringIO()
    argv = ["analyze", "--format", "json", "--signatures", str(SIGNATURES), *extra, str(capture)]
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


@cache
def _analyzed(capture: str) -> tuple[int, tuple[str, ...]]:
    code, events = run_analyze(Path(capture))
    return code, tuple(json.dumps(e) for e in events if e["event_type"] == "session")


def sessions(capture: Path) -> list[Event]:
    """Session records of one capture (cached: every capture is analysed once per test run)."""
    code, lines = _analyzed(str(capture))
    assert code in (0, 1), f"{capture.name}: exit status {code}"
    return [json.loads(line) for line in lines]


def triples(events: Sequence[Event]) -> set[Triple]:
    return {
        (e["rmm"]["tool"], e["rmm"]["channel"], ev["signature"])
        for e in events
        for ev in e["rmm"]["evidence"]
    }


def by_server(events: Sequence[Event], dest_ip: str, dest_port: int) -> Event:
    found = [e for e in events if (e["dest_ip"], e["dest_port"]) == (dest_ip, dest_port)]
    assert len(found) == 1, f"sessions to {dest_ip}:{dest_port}: {found}"
    return found[0]


def evidence(event: Event, signature: str) -> list[dict[str, str]]:
    return [ev for ev in event["rmm"]["evidence"] if ev["signature"] == signature]


def shared_captures() -> list[Path]:
    return sorted(p for p in SHARED.iterdir() if p.suffix in (".pcap", ".pcapng"))


# --------------------------------------------------------------------------------------------
# Building captures (Ethernet, IPv4, full TCP sessions) with scapy


T0 = 1_709_283_600.0  # 2024-03-01T09:00:00Z, like the project captures
ROUTER_MAC = "02:00:0a:14:00:01"
RESOLVER = "10.20.0.53"


def _mac(ip: str) -> str:
    if ip.startswith("10.20."):
        _, _, x, y = (int(p) for p in ip.split("."))
        return f"02:0a:14:00:{x:02x}:{y:02x}"
    return ROUTER_MAC


@dataclass
class CaptureBuilder:
    """Packets with increasing timestamps; ``write`` saves them as a classic pcap."""

    t: float = T0
    packets: list[Packet] = field(default_factory=list)

    def _emit(self, src: str, dst: str, l4: Packet, gap: float = 0.001) -> None:
        self.t += gap
        ttl = 128 if src.startswith("10.") else 51
        pkt = Ether(src=_mac(src), dst=_mac(dst)) / IP(src=src, dst=dst, ttl=ttl) / l4
        pkt.time = self.t
        self.packets.append(pkt)

    def wait(self, seconds: float) -> CaptureBuilder:
        self.t += seconds
        return self

    def udp(self, src: str, sport: int, dst: str, dport: int, payload: bytes) -> CaptureBuilder:
        self._emit(src, dst, UDP(sport=sport, dport=dport) / Raw(payload))
        return self

    def dns(
        self, client: str, cport: int, name: str, addresses: Sequence[str], ttl: int = 300
    ) -> CaptureBuilder:
        qid = 0x1000 + cport % 0xF000
        query = DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype="A"))
        answers = [DNSRR(rrname=name, type="A", ttl=ttl, rdata=a) for a in addresses]
        reply = DNS(id=qid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype="A"), an=answers)
        self._emit(client, RESOLVER, UDP(sport=cport, dport=53) / query)
        self._emit(RESOLVER, client, UDP(sport=53, dport=cport) / reply, gap=0.02)
        return self

    def tcp(
        self,
        client: str,
        cport: int,
        server: str,
        sport: int,
        exchanges: Sequence[tuple[str, bytes]],
    ) -> CaptureBuilder:
        """Handshake; each ("c"|"s", data) in MSS-sized segments acked by the peer; FIN."""
        seq = {"c": 1_000_000, "s": 2_000_000}
        ends = {"c": (client, server, cport, sport), "s": (server, client, sport, cport)}

        def seg(side: str, flags: str, data: bytes = b"", gap: float = 0.001) -> None:
            other = "s" if side == "c" else "c"
            src, dst, sp, dp = ends[side]
            ack = seq[other] if "A" in flags else 0
            l4 = TCP(sport=sp, dport=dp, flags=flags, seq=seq[side], ack=ack, window=64240)
            self._emit(src, dst, l4 / Raw(data) if data else l4, gap)
            seq[side] += len(data) + (1 if "S" in flags or "F" in flags else 0)

        seg("c", "S")
        seg("s", "SA", gap=0.02)
        seg("c", "A")
        for side, data in exchanges:
            other = "s" if side == "c" else "c"
            for start in range(0, len(data), 1460):
                seg(side, "PA", data[start : start + 1460], gap=0.01)
            seg(other, "A")
        seg("c", "FA", gap=0.5)
        seg("s", "FA")
        seg("c", "A")
        return self

    def write(self, path: Path) -> Path:
        wrpcap(str(path), self.packets, linktype=1)
        return path


def client_hello(sni: str | None = None, alpn: Sequence[bytes] = ()) -> bytes:
    exts = [
        u16_list_ext(0x000A, (0x001D, 0x0017)),
        ext_point_formats(),
        u16_list_ext(0x000D, (0x0403, 0x0804, 0x0401)),
    ]
    if sni is not None:
        exts.insert(0, sni_ext(sni.encode()))
    if alpn:
        exts.append(alpn_ext(*alpn))
    return record(22, handshake(1, client_hello_body(extensions=exts)), version=0x0301)


def ext_point_formats() -> bytes:
    return bytes.fromhex("000b00020100")


def http_get(host: str, path: str = "/", agent: str = "Mozilla/5.0 (Windows NT 10.0)") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()


HTTP_OK = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\n\r\nok"
SC_RELAY_M1 = bytes.fromhex("87151000") + bytes(12)


def opaque(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------------------------
# The real AnyDesk capture (nDPI, 2022): relay on 443, two direct 7070 flows, two relay look-ups


def test_anydesk_2022_every_session_is_anydesk_with_its_channel() -> None:
    got = sorted(
        (
            (e["proto"], e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"]),
            e["rmm"]["tool"],
            e["rmm"]["channel"],
            sorted(ev["signature"] for ev in e["rmm"]["evidence"]),
        )
        for e in sessions(ANYDESK_2022)
    )
    direct = ["anydesk-direct-7070", "anydesk-tls-client-cert"]
    dns = ["anydesk-dns-relay", "anydesk-dns-site"]
    relay = sorted(
        ["anydesk-tls-alpn", "anydesk-tls-relay-cert", "anydesk-tls-relay-root",
         "anydesk-tls-client-cert"]
    )  # fmt: skip
    assert got == [
        (("TCP", "192.168.1.128", 48260, "195.181.174.176", 443), AD, "relay", relay),
        (("TCP", "192.168.1.178", 52039, "192.168.1.187", 7070), AD, "direct", direct),
        (("TCP", "192.168.1.187", 54164, "192.168.1.178", 7070), AD, "direct", direct),
        (("UDP", "192.168.1.187", 55376, "192.168.1.1", 53), AD, "dns", dns),
        (("UDP", "192.168.1.187", 59511, "192.168.1.1", 53), AD, "dns", dns),
    ]


def test_anydesk_2022_every_tcp_flow_is_in_an_anydesk_session() -> None:
    code, events = run_analyze(ANYDESK_2022, "--flows")
    assert code == 1
    tcp_flows = {e["flow_id"] for e in events if e["event_type"] == "flow" and e["proto"] == "TCP"}
    in_sessions = {
        fid
        for e in events
        if e["event_type"] == "session" and e["rmm"]["tool"] == "anydesk"
        for fid in e["rmm"]["flow_ids"]
    }
    assert len(tcp_flows) == 3
    assert tcp_flows <= in_sessions


def test_anydesk_2022_relay_evidence_values() -> None:
    relay = by_server(sessions(ANYDESK_2022), "195.181.174.176", 443)
    rmm = relay["rmm"]
    assert rmm["confidence"] == "high"
    assert evidence(relay, "anydesk-tls-alpn") == [
        {
            "signature": "anydesk-tls-alpn",
            "field": "tls.alpn",
            "value": "anydesk/6.2.0/linux",
            "confidence": "high",
        }
    ]
    (cert,) = evidence(relay, "anydesk-tls-relay-cert")
    assert cert["field"] == "tls.server_cert.subject"
    assert "CN=AnyNet Relay" in cert["value"]
    assert "O=philandro Software GmbH" in cert["value"]
    (root,) = evidence(relay, "anydesk-tls-relay-root")
    assert root["field"] == "tls.server_cert.issuer"
    assert root["value"].startswith("CN=AnyNet Root CA")
    (client,) = evidence(relay, "anydesk-tls-client-cert")
    assert client["value"] == "CN=AnyDesk Client"
    assert rmm["attributes"]["client_version"] == "6.2.0"
    assert rmm["attributes"]["os"] == "linux"
    # The relay's address is not one of the two answered look-ups: no attribution, no name.
    assert all(ev["field"] != "dns-attribution" for ev in rmm["evidence"])
    assert rmm["instance"] == "cert:" + rmm["attributes"]["client_cert_sha1"].replace(":", "")[:16]


def test_anydesk_2022_direct_flows_carry_both_peer_certificates() -> None:
    events = sessions(ANYDESK_2022)
    a = by_server(events, "192.168.1.178", 7070)
    b = by_server(events, "192.168.1.187", 7070)
    for e in (a, b):
        (ev,) = evidence(e, "anydesk-direct-7070")
        assert ev == {
            "signature": "anydesk-direct-7070",
            "field": "tls.server_cert.subject",
            "value": "CN=AnyDesk Client",
            "confidence": "high",
        }
    # Each peer's certificate is the client certificate in one flow and the server's in the other.
    assert a["rmm"]["attributes"]["client_cert_sha1"] == b["rmm"]["attributes"]["server_cert_sha1"]
    assert a["rmm"]["attributes"]["server_cert_sha1"] == b["rmm"]["attributes"]["client_cert_sha1"]


@pytest.mark.parametrize(
    "name", ["relay-9b6827f2.net.anydesk.com", "relay-3185a847.net.anydesk.com"]
)
def test_anydesk_2022_relay_lookups(name: str) -> None:
    (e,) = [x for x in sessions(ANYDESK_2022) if x["rmm"]["server_name"] == name]
    assert (e["rmm"]["tool"], e["rmm"]["channel"], e["dest_port"]) == ("anydesk", "dns", 53)
    assert evidence(e, "anydesk-dns-relay") == [
        {
            "signature": "anydesk-dns-relay",
            "field": "dns.query",
            "value": name,
            "confidence": "high",
        }
    ]
    assert e["rmm"]["confidence"] == "high"


# --------------------------------------------------------------------------------------------
# Project captures: tool, channel and evidence


SC_WEB: set[Triple] = {
    (SC, "web", "screenconnect-http-server"),
    (SC, "download", "screenconnect-http-installer"),
    (SC, "download", "screenconnect-http-server"),
}
SC_M1: set[Triple] = {(SC, "relay", "screenconnect-relay-87")}
AD_RELAY_DNS: set[Triple] = {
    (AD, "dns", "anydesk-dns-relay"),
    (AD, "dns", "anydesk-dns-site"),
    (AD, "relay", "anydesk-tls-alpn"),
    (AD, "relay", "anydesk-tls-relay-cert"),
    (AD, "relay", "anydesk-tls-relay-root"),
    (AD, "relay", "anydesk-tls-client-cert"),
    (AD, "relay", "anydesk-dns-relay"),  # the relay flow attributed through the look-up
}
AD_DIRECT: set[Triple] = {
    (AD, "direct", "anydesk-direct-7070"),
    (AD, "direct", "anydesk-tls-client-cert"),
}

EXPECTED: dict[str, tuple[int, set[Triple]]] = {
    "sc-relay-m1-8041.pcap": (1, SC_M1),
    "incident-2023.pcap": (
        3,
        {
            (SC, "download", "screenconnect-http-installer"),
            (SC, "download", "screenconnect-http-server"),
            (SC, "relay", "screenconnect-relay-87"),
            (AD, "relay", "anydesk-tls-alpn"),
            (AD, "relay", "anydesk-tls-relay-cert"),
            (AD, "relay", "anydesk-tls-relay-root"),
            (AD, "relay", "anydesk-tls-client-cert"),
        },
    ),
    "sc-exploit-cve-2024-1709.pcap": (3, SC_WEB),
    "sc-exploit-cve-2024-1708.pcap": (3, {(SC, "web", "screenconnect-http-server")}),
    "sc-relay-m2-443.pcap": (
        2,
        {
            (SC, "dns", "screenconnect-dns-relay"),
            (SC, "dns", "screenconnect-dns-cloud"),
            (SC, "relay", "screenconnect-relay-87"),
            (SC, "relay", "screenconnect-dns-relay"),
        },
    ),
    "sc-relay-m3.pcap": (
        1,
        {(SC, "relay", "screenconnect-relay-87"), (SC, "relay", "screenconnect-relay-87-12")},
    ),
    "sc-relay-legacy.pcap": (1, {(SC, "relay", "screenconnect-relay-legacy")}),
    "sc-web-onprem-8040.pcap": (2, SC_WEB),
    "sc-web-cloud-tls.pcap": (
        2,
        {(SC, "dns", "screenconnect-dns-cloud"), (SC, "web", "screenconnect-tls-sni-cloud")},
    ),
    "ad-discovery.pcap": (2, {(AD, "discovery", "anydesk-discovery")}),
    "ad-relay-tls.pcap": (2, AD_RELAY_DNS),
    "ad-relay-6568.pcap": (
        1,
        {
            (AD, "relay", "anydesk-tls-alpn"),
            (AD, "relay", "anydesk-tls-relay-cert"),
            (AD, "relay", "anydesk-tls-relay-root"),
            (AD, "relay", "anydesk-tls-client-cert"),
        },
    ),
    "ad-direct-7070.pcap": (1, AD_DIRECT),
    "ad-direct-inbound.pcap": (1, AD_DIRECT),
    "ad-download.pcap": (
        3,
        {
            (AD, "dns", "anydesk-dns-site"),
            (AD, "download", "anydesk-http-download"),
            (AD, "download", "anydesk-http-host"),
            (AD, "web", "anydesk-http-user-agent"),
        },
    ),
    "demo-mixed.pcap": (5, SC_WEB | SC_M1 | AD_RELAY_DNS),
}


def test_the_table_covers_every_positive_project_capture() -> None:
    # tool-*.pcap (the other tools' captures) have their own table in tests/test_tools.py
    positives = {p.name for p in PCAPS.glob("*.pcap") if not p.name.startswith(("neg-", "tool-"))}
    assert positives == set(EXPECTED)


@pytest.mark.parametrize(("capture", "count", "expected"), [(k, *v) for k, v in EXPECTED.items()])
def test_project_capture_tool_channel_evidence(
    capture: str, count: int, expected: set[Triple]
) -> None:
    events = sessions(PCAPS / capture)
    assert triples(events) == expected
    assert len(events) == count
    assert all(e["rmm"]["confidence"] in ("medium", "high") for e in events)


def test_screenconnect_onprem_web_keeps_version_relay_and_key() -> None:
    events = sessions(PCAPS / "sc-web-onprem-8040.pcap")
    web = next(e for e in events if e["rmm"]["channel"] == "web")
    download = next(e for e in events if e["rmm"]["channel"] == "download")
    assert web["rmm"]["attributes"]["server_version"] == "19.2.24707.7131"
    attrs = download["rmm"]["attributes"]
    assert attrs["server_version"] == "19.2.24707.7131"
    assert attrs["relay_host"] == "support.vendor.example"
    assert attrs["relay_port"] == "8041"
    assert attrs["key_sha256"] == (
        "fea249e33df7a4669c607cb1878705f1ee5b3cf9c2e29d380b4b89458758ca28"
    )
    assert download["rmm"]["instance"] == "key:fea249e33df7a466"
    (installer,) = evidence(download, "screenconnect-http-installer")
    assert installer["value"] == "/Bin/ScreenConnect.ClientSetup.exe"
    for e in events:
        assert (e["dest_ip"], e["dest_port"]) == ("198.51.100.7", 8040)
        assert e["rmm"]["server_name"] == "support.vendor.example"  # Host header, port dropped


def test_anydesk_discovery_decodes_both_hosts() -> None:
    got = {
        e["src_ip"]: (
            e["rmm"]["instance"],
            {k: e["rmm"]["attributes"][k] for k in ("anydesk_id", "hostname", "user")},
        )
        for e in sessions(PCAPS / "ad-discovery.pcap")
    }
    assert got == {
        "10.20.0.31": (
            "123456789",
            {"anydesk_id": "123456789", "hostname": "FRONTDESK-PC", "user": "alice"},
        ),
        "10.20.0.32": (
            "987654321",
            {"anydesk_id": "987654321", "hostname": "LAB-01", "user": "bob"},
        ),
    }


@pytest.mark.parametrize(
    ("capture", "dest", "name", "signature"),
    [
        (
            "sc-relay-m2-443.pcap",
            ("203.0.113.10", 443),
            "instance-ab12cd-relay.screenconnect.com",
            "screenconnect-dns-relay",
        ),
        (
            "ad-relay-tls.pcap",
            ("203.0.113.40", 443),
            "relay-0a1b2c3d.net.anydesk.com",
            "anydesk-dns-relay",
        ),
    ],
)
def test_relay_flow_is_attributed_through_dns(
    capture: str, dest: tuple[str, int], name: str, signature: str
) -> None:
    relay = by_server(sessions(PCAPS / capture), *dest)
    assert relay["rmm"]["channel"] == "relay"
    attributed = [ev for ev in relay["rmm"]["evidence"] if ev["field"] == "dns-attribution"]
    assert attributed == [
        {"signature": signature, "field": "dns-attribution", "value": name, "confidence": "medium"}
    ]
    assert relay["rmm"]["server_name"] == name


def test_screenconnect_cloud_tenant_and_legacy_relay_host() -> None:
    cloud = sessions(PCAPS / "sc-web-cloud-tls.pcap")
    web = by_server(cloud, "203.0.113.20", 443)
    assert web["rmm"]["server_name"] == "acme.screenconnect.com"
    assert web["rmm"]["attributes"]["tenant"] == "acme"
    (legacy,) = sessions(PCAPS / "sc-relay-legacy.pcap")
    assert legacy["rmm"]["attributes"]["relay_host"] == "relay.legacy-vendor.example"
    assert legacy["rmm"]["instance"] == "relay.legacy-vendor.example"


def test_anydesk_client_certificate_follows_the_endpoint_across_captures() -> None:
    """10.20.0.31 keeps one certificate in the relay, 6568, direct and inbound captures."""

    def attr(capture: str, key: str) -> str:
        (e,) = [x for x in sessions(PCAPS / capture) if x["proto"] == "TCP"]
        value: str = e["rmm"]["attributes"][key]
        return value

    frontdesk = attr("ad-relay-tls.pcap", "client_cert_sha1")
    assert attr("ad-relay-6568.pcap", "client_cert_sha1") == frontdesk
    assert attr("ad-direct-7070.pcap", "client_cert_sha1") == frontdesk
    assert attr("ad-direct-inbound.pcap", "server_cert_sha1") == frontdesk
    assert attr("ad-direct-inbound.pcap", "client_cert_sha1") != frontdesk


def test_anydesk_relay_reports_version_and_os() -> None:
    for capture in ("ad-relay-tls.pcap", "ad-relay-6568.pcap"):
        (relay,) = [e for e in sessions(PCAPS / capture) if e["rmm"]["channel"] == "relay"]
        assert relay["rmm"]["attributes"]["client_version"] == "7.1.0"
        assert relay["rmm"]["attributes"]["os"] == "windows"
        (alpn,) = evidence(relay, "anydesk-tls-alpn")
        assert alpn["value"] == "anydesk/7.1.0/windows"


# --------------------------------------------------------------------------------------------
# Nothing on negatives, background traffic and built look-alikes


NEGATIVE_CAPTURES = [
    *sorted(PCAPS.glob("neg-*.pcap")),
    *(p for p in shared_captures() if p.name.startswith("bg-")),
    SHARED / "bench-background-concat.pcap",
]


def test_negative_capture_lists_are_complete() -> None:
    names = {p.name for p in NEGATIVE_CAPTURES}
    assert {
        "neg-lookalike-names.pcap",
        "neg-tls-8041-7070.pcap",
        "neg-udp-50001.pcap",
        "neg-0x87-not-relay.pcap",
    } <= names
    assert sum(n.startswith("bg-") for n in names) >= 17


@pytest.mark.parametrize("capture", NEGATIVE_CAPTURES, ids=lambda p: p.name)
def test_no_session_on_negative_and_background_captures(capture: Path) -> None:
    code, events = run_analyze(capture, "--flows")
    assert code == 0
    assert [e for e in events if e["event_type"] != "flow"] == []
    assert any(e["event_type"] == "flow" for e in events)  # the capture was read


OTHER_TOOLS = [p for p in shared_captures() if p.name.split("-")[0] in ("rdp", "vnc", "citrix")]
OTHER_TOOLS += [SHARED / "teamviewer-ndpi.pcap"]


@pytest.mark.parametrize("capture", OTHER_TOOLS, ids=lambda p: p.name)
def test_other_remote_access_tools_are_not_anydesk_or_screenconnect(capture: Path) -> None:
    assert [e for e in sessions(capture) if e["rmm"]["tool"] in (AD, SC)] == []


LOOKALIKE_NAMES = [
    "screenconnect.com.evil.test",
    "notanydesk.com",
    "anydesk.com.example.net",
    "xscreenconnect.com",
    "instance-ab12cd-relay.screenconnect.com.evil.test",
    "net.anydesk.company",
]


@pytest.mark.parametrize("name", LOOKALIKE_NAMES)
def test_lookalike_dns_names_are_not_detected(tmp_path: Path, name: str) -> None:
    cap = CaptureBuilder()
    cap.dns("10.20.0.41", 53100, name, ["203.0.113.60"])
    # A connection to the answered address must not be attributed either.
    cap.tcp("10.20.0.41", 50400, "203.0.113.60", 443, [("c", opaque(300, 1)), ("s", opaque(80, 2))])
    cap.tcp("10.20.0.41", 50401, "203.0.113.60", 443, [("c", client_hello(sni=name))])
    code, events = run_analyze(cap.write(tmp_path / "lookalike.pcap"))
    assert (code, events) == (0, [])


NOT_RELAY_87 = [
    pytest.param([("c", bytes.fromhex("87151000") + bytes(11) + b"\x01" + opaque(200, 3))], 8041,
                 id="nonzero-byte-15"),
    pytest.param([("c", bytes.fromhex("87151000") + b"\x01" + bytes(11) + opaque(200, 4))], 443,
                 id="nonzero-byte-4"),
    pytest.param([("c", bytes.fromhex("87000000") + opaque(60, 5))], 8041, id="87-00-00-00"),
    pytest.param([("c", bytes.fromhex("87151100") + bytes(12) + opaque(200, 6))], 8041,
                 id="byte-2-not-10"),
    pytest.param([("s", b"220 ready\r\n"), ("c", SC_RELAY_M1 + opaque(200, 7))], 8041,
                 id="server-speaks-first"),
    pytest.param([("c", SC_RELAY_M1 + opaque(700, 8))], 8041, id="first-segment-600-plus"),
    pytest.param([("c", opaque(16, 9)), ("c", SC_RELAY_M1)], 8041, id="not-the-first-bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("exchanges", "port"), NOT_RELAY_87)
def test_0x87_payloads_that_are_not_the_relay_header(
    tmp_path: Path, exchanges: list[tuple[str, bytes]], port: int
) -> None:
    cap = CaptureBuilder().tcp("10.20.0.41", 50500, "198.51.100.70", port, exchanges)
    code, events = run_analyze(cap.write(tmp_path / "not-relay.pcap"))
    assert (code, events) == (0, [])


def test_0x87_builder_control_the_real_header_is_detected(tmp_path: Path) -> None:
    """The same builder with the real M1 header: proves the look-alikes above are near misses."""
    cap = CaptureBuilder().tcp(
        "10.20.0.41", 50500, "198.51.100.70", 8041, [("c", SC_RELAY_M1 + opaque(200, 7))]
    )
    code, events = run_analyze(cap.write(tmp_path / "relay.pcap"))
    assert code == 1
    assert triples(events) == SC_M1


def _discovery(host: bytes, user: bytes) -> bytes:
    def field_(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    return (
        b"\x3e\xd1\x01" + (123456789).to_bytes(4, "big") + bytes(4) + b"\x02\x01"
        + field_(host) + field_(user) + bytes(4) + field_(b"ad") + b"\x00" + field_(b"main")
        + b"\x02\xc3\x51"
    )  # fmt: skip


UDP_GARBAGE = [
    pytest.param(50001, opaque(64, 10), id="random"),
    pytest.param(50001, b"\x3e\xd1\x01" + opaque(61, 11), id="magic-then-random"),
    pytest.param(50001, _discovery(b"FRONTDESK-PC", b"alice")[:11], id="cut-before-hostname"),
    pytest.param(50002, _discovery(b"FRONTDESK-PC", b"alice")[:20], id="cut-in-hostname"),
    pytest.param(
        50001,
        _discovery(b"", b"")[:13] + b"\xff\xff\xff\xf0" + opaque(12, 12),
        id="hostname-length-huge",
    ),
    pytest.param(50001, b"\x3e\xd1\x02" + _discovery(b"PC", b"u")[3:], id="type-not-01"),
    pytest.param(50003, bytes(64), id="zeros"),
]


@pytest.mark.parametrize(("port", "payload"), UDP_GARBAGE)
def test_udp_50001_garbage_is_not_discovery(tmp_path: Path, port: int, payload: bytes) -> None:
    cap = CaptureBuilder()
    for _ in range(3):
        cap.udp("10.20.0.41", 50001, "239.255.102.18", port, payload).wait(5)
    code, events = run_analyze(cap.write(tmp_path / "udp.pcap"))
    assert (code, events) == (0, [])


def test_udp_builder_control_a_real_discovery_datagram_is_detected(tmp_path: Path) -> None:
    cap = CaptureBuilder().udp(
        "10.20.0.41", 50001, "239.255.102.18", 50001, _discovery(b"DESK-7", b"carol")
    )
    code, events = run_analyze(cap.write(tmp_path / "udp.pcap"))
    assert code == 1
    (e,) = events[:1]
    assert e["rmm"]["attributes"]["hostname"] == "DESK-7"
    assert e["rmm"]["attributes"]["user"] == "carol"


# --------------------------------------------------------------------------------------------
# DNS attribution end to end: expiry, SNI naming another host, relay reached only by address


def _relay_lookup_then_connect(gap_s: float, ttl: int = 60, first: bytes = b"") -> CaptureBuilder:
    cap = CaptureBuilder().dns("10.20.0.41", 53200, "relay-77aa88bb.net.anydesk.com",
                               ["203.0.113.40"], ttl=ttl)  # fmt: skip
    cap.wait(gap_s)
    payload = first or opaque(120, 13)
    return cap.tcp(
        "10.20.0.41", 50600, "203.0.113.40", 443, [("c", payload), ("s", opaque(90, 14))]
    )


def test_flow_to_an_answered_relay_address_is_attributed(tmp_path: Path) -> None:
    _, events = run_analyze(_relay_lookup_then_connect(5).write(tmp_path / "a.pcap"))
    relay = by_server([e for e in events if e["event_type"] == "session"], "203.0.113.40", 443)
    assert relay["rmm"]["tool"] == AD
    assert relay["rmm"]["channel"] == "relay"
    assert relay["rmm"]["evidence"] == [
        {
            "signature": "anydesk-dns-relay",
            "field": "dns-attribution",
            "value": "relay-77aa88bb.net.anydesk.com",
            "confidence": "medium",
        }
    ]
    assert relay["rmm"]["server_name"] == "relay-77aa88bb.net.anydesk.com"


def test_attribution_outlives_a_short_ttl_up_to_the_floor(tmp_path: Path) -> None:
    """TTL 60 s is raised to the 300 s floor: a connection 200 s later is still attributed."""
    _, events = run_analyze(_relay_lookup_then_connect(200).write(tmp_path / "a.pcap"))
    assert any(e["dest_port"] == 443 for e in events if e["event_type"] == "session")


def test_attribution_expires(tmp_path: Path) -> None:
    _, events = run_analyze(_relay_lookup_then_connect(400).write(tmp_path / "a.pcap"))
    assert [e["dest_port"] for e in events if e["event_type"] == "session"] == [53]


def test_attribution_is_not_given_to_tls_naming_another_host(tmp_path: Path) -> None:
    cap = _relay_lookup_then_connect(5, first=client_hello(sni="www.example.org"))
    _, events = run_analyze(cap.write(tmp_path / "a.pcap"))
    assert [e["dest_port"] for e in events if e["event_type"] == "session"] == [53]


# --------------------------------------------------------------------------------------------
# Every signature fires


# Signatures no committed or shared capture exercises; each fires on a built capture below.
NOT_ON_ANY_CAPTURE = frozenset(
    {
        "anydesk-tls-sni-site",
        "screenconnect-dns-connectwise-control",
        "screenconnect-tls-sni-relay",
        "screenconnect-http-host-cloud",
    }
)


def test_every_signature_fires_on_some_capture() -> None:
    fired = set()
    for capture in [*sorted(PCAPS.glob("*.pcap")), *shared_captures()]:
        fired |= {sig for _, _, sig in triples(sessions(capture))}
    loaded = {s.id for s in load_index(SIGNATURES).signatures}
    assert fired <= loaded
    assert loaded - fired == NOT_ON_ANY_CAPTURE, (
        "update NOT_ON_ANY_CAPTURE: a capture now exercises a listed signature, or a new "
        "signature fires on no capture"
    )


BUILT_POSITIVES = [
    pytest.param(
        lambda c: c.tcp("10.20.0.41", 50700, "203.0.113.50", 443,
                        [("c", client_hello(sni="my.anydesk.com", alpn=[b"h2"]))]),
        {(AD, "web", "anydesk-tls-sni-site")},
        id="anydesk-tls-sni-site",
    ),
    pytest.param(
        lambda c: c.dns("10.20.0.41", 53300, "control.connectwise.com", ["203.0.113.20"]),
        {(SC, "dns", "screenconnect-dns-connectwise-control")},
        id="screenconnect-dns-connectwise-control",
    ),
    pytest.param(
        lambda c: c.tcp("10.20.0.41", 50701, "203.0.113.10", 443,
                        [("c", client_hello(sni="instance-ab12cd-relay.screenconnect.com"))]),
        {(SC, "relay", "screenconnect-tls-sni-relay"),
         (SC, "relay", "screenconnect-tls-sni-cloud")},
        id="screenconnect-tls-sni-relay",
    ),
    pytest.param(
        lambda c: c.tcp("10.20.0.41", 50702, "203.0.113.20", 80,
                        [("c", http_get("acme.screenconnect.com", "/Login")), ("s", HTTP_OK)]),
        {(SC, "web", "screenconnect-http-host-cloud")},
        id="screenconnect-http-host-cloud",
    ),
]  # fmt: skip


def test_built_positives_cover_the_signatures_no_capture_fires() -> None:
    assert {p.id for p in BUILT_POSITIVES} == NOT_ON_ANY_CAPTURE


@pytest.mark.parametrize(("build", "expected"), BUILT_POSITIVES)
def test_signature_fires_on_a_built_capture(
    tmp_path: Path, build: Any, expected: set[Triple]
) -> None:
    cap = CaptureBuilder()
    build(cap)
    code, events = run_analyze(cap.write(tmp_path / "positive.pcap"))
    assert code == 1
    sess = [e for e in events if e["event_type"] == "session"]
    assert len(sess) == 1
    assert triples(sess) == expected


# --------------------------------------------------------------------------------------------
# AttributionCache


def _remember(
    cache_: AttributionCache, address: str, ttl_s: int, ts_ns: int, name: str = ""
) -> None:
    cache_.remember(
        address, name or f"relay-{address}.net.anydesk.com", ttl_s, ts_ns,
        signature="anydesk-dns-relay", tool="anydesk", channel="relay", confidence="medium",
    )  # fmt: skip


START = 1_000 * NS


@pytest.mark.parametrize(
    ("ttl_s", "offset_ns", "hit"),
    [
        (5, 0, True),
        (5, 299 * NS, True),
        (5, 300 * NS, True),  # the floor (300 s) replaces a shorter TTL
        (5, 300 * NS + 1, False),
        (0, 300 * NS, True),
        (-7, 300 * NS, True),
        (3_600, 3_600 * NS, True),  # a TTL between floor and cap is kept as it is
        (3_600, 3_600 * NS + 1, False),
        (10**9, 86_400 * NS, True),  # capped at one day
        (10**9, 86_400 * NS + 1, False),
        (300, -NS, True),  # a second of slack before the answer (timestamps of flows cross)
        (300, -NS - 1, False),
    ],
)
def test_cache_ttl_floor_cap_and_expiry(ttl_s: int, offset_ns: int, hit: bool) -> None:
    c = AttributionCache(max_entries=8, min_ttl_s=300, max_ttl_s=86_400)
    _remember(c, "203.0.113.40", ttl_s, START)
    got = c.lookup("203.0.113.40", START + offset_ns)
    assert (got is not None) == hit
    if got is not None:
        assert got.address == "203.0.113.40"
        assert got.seen_ns == START
        assert got.expires_ns == START + min(max(ttl_s, 300), 86_400) * NS
        assert (got.tool, got.channel, got.signature) == ("anydesk", "relay", "anydesk-dns-relay")


def test_cache_unknown_address() -> None:
    c = AttributionCache()
    _remember(c, "203.0.113.40", 300, START)
    assert c.lookup("203.0.113.41", START) is None


def test_cache_is_bounded_and_counts_evictions() -> None:
    c = AttributionCache(max_entries=3)
    for i in range(5):
        _remember(c, f"192.0.2.{i}", 300, START + i * NS)
    assert len(c) == 3
    assert c.evicted == 2
    assert [c.lookup(f"192.0.2.{i}", START + 5 * NS) is not None for i in range(5)] == [
        False, False, True, True, True,
    ]  # fmt: skip


def test_cache_answer_again_refreshes_entry_and_its_age() -> None:
    c = AttributionCache(max_entries=3, min_ttl_s=300)
    for i in range(3):
        _remember(c, f"192.0.2.{i}", 300, START)
    _remember(c, "192.0.2.0", 300, START + 200 * NS, name="relay-new.net.anydesk.com")
    _remember(c, "192.0.2.9", 300, START + 201 * NS)  # evicts .1, the oldest now
    assert len(c) == 3
    assert c.evicted == 1
    assert c.lookup("192.0.2.1", START + 201 * NS) is None
    again = c.lookup("192.0.2.0", START + 450 * NS)  # past the first answer's expiry
    assert again is not None
    assert again.name == "relay-new.net.anydesk.com"
    assert again.expires_ns == START + 500 * NS


@pytest.mark.parametrize("n", [1, 2, 10, 100])
def test_cache_never_exceeds_its_bound(n: int) -> None:
    c = AttributionCache(max_entries=n)
    for i in range(3 * n + 7):
        _remember(c, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 300, START + i)
        assert len(c) <= n
    assert c.evicted == 2 * n + 7
