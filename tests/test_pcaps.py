"""The committed sample captures in pcaps/ still hold the wire facts pcaps/README.md claims.

Packets are decoded with dpkt only; X.509 certificates found in TLS 1.2 handshakes are decoded
with cryptography.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import itertools
import struct
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import dpkt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

PCAP_DIR = Path(__file__).resolve().parents[1] / "pcaps"
T0_US = 1_709_283_600 * 1_000_000  # 2024-03-01T09:00:00Z

ALL_FILES = [
    "sc-relay-m1-8041.pcap",
    "sc-relay-m2-443.pcap",
    "sc-relay-m3.pcap",
    "sc-relay-legacy.pcap",
    "sc-web-onprem-8040.pcap",
    "sc-web-cloud-tls.pcap",
    "ad-discovery.pcap",
    "ad-relay-tls.pcap",
    "ad-relay-6568.pcap",
    "ad-direct-7070.pcap",
    "ad-direct-inbound.pcap",
    "ad-download.pcap",
    "neg-lookalike-names.pcap",
    "neg-tls-8041-7070.pcap",
    "neg-udp-50001.pcap",
    "neg-0x87-not-relay.pcap",
    "demo-mixed.pcap",
]

ALLOWED_NETS = [
    ipaddress.ip_network(n)
    for n in ("10.20.0.0/16", "198.51.100.0/24", "203.0.113.0/24", "239.255.102.18/32")
]


# --------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, slots=True)
class Packet:
    ts_us: int
    eth: dpkt.ethernet.Ethernet
    ip: dpkt.ip.IP


@dataclass(frozen=True, slots=True)
class Segment:
    ts_us: int
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    payload: bytes


@dataclass(slots=True)
class Connection:
    client: tuple[str, int]
    server: tuple[str, int]
    segments: list[Segment] = field(default_factory=list)

    def payloads(self, from_client: bool) -> list[bytes]:
        src = self.client if from_client else self.server
        return [s.payload for s in self.segments if s.src == src and s.payload]

    def stream(self, from_client: bool) -> bytes:
        return b"".join(self.payloads(from_client))


def ip_str(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


@cache
def packets(name: str) -> tuple[Packet, ...]:
    with (PCAP_DIR / name).open("rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        out = []
        for ts, buf in reader:
            eth = dpkt.ethernet.Ethernet(buf)
            assert isinstance(eth.data, dpkt.ip.IP), f"{name}: non-IPv4 frame"
            out.append(Packet(round(ts * 1_000_000), eth, eth.data))
    return tuple(out)


@cache
def connections(name: str) -> tuple[Connection, ...]:
    """TCP connections in first-seen order; the SYN sender is the client."""
    conns: dict[frozenset[tuple[str, int]], Connection] = {}
    for p in packets(name):
        tcp = p.ip.data
        if not isinstance(tcp, dpkt.tcp.TCP):
            continue
        src, dst = (ip_str(p.ip.src), tcp.sport), (ip_str(p.ip.dst), tcp.dport)
        key = frozenset((src, dst))
        if key not in conns:
            assert tcp.flags == dpkt.tcp.TH_SYN, f"{name}: {src}->{dst} does not start with SYN"
            conns[key] = Connection(src, dst)
        seg = Segment(p.ts_us, src, dst, tcp.seq, tcp.ack, tcp.flags, bytes(tcp.data))
        conns[key].segments.append(seg)
    return tuple(conns.values())


def udp_datagrams(name: str) -> list[tuple[Packet, dpkt.udp.UDP]]:
    return [(p, p.ip.data) for p in packets(name) if isinstance(p.ip.data, dpkt.udp.UDP)]


def dns_answers(name: str) -> list[tuple[str, list[str]]]:
    """(query name, A answers) of every DNS response in the file."""
    out = []
    for _, udp in udp_datagrams(name):
        if udp.sport != 53:
            continue
        msg = dpkt.dns.DNS(udp.data)
        answers = [ip_str(rr.rdata) for rr in msg.an if rr.type == dpkt.dns.DNS_A]
        out.append((msg.qd[0].name, answers))
    return out


def conn_to(name: str, server: tuple[str, int]) -> Connection:
    matches = [c for c in connections(name) if c.server == server]
    assert len(matches) == 1, f"{name}: expected one connection to {server}"
    return matches[0]


# --------------------------------------------------------------------------------------------
# Checksums


def checksum_ok(data: bytes) -> bool:
    return dpkt.in_cksum(data) == 0


def transport_checksum_ok(ip: dpkt.ip.IP, proto: int) -> bool:
    segment = bytes(ip)[ip.hl * 4 : ip.len]
    pseudo = ip.src + ip.dst + struct.pack("!BBH", 0, proto, len(segment))
    return checksum_ok(pseudo + segment)


# --------------------------------------------------------------------------------------------
# Format, time, addresses, checksums, TCP state for every file


@pytest.mark.parametrize("name", ALL_FILES)
def test_classic_pcap_ethernet_microseconds_small(name: str) -> None:
    path = PCAP_DIR / name
    head = path.read_bytes()[:24]
    magic = head[:4]
    assert magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")  # microsecond, either byte order
    endian = "<" if magic == b"\xd4\xc3\xb2\xa1" else ">"
    major, minor, _, _, _, linktype = struct.unpack(endian + "HHiIII", head[4:])
    assert (major, minor, linktype) == (2, 4, 1)
    assert path.stat().st_size < 200_000
    assert len(packets(name)) >= 4


@pytest.mark.parametrize("name", ALL_FILES)
def test_timestamps_start_at_t0_and_increase(name: str) -> None:
    stamps = [p.ts_us for p in packets(name)]
    assert stamps[0] == T0_US
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert stamps[-1] - stamps[0] < 120 * 1_000_000


@pytest.mark.parametrize("name", ALL_FILES)
def test_addresses_follow_the_documented_plan(name: str) -> None:
    for p in packets(name):
        for raw in (p.ip.src, p.ip.dst):
            addr = ipaddress.IPv4Address(raw)
            assert any(addr in net for net in ALLOWED_NETS), f"{name}: {addr}"
        udp = p.ip.data
        if isinstance(udp, dpkt.udp.UDP) and 53 in (udp.sport, udp.dport):
            assert "10.20.0.53" in (ip_str(p.ip.src), ip_str(p.ip.dst))


@pytest.mark.parametrize("name", ALL_FILES)
def test_ip_tcp_udp_checksums_are_valid(name: str) -> None:
    for p in packets(name):
        assert checksum_ok(bytes(p.ip)[: p.ip.hl * 4]), f"{name}: IP checksum"
        if isinstance(p.ip.data, dpkt.tcp.TCP):
            assert transport_checksum_ok(p.ip, 6), f"{name}: TCP checksum"
        elif isinstance(p.ip.data, dpkt.udp.UDP):
            assert transport_checksum_ok(p.ip, 17), f"{name}: UDP checksum"
        assert len(p.eth) <= 1514  # no loopback-sized frames left


@pytest.mark.parametrize("name", ALL_FILES)
def test_tcp_sessions_are_complete_and_consistent(name: str) -> None:
    for conn in connections(name):
        segs = conn.segments
        syn, syn_ack, ack = segs[0], segs[1], segs[2]
        assert syn.flags == dpkt.tcp.TH_SYN
        assert syn_ack.flags == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK
        assert syn_ack.src == conn.server and syn_ack.ack == (syn.seq + 1) & 0xFFFFFFFF
        assert ack.src == conn.client and ack.flags & dpkt.tcp.TH_ACK
        next_seq = {conn.client: syn.seq + 1, conn.server: syn_ack.seq + 1}
        fins: set[tuple[str, int]] = set()
        reset = False
        for s in segs[2:]:
            assert s.seq == next_seq[s.src] & 0xFFFFFFFF, f"{name}: gap or overlap in {s.src}"
            if s.flags & dpkt.tcp.TH_ACK:
                peer = conn.server if s.src == conn.client else conn.client
                assert s.ack == next_seq[peer] & 0xFFFFFFFF, f"{name}: ack beyond peer's data"
            next_seq[s.src] += len(s.payload) + bool(s.flags & dpkt.tcp.TH_FIN)
            fins |= {s.src} if s.flags & dpkt.tcp.TH_FIN else set()
            reset = reset or bool(s.flags & dpkt.tcp.TH_RST)
        assert reset or fins == {conn.client, conn.server}, f"{name}: connection not closed"


# --------------------------------------------------------------------------------------------
# ScreenConnect relay (protocols.md 1.3 and 4)


def is_sc_relay_hello(payload: bytes) -> bool:
    """The 0x87 family as the ET rules define it (byte 1 not pinned)."""
    return (
        len(payload) < 600
        and payload[:1] == b"\x87"
        and payload[2:4] == b"\x10\x00"
        and payload[4:16] == bytes(12)
    )


def is_sc_m3(payload: bytes) -> bool:
    if not (is_sc_relay_hello(payload) and payload[1] == 0x12 and len(payload) > 25):
        return False
    skip = payload[24]
    return payload[23] == 0x01 and len(payload) > 25 + skip and payload[25 + skip] == 0x01


@pytest.mark.parametrize(
    ("name", "server", "byte1", "dns"),
    [
        (
            "sc-relay-m1-8041.pcap",
            ("198.51.100.7", 8041),
            0x15,
            ("support.vendor.example", "198.51.100.7"),
        ),
        (
            "sc-relay-m2-443.pcap",
            ("203.0.113.10", 443),
            0x1C,
            ("instance-ab12cd-relay.screenconnect.com", "203.0.113.10"),
        ),
        ("sc-relay-m3.pcap", ("198.51.100.17", 8041), 0x12, None),
    ],
)
def test_sc_relay_first_client_payload(
    name: str, server: tuple[str, int], byte1: int, dns: tuple[str, str] | None
) -> None:
    conn = conn_to(name, server)
    data = [s for s in conn.segments if s.payload]
    assert data[0].src == conn.client  # the client speaks first
    first = data[0].payload
    assert first[:16] == bytes([0x87, byte1, 0x10, 0x00]) + bytes(12)
    assert is_sc_relay_hello(first)
    assert not first.startswith(b"\x16\x03")  # not TLS, even on 443
    assert len(conn.payloads(False)) >= 2 and len(conn.payloads(True)) >= 2
    if dns is not None:
        assert dns_answers(name) == [(dns[0], [dns[1]])]


def test_sc_relay_m3_layout_and_silent_server() -> None:
    conn = conn_to("sc-relay-m3.pcap", ("198.51.100.17", 8041))
    first_client = next(i for i, s in enumerate(conn.segments) if s.payload)
    before = conn.segments[:first_client]
    assert sum(len(s.payload) for s in before if s.src == conn.server) == 0
    first = conn.segments[first_client].payload
    assert is_sc_m3(first)
    assert first[23] == 0x01 and first[25 + first[24]] == 0x01


def test_sc_relay_legacy_token_version_and_host() -> None:
    conn = conn_to("sc-relay-legacy.pcap", ("198.51.100.23", 8041))
    first = conn.payloads(True)[0]
    token = b"\x73\x10" + bytes(16)
    at = first.find(token)
    assert 0 <= at <= 10
    rest = first[at + len(token) :]
    assert rest[0] == 4
    host, sep, _ = rest[1:].partition(b"\x01")
    assert sep == b"\x01" and host == b"relay.legacy-vendor.example"
    assert not is_sc_relay_hello(first)
    assert dns_answers("sc-relay-legacy.pcap") == [
        ("relay.legacy-vendor.example", ["198.51.100.23"])
    ]


@pytest.mark.parametrize(
    ("server", "prefix"),
    [
        (("198.51.100.70", 8041), bytes([0x87, 0x15, 0x10, 0x00])),
        (("203.0.113.70", 443), bytes([0x87, 0x15, 0x10, 0x00])),
        (("198.51.100.71", 8041), bytes([0x87, 0x00, 0x00, 0x00])),
    ],
)
def test_neg_0x87_lookalikes_fail_the_relay_predicate(
    server: tuple[str, int], prefix: bytes
) -> None:
    first = conn_to("neg-0x87-not-relay.pcap", server).payloads(True)[0]
    assert first.startswith(prefix)
    assert not is_sc_relay_hello(first)
    if prefix[1] == 0x15:
        assert first[4:16] != bytes(12)


# --------------------------------------------------------------------------------------------
# ScreenConnect web (protocols.md 1.4, 1.5)


def http_requests(conn: Connection) -> list[dpkt.http.Request]:
    return [dpkt.http.Request(conn.stream(True))]


def http_response(conn: Connection) -> dpkt.http.Response:
    return dpkt.http.Response(conn.stream(False))


def test_sc_web_onprem_console_redirect() -> None:
    conn = connections("sc-web-onprem-8040.pcap")[0]
    assert conn.server == ("198.51.100.7", 8040)
    (req,) = http_requests(conn)
    assert (req.method, req.uri) == ("GET", "/Host")
    resp = http_response(conn)
    assert resp.status == "302"
    assert resp.headers["server"] == "ScreenConnect/19.2.24707.7131"
    assert resp.headers["location"].startswith("/Login")


def test_sc_web_onprem_installer_query_and_key_blob() -> None:
    conn = connections("sc-web-onprem-8040.pcap")[1]
    (req,) = http_requests(conn)
    path, _, query = req.uri.partition("?")
    assert path == "/Bin/ScreenConnect.ClientSetup.exe"
    assert query.startswith("e=Access&y=Guest&h=support.vendor.example&p=8041&k=")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    assert params["h"] == ["support.vendor.example"] and params["p"] == ["8041"]
    assert params["c"] == ["Acme", "", "", "", "", "", "", ""]
    blob = base64.b64decode(params["k"][0], validate=True)
    assert len(blob) == 148
    assert blob[:8] == bytes([0x06, 0x02, 0x00, 0x00, 0x00, 0xA4, 0x00, 0x00])
    magic, bitlen, exponent = struct.unpack("<4sII", blob[8:20])
    assert (magic, bitlen, exponent) == (b"RSA1", 1024, 65537)
    assert int.from_bytes(blob[20:], "little").bit_length() == 1024
    resp = http_response(conn)
    assert resp.status == "200"
    assert resp.headers["server"] == "ScreenConnect/19.2.24707.7131"
    assert int(resp.headers["content-length"]) == len(resp.body) > 0
    assert dns_answers("sc-web-onprem-8040.pcap") == [("support.vendor.example", ["198.51.100.7"])]


# --------------------------------------------------------------------------------------------
# TLS


def tls_handshake_messages(stream: bytes) -> list[tuple[int, bytes]]:
    """Cleartext handshake messages up to the first ChangeCipherSpec record."""
    hs = b""
    i = 0
    while i + 5 <= len(stream):
        ctype, length = stream[i], int.from_bytes(stream[i + 3 : i + 5], "big")
        if ctype == 20:
            break
        if ctype == 22:
            hs += stream[i + 5 : i + 5 + length]
        i += 5 + length
    out = []
    j = 0
    while j + 4 <= len(hs):
        mtype, length = hs[j], int.from_bytes(hs[j + 1 : j + 4], "big")
        out.append((mtype, hs[j + 4 : j + 4 + length]))
        j += 4 + length
    return out


def hello_extensions(body: bytes, server: bool) -> tuple[int, list[tuple[int, bytes]]]:
    """(cipher suite for ServerHello / version for ClientHello, extensions in order)."""
    i = 2 + 32
    i += 1 + body[i]  # session id
    if server:
        first = int.from_bytes(body[i : i + 2], "big")
        i += 3
    else:
        first = int.from_bytes(body[:2], "big")
        i += 2 + int.from_bytes(body[i : i + 2], "big")  # cipher suites
        i += 1 + body[i]  # compression methods
    end = i + 2 + int.from_bytes(body[i : i + 2], "big")
    i += 2
    exts = []
    while i + 4 <= end:
        etype, elen = struct.unpack("!HH", body[i : i + 4])
        exts.append((etype, body[i + 4 : i + 4 + elen]))
        i += 4 + elen
    return first, exts


def certificates(body: bytes) -> list[x509.Certificate]:
    out = []
    i = 3
    while i + 3 <= len(body):
        n = int.from_bytes(body[i : i + 3], "big")
        out.append(x509.load_der_x509_certificate(body[i + 3 : i + 3 + n]))
        i += 3 + n
    return out


@dataclass(frozen=True, slots=True)
class TlsView:
    client_version: int
    client_exts: list[tuple[int, bytes]]
    server_cipher: int
    server_exts: list[tuple[int, bytes]]
    server_msgs: list[int]
    client_msgs: list[int]
    server_certs: list[x509.Certificate]
    client_certs: list[x509.Certificate]

    @property
    def sni(self) -> str | None:
        for etype, data in self.client_exts:
            if etype == 0:
                return data[5:].decode("ascii")
        return None

    @property
    def alpn(self) -> list[str]:
        for etype, data in self.client_exts:
            if etype == 16:
                names, i = [], 2
                while i < len(data):
                    names.append(data[i + 1 : i + 1 + data[i]].decode("ascii"))
                    i += 1 + data[i]
                return names
        return []

    @property
    def negotiated_version(self) -> int:
        for etype, data in self.server_exts:
            if etype == 43:
                return int.from_bytes(data, "big")
        return 0x0303


def tls_view(conn: Connection) -> TlsView:
    cmsgs = tls_handshake_messages(conn.stream(True))
    smsgs = tls_handshake_messages(conn.stream(False))
    assert cmsgs[0][0] == 1 and smsgs[0][0] == 2
    version, cexts = hello_extensions(cmsgs[0][1], server=False)
    cipher, sexts = hello_extensions(smsgs[0][1], server=True)
    scerts = next((certificates(b) for t, b in smsgs if t == 11), [])
    ccerts = next((certificates(b) for t, b in cmsgs if t == 11), [])
    return TlsView(
        version,
        cexts,
        cipher,
        sexts,
        [t for t, _ in smsgs],
        [t for t, _ in cmsgs],
        scerts,
        ccerts,
    )


def cn(cert: x509.Certificate, issuer: bool = False) -> str:
    attrs = (cert.issuer if issuer else cert.subject).get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def assert_anydesk_client_cert(cert: x509.Certificate) -> None:
    assert cert.subject.rfc4514_string() == "CN=AnyDesk Client"
    assert cert.issuer == cert.subject and cert.serial_number == 1
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 49 < years < 51


ANYDESK_FILES = [
    ("ad-relay-tls.pcap", ("203.0.113.40", 443), "relay"),
    ("ad-relay-6568.pcap", ("203.0.113.40", 6568), "relay"),
    ("ad-direct-7070.pcap", ("10.20.0.77", 7070), "direct"),
    ("ad-direct-inbound.pcap", ("10.20.0.31", 7070), "direct"),
]


@pytest.mark.parametrize(("name", "server", "kind"), ANYDESK_FILES)
def test_anydesk_tls_handshake(name: str, server: tuple[str, int], kind: str) -> None:
    view = tls_view(conn_to(name, server))
    assert view.client_version == 0x0303 and view.negotiated_version == 0x0303
    assert view.sni is None
    ext_types = [t for t, _ in view.client_exts]
    assert 0 not in ext_types
    assert 13 in view.server_msgs  # CertificateRequest: mutual TLS
    assert len(view.client_certs) == 1
    assert_anydesk_client_cert(view.client_certs[0])
    if kind == "relay":
        assert ext_types == [11, 10, 35, 16, 13]
        assert view.alpn == ["anydesk/7.1.0/windows"]
        assert view.server_cipher == 0xC02C
        leaf, root = view.server_certs
        assert leaf.subject.rfc4514_string() == "CN=AnyNet Relay,O=philandro Software GmbH,C=DE"
        assert root.subject.rfc4514_string() == "CN=AnyNet Root CA,O=philandro Software GmbH,C=DE"
        assert leaf.issuer == root.subject and root.issuer == root.subject
        assert root.not_valid_after_utc == dt.datetime(2024, 4, 8, tzinfo=dt.UTC)
    else:
        assert ext_types == [11, 10, 35, 13]
        assert view.alpn == []
        assert view.server_cipher == 0x009F
        (server_cert,) = view.server_certs
        assert_anydesk_client_cert(server_cert)
        assert der(server_cert) != der(view.client_certs[0])  # two installations


def test_anydesk_relay_dns_only_before_the_443_session() -> None:
    assert dns_answers("ad-relay-tls.pcap") == [
        ("relay-0a1b2c3d.net.anydesk.com", ["203.0.113.40"])
    ]
    assert dns_answers("ad-relay-6568.pcap") == []


def test_anydesk_relay_keepalive_records() -> None:
    # After the first exchange the client sends 49-byte application-data records 15 s apart.
    conn = conn_to("ad-relay-tls.pcap", ("203.0.113.40", 443))
    small = [s for s in conn.segments if s.src == conn.client and len(s.payload) == 49]
    assert len(small) == 3
    assert all(p[0] == 23 for p in (s.payload for s in small))
    gaps = [b.ts_us - a.ts_us for a, b in itertools.pairwise(small)]
    assert all(14_000_000 < g < 16_000_000 for g in gaps)


def test_frontdesk_certificate_is_one_identity_across_files() -> None:
    relay = tls_view(conn_to("ad-relay-tls.pcap", ("203.0.113.40", 443))).client_certs[0]
    cached = tls_view(conn_to("ad-relay-6568.pcap", ("203.0.113.40", 6568))).client_certs[0]
    direct = tls_view(conn_to("ad-direct-7070.pcap", ("10.20.0.77", 7070))).client_certs[0]
    inbound = tls_view(conn_to("ad-direct-inbound.pcap", ("10.20.0.31", 7070)))
    assert der(relay) == der(cached) == der(direct) == der(inbound.server_certs[0])
    assert der(inbound.client_certs[0]) != der(relay)


def test_anydesk_inbound_client_is_external() -> None:
    conn = conn_to("ad-direct-inbound.pcap", ("10.20.0.31", 7070))
    assert conn.client[0] == "198.51.100.99"


@pytest.mark.parametrize(
    ("name", "server", "sni"),
    [
        ("sc-web-cloud-tls.pcap", ("203.0.113.20", 443), "acme.screenconnect.com"),
        ("neg-lookalike-names.pcap", ("203.0.113.60", 443), "screenconnect.com.evil.test"),
        ("neg-lookalike-names.pcap", ("203.0.113.61", 443), "notanydesk.com"),
        ("neg-tls-8041-7070.pcap", ("10.20.5.10", 8041), "intranet.example"),
        ("neg-tls-8041-7070.pcap", ("10.20.5.10", 7070), "intranet.example"),
    ],
)
def test_ordinary_tls13_with_sni(name: str, server: tuple[str, int], sni: str) -> None:
    view = tls_view(conn_to(name, server))
    assert view.sni == sni
    assert view.negotiated_version == 0x0304
    assert not any(a.startswith("anydesk/") for a in view.alpn)
    assert view.server_certs == [] and view.client_certs == []  # encrypted under TLS 1.3


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sc-web-cloud-tls.pcap", [("acme.screenconnect.com", ["203.0.113.20"])]),
        (
            "neg-lookalike-names.pcap",
            [
                ("screenconnect.com.evil.test", ["203.0.113.60"]),
                ("notanydesk.com", ["203.0.113.61"]),
                ("anydesk.com.example.net", ["203.0.113.62"]),
            ],
        ),
        ("ad-download.pcap", [("download.anydesk.com", ["203.0.113.50"])]),
        ("neg-tls-8041-7070.pcap", []),
        ("ad-direct-7070.pcap", []),
    ],
)
def test_dns_lookups(name: str, expected: list[tuple[str, list[str]]]) -> None:
    assert dns_answers(name) == expected


# --------------------------------------------------------------------------------------------
# AnyDesk discovery (protocols.md 2.5) and HTTP (2.6)


@dataclass(frozen=True, slots=True)
class Discovery:
    anydesk_id: int
    os_code: int
    hostname: str
    user: str


def parse_discovery(p: bytes) -> Discovery | None:
    """Strict reading of the 2.5 layout; None when the datagram cannot be one."""

    def field_at(i: int) -> tuple[bytes, int] | None:
        if i + 4 > len(p):
            return None
        n = int.from_bytes(p[i : i + 4], "big")
        if n > 256 or i + 4 + n > len(p):
            return None
        return p[i + 4 : i + 4 + n], i + 4 + n

    if len(p) < 17 or p[:3] != b"\x3e\xd1\x01" or p[7:11] != bytes(4) or p[11] != 2:
        return None
    host = field_at(13)
    user = field_at(host[1]) if host else None
    if host is None or user is None or p[user[1] : user[1] + 4] != bytes(4):
        return None
    image = field_at(user[1] + 4)
    if image is None or p[image[1] : image[1] + 1] != b"\x00":
        return None
    func = field_at(image[1] + 1)
    if func is None or p[func[1] :] != b"\x02\xc3\x51":
        return None
    return Discovery(
        int.from_bytes(p[3:7], "big"), p[12], host[0].decode("utf-8"), user[0].decode("utf-8")
    )


def test_anydesk_discovery_broadcasts() -> None:
    seen = []
    for p, udp in udp_datagrams("ad-discovery.pcap"):
        assert ip_str(p.ip.dst) == "239.255.102.18" and udp.dport == 50001 and udp.sport == 50001
        assert p.eth.dst == bytes.fromhex("01005e7f6612")
        parsed = parse_discovery(bytes(udp.data))
        assert parsed is not None
        assert udp.data[13:17] == len(parsed.hostname).to_bytes(4, "big")
        seen.append((ip_str(p.ip.src), parsed))
    assert seen == [
        ("10.20.0.31", Discovery(123456789, 1, "FRONTDESK-PC", "alice")),
        ("10.20.0.31", Discovery(123456789, 1, "FRONTDESK-PC", "alice")),
        ("10.20.0.32", Discovery(987654321, 1, "LAB-01", "bob")),
        ("10.20.0.31", Discovery(123456789, 1, "FRONTDESK-PC", "alice")),
    ]


def test_neg_udp_payloads_are_not_discovery() -> None:
    grams = udp_datagrams("neg-udp-50001.pcap")
    assert {udp.dport for _, udp in grams} == {50001, 50002}
    starts_magic = [bytes(udp.data) for _, udp in grams if udp.data[:2] == b"\x3e\xd1"]
    assert len(starts_magic) == 3  # too short (twice) and an absurd hostname length
    assert any(len(d) > 17 and int.from_bytes(d[13:17], "big") > 0xFFFF for d in starts_magic)
    assert all(parse_discovery(bytes(udp.data)) is None for _, udp in grams)


def test_anydesk_download_and_user_agent() -> None:
    download = conn_to("ad-download.pcap", ("203.0.113.50", 80))
    (req,) = http_requests(download)
    assert (req.method, req.uri, req.version) == ("GET", "/AnyDesk.exe", "1.1")
    assert req.headers["host"] == "download.anydesk.com"
    assert req.headers["user-agent"].startswith("Mozilla/5.0")
    resp = http_response(download)
    assert resp.status == "200"
    assert resp.headers["content-type"] == "application/octet-stream"
    assert 1500 < len(resp.body) == int(resp.headers["content-length"]) < 4096
    agent = conn_to("ad-download.pcap", ("203.0.113.41", 80))
    (agent_req,) = http_requests(agent)
    assert agent_req.headers["user-agent"] == "AnyDesk/7.1.0"


# --------------------------------------------------------------------------------------------
# Demo


def payload_set(name: str) -> set[tuple[str, int, str, int, bytes]]:
    out = set()
    for p in packets(name):
        seg = p.ip.data
        if isinstance(seg, dpkt.tcp.TCP | dpkt.udp.UDP) and seg.data:
            out.add((ip_str(p.ip.src), seg.sport, ip_str(p.ip.dst), seg.dport, bytes(seg.data)))
    return out


def open_intervals(name: str) -> Iterator[tuple[int, int]]:
    for conn in connections(name):
        yield conn.segments[0].ts_us, conn.segments[-1].ts_us


def test_demo_mixes_four_captures_that_interleave() -> None:
    sources = [
        "sc-relay-m1-8041.pcap",
        "sc-web-onprem-8040.pcap",
        "ad-relay-tls.pcap",
        "neg-lookalike-names.pcap",
    ]
    expected = set().union(*(payload_set(s) for s in sources))
    assert payload_set("demo-mixed.pcap") == expected
    assert len(packets("demo-mixed.pcap")) == sum(len(packets(s)) for s in sources)
    spans = sorted(open_intervals("demo-mixed.pcap"))
    overlapping = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlapping >= 2
