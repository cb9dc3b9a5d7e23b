"""Tests of the TLS handshake stream parser on real captures and built byte streams."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sensor.capture.files import read_frames
from sensor.flows.table import FlowSettings
from sensor.model import FlowRecord
from sensor.pipeline import Engine
from sensor.protocols.errors import ParseError
from sensor.protocols.ja4 import ja4
from sensor.protocols.tls import (
    MAX_HELLO_BODY,
    ClientHello,
    TlsStream,
    looks_like_tls,
    parse_client_hello_body,
    parse_tls_stream,
)
from sensor.protocols.x509 import summarize_certificate
from tests.protocols.tlsbuild import (
    CAPTURES,
    CHROME_CIPHERS,
    CHROME_SIGALGS,
    alpn_ext,
    certificate_body,
    client_hello_body,
    ext,
    handshake,
    make_certificate,
    record,
    records,
    rerecord,
    server_hello_body,
    sni_ext,
    split_stream,
    stream_by_ports,
    tcp_streams,
    u16_list_ext,
    versions_ext,
)

ANYDESK = tcp_streams("anydesk-2022-ndpi.pcapng")
CHROME = tcp_streams("bg-ndpi-chrome.pcap")
FOXIO = tcp_streams("bg-ja4-tls-handshake.pcapng")

# RFC 8446 4.1.3: the ServerHello.random of a HelloRetryRequest.
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
CCS = record(20, b"\x01")
APP_DATA = record(23, bytes(range(40)))

ANYDESK_CLIENT_HELLO_EXTS = (11, 10, 35, 13, 15)
ANYDESK_SIGALGS = (
    0x0601, 0x0602, 0x0603, 0x0501, 0x0502, 0x0503, 0x0401, 0x0402,
    0x0403, 0x0301, 0x0302, 0x0303, 0x0201, 0x0202, 0x0203,
)  # fmt: skip
ANYDESK_GROUPS = (23, 25, 28, 27, 24, 26, 22, 14, 13, 11, 12, 9, 10)


def parse(data: bytes) -> TlsStream:
    result = parse_tls_stream(data)
    assert result is not None
    return result


def hello_stream(*exts: bytes, ciphers: tuple[int, ...] = CHROME_CIPHERS) -> bytes:
    body = client_hello_body(ciphers=ciphers, extensions=exts)
    return record(22, handshake(1, body), 0x0301)


def tls13_server_hello(random: bytes = bytes(range(32, 64)), version: int = 0x0304) -> bytes:
    # ServerHello.supported_versions carries one bare version, no list length.
    chosen = ext(0x002B, version.to_bytes(2, "big"))
    return handshake(2, server_hello_body(cipher=0x1301, extensions=[chosen], random=random))


# --- looks_like_tls ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x16\x03\x01\x02\x00\x01", True),
        (b"\x16\x03\x00", True),
        (b"\x16\x03\x04", True),
        (b"\x16\x03\x05", False),
        (b"\x16\x02\x00", False),
        (b"\x17\x03\x03", False),
        (b"\x87\x15\x10\x00", False),  # ScreenConnect relay preamble
        (b"GET / HTTP/1.1\r\n", False),
        (b"\x16\x03", False),
        (b"", False),
    ],
)
def test_looks_like_tls(data: bytes, expected: bool) -> None:
    assert looks_like_tls(data) is expected


# --- the real AnyDesk capture -------------------------------------------------------------------

# nDPI 4.x prints "t12d6406an_", "t12d550500_" and "t12d640500_" for these flows (protocols.md
# §2.3). Its parts b and c are the spec's; its part a is not: these hellos carry no SNI
# extension (JA4 "i"), and the first and last characters of "anydesk/6.2.0/linux" are "ax".
ANYDESK_CLIENTS = [
    # client port, server port, JA4, cipher count, extensions, ALPN
    (
        48260,
        443,
        "t12i6406ax_9197985d2161_a1e935682795",
        64,
        (*ANYDESK_CLIENT_HELLO_EXTS, 16),
        ("anydesk/6.2.0/linux",),
    ),
    (54164, 7070, "t12i550500_168bb377f8c8_a1e935682795", 55, ANYDESK_CLIENT_HELLO_EXTS, ()),
    (52039, 7070, "t12i640500_9197985d2161_a1e935682795", 64, ANYDESK_CLIENT_HELLO_EXTS, ()),
]
NDPI_ANYDESK_JA4 = {
    48260: "t12d6406an_9197985d2161_a1e935682795",
    54164: "t12d550500_168bb377f8c8_a1e935682795",
    52039: "t12d640500_9197985d2161_a1e935682795",
}


@pytest.mark.parametrize(("sport", "dport", "ja4", "n_ciphers", "exts", "alpn"), ANYDESK_CLIENTS)
def test_anydesk_client_hello(
    sport: int, dport: int, ja4: str, n_ciphers: int, exts: tuple[int, ...], alpn: tuple[str, ...]
) -> None:
    stream = parse(stream_by_ports(ANYDESK, sport, dport))
    hello = stream.client_hello
    assert hello is not None
    assert hello.ja4 == ja4
    assert hello.ja4.split("_")[1:] == NDPI_ANYDESK_JA4[sport].split("_")[1:]
    assert hello.server_name is None
    assert hello.alpn == alpn
    assert (hello.record_version, hello.legacy_version, hello.versions) == (0x0301, 0x0303, ())
    assert len(hello.cipher_suites) == n_ciphers
    assert hello.cipher_suites[-1] == 0x00FF  # renegotiation SCSV ends the list
    assert hello.extensions == exts
    assert hello.signature_algorithms == ANYDESK_SIGALGS
    assert hello.supported_groups == ANYDESK_GROUPS
    assert stream.server_hello is None
    assert stream.certificate_request is False
    assert stream.done is True  # ChangeCipherSpec after the client's second flight
    # The client presents its self-signed per-installation certificate.
    assert len(stream.certificates) == 1
    client_cert = summarize_certificate(stream.certificates[0])
    assert client_cert.subject == "CN=AnyDesk Client"
    assert client_cert.issuer == "CN=AnyDesk Client"
    assert client_cert.serial == "01"


ANYDESK_SERVERS = [
    # server port, client port, cipher, server extensions, subjects of the chain, issuer of leaf
    (
        443,
        48260,
        0xC02C,
        (0xFF01, 11),
        ("C=DE, O=philandro Software GmbH, CN=AnyNet Relay",
         "CN=AnyNet Root CA, O=philandro Software GmbH, C=DE"),
        "CN=AnyNet Root CA, O=philandro Software GmbH, C=DE",
    ),
    (7070, 54164, 0x009F, (0xFF01, 35, 15), ("CN=AnyDesk Client",), "CN=AnyDesk Client"),
    (7070, 52039, 0x009D, (0xFF01, 35, 15), ("CN=AnyDesk Client",), "CN=AnyDesk Client"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sport", "dport", "cipher", "exts", "subjects", "issuer"), ANYDESK_SERVERS
)
def test_anydesk_server_flight(
    sport: int,
    dport: int,
    cipher: int,
    exts: tuple[int, ...],
    subjects: tuple[str, ...],
    issuer: str,
) -> None:
    stream = parse(stream_by_ports(ANYDESK, sport, dport))
    hello = stream.server_hello
    assert hello is not None
    assert (hello.legacy_version, hello.version, hello.cipher_suite) == (0x0303, 0x0303, cipher)
    assert hello.extensions == exts
    assert hello.alpn is None  # the relay does not echo the client's ALPN
    assert hello.hello_retry_request is False
    assert stream.client_hello is None
    assert stream.certificate_request is True  # mutual TLS on relay and direct links
    assert stream.done is True
    summaries = [summarize_certificate(der) for der in stream.certificates]
    assert tuple(s.subject for s in summaries) == subjects
    assert summaries[0].issuer == issuer


def test_anydesk_relay_certificate_spans_tcp_segments() -> None:
    """The relay's 2231-byte Certificate record arrives in two TCP segments."""
    data = stream_by_ports(ANYDESK, 443, 48260)
    certificate_record_end = 5 + 87 + 5 + 2231
    before = parse(data[: certificate_record_end - 1])
    after = parse(data[:certificate_record_end])
    assert before.server_hello is not None
    assert before.certificates == ()
    assert len(after.certificates) == 2
    assert after.certificate_request is False  # it is in the next record
    assert after.done is False


# --- browsers: JA4 compared with published reference outputs -------------------------------

# FoxIO-LLC/ja4 rust/ja4/src/snapshots/ja4__insta@tls-handshake.pcapng.snap: 59 TCP client
# flows; all but these carry "t13d1516h2_8daaf6152771_e5627efa2ab1".
FOXIO_DEFAULT_JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"
FOXIO_OTHER_JA4 = {
    50122: "t13d1516h1_8daaf6152771_e5627efa2ab1",
    50123: "t13d151400_8daaf6152771_de4a06bb82e3",
    50140: "t13d1516h1_8daaf6152771_e5627efa2ab1",
    50152: "t13d1516h1_8daaf6152771_e5627efa2ab1",
    50153: "t13d1517h1_8daaf6152771_6cdcb247c39b",
}
FOXIO_SNI = {
    50112: "clientservices.googleapis.com",
    50122: "lp-push-server-452.lastpass.com",
    50123: "mtalk.google.com",
    50153: "edge-chat.facebook.com",
    50184: "content-autofill.googleapis.com",
}


def test_foxio_reference_ja4_for_every_client_flow() -> None:
    got = {}
    for key, data in FOXIO.items():
        stream = parse(data)
        if stream.client_hello is not None:
            got[key[1]] = stream.client_hello
    assert len(got) == 59
    for port, hello in got.items():
        assert hello.ja4 == FOXIO_OTHER_JA4.get(port, FOXIO_DEFAULT_JA4), port
    for port, name in FOXIO_SNI.items():
        assert got[port].server_name == name


def test_foxio_reference_ja4_in_the_engine_flow_records() -> None:
    """Through the whole engine, as the flow output and the signatures read it."""
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(), records.append)
    engine.run(read_frames(str(CAPTURES / "bg-ja4-tls-handshake.pcapng")))
    engine.flush()
    got = {r.src_port: r.tls.ja4 for r in records if r.tls is not None and r.tls.ja4 is not None}
    assert len(got) == 59
    for port, ja4_text in got.items():
        assert ja4_text == FOXIO_OTHER_JA4.get(port, FOXIO_DEFAULT_JA4), port


# nDPI tests/cfgs/default/result/chrome.pcap.out (same capture as bg-ndpi-chrome.pcap).
NDPI_CHROME_JA4 = [
    (64410, "t13d1516h2_8daaf6152771_e5627efa2ab1"),
    (64409, "t13d1516h2_8daaf6152771_9b887d9acb53"),
    (64394, "t13d1516h2_8daaf6152771_9b887d9acb53"),
    (64393, "t13d1516h2_8daaf6152771_e5627efa2ab1"),
    (64411, "t13d1516h2_8daaf6152771_e5627efa2ab1"),
    (64408, "t13d1516h2_8daaf6152771_9b887d9acb53"),
]


@pytest.mark.parametrize(("sport", "ja4"), NDPI_CHROME_JA4)
def test_chrome_ja4_matches_ndpi(sport: int, ja4: str) -> None:
    hello = parse(stream_by_ports(CHROME, sport, 443)).client_hello
    assert hello is not None
    assert hello.ja4 == ja4
    assert hello.server_name == "www.iit.cnr.it"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.versions == (0x0304, 0x0303, 0x0302, 0x0301)  # GREASE removed
    assert any(c & 0x0F0F == 0x0A0A for c in hello.cipher_suites)  # GREASE kept here


@pytest.mark.parametrize("dport", [64393, 64394, 64408, 64409, 64410, 64411])
def test_tls13_server_hello_ends_cleartext(dport: int) -> None:
    stream = parse(stream_by_ports(CHROME, 443, dport))
    assert stream.server_hello is not None
    assert stream.server_hello.version == 0x0304
    assert stream.server_hello.legacy_version == 0x0303
    assert stream.done is True
    assert stream.certificates == ()  # encrypted in TLS 1.3


# --- fragmentation -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 17, 100, 1000, 2**14])
@pytest.mark.parametrize(("sport", "dport"), [(48260, 443), (443, 48260), (7070, 54164)])
def test_handshake_split_across_records_parses_the_same(sport: int, dport: int, size: int) -> None:
    original = stream_by_ports(ANYDESK, sport, dport)
    assert parse(rerecord(original, size)) == parse(original)


def test_certificate_chain_spanning_several_records() -> None:
    leaf, root = make_certificate(serial=2), make_certificate(serial=1)
    flight = (
        handshake(2, server_hello_body())
        + handshake(11, certificate_body(leaf, root))
        + handshake(13, b"\x01\x01\x00\x02\x04\x03\x00\x00")
        + handshake(14, b"")
    )
    assert len(certificate_body(leaf, root)) > 4 * 100  # the chain spans at least 5 records
    data = records(flight, 100)
    stream = parse(data)
    assert stream.certificates == (leaf, root)
    assert stream.certificate_request is True
    assert stream.done is False
    assert parse(data + CCS + record(22, bytes(40))).done is True


@pytest.mark.parametrize("segment", [1, 2, 5, 6, 64, 536, 1460])
def test_client_hello_split_across_tcp_segments(segment: int) -> None:
    """Feeding growing prefixes, as a flow table does, gives None until the hello is whole."""
    data = stream_by_ports(ANYDESK, 48260, 443)
    hello_end = 5 + int.from_bytes(data[3:5], "big")
    final = parse(data[:hello_end]).client_hello
    assert final is not None
    for end in range(segment, hello_end + segment, segment):
        result = parse_tls_stream(data[:end])
        if end < hello_end:
            assert result is None
        else:
            assert result is not None
            assert result.client_hello == final


def test_only_the_first_client_hello_is_kept() -> None:
    first = handshake(1, client_hello_body(extensions=[sni_ext(b"first.example")]))
    second = handshake(1, client_hello_body(extensions=[sni_ext(b"second.example")]))
    hello = parse(record(22, first + second)).client_hello
    assert hello is not None
    assert hello.server_name == "first.example"


# --- TLS 1.3 and HelloRetryRequest -------------------------------------------------------------


@pytest.mark.parametrize(("version", "done"), [(0x0304, True), (0x7F1C, True), (0x0303, False)])
def test_tls13_server_hello_ignores_what_follows(version: int, done: bool) -> None:
    encrypted_extensions = b"\x08\x00\x00\x02\x00\x00"  # in the same record, as seen in 1.2
    data = record(22, tls13_server_hello(version=version) + encrypted_extensions)
    stream = parse(data + (b"\x00garbage" if done else b""))
    assert stream.server_hello is not None
    assert stream.server_hello.version == version
    assert stream.server_hello.cipher_suite == 0x1301
    assert stream.done is done


def test_hello_retry_request_then_real_server_hello() -> None:
    hrr = record(22, tls13_server_hello(HRR_RANDOM))
    real = record(22, tls13_server_hello())
    only_hrr = parse(hrr)
    assert only_hrr.server_hello is not None
    assert only_hrr.server_hello.hello_retry_request is True
    assert only_hrr.done is False
    after_ccs = parse(hrr + CCS)
    assert after_ccs.done is False  # the compatibility CCS does not end cleartext here
    full = parse(hrr + CCS + real + APP_DATA)
    assert full.server_hello is not None
    assert full.server_hello.hello_retry_request is False
    assert full.done is True


# --- None, done, and field decoding -------------------------------------------------------------

HELLO = record(22, handshake(1, client_hello_body()), 0x0301)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x16",
        b"\x16\x03\x01\x00",
        HELLO[:5],
        HELLO[:9],
        HELLO[:-1],
        records(handshake(1, client_hello_body()), 30)[:35],  # first of several records
    ],
)
def test_incomplete_first_message_gives_none(data: bytes) -> None:
    assert parse_tls_stream(data) is None


@pytest.mark.parametrize(
    "data",
    [
        record(21, b"\x02\x28"),  # fatal handshake_failure alert
        APP_DATA,
        CCS,
        record(24, b"\x01\x00\x10" + bytes(16)),  # heartbeat
    ],
)
def test_stream_without_handshake_is_done(data: bytes) -> None:
    assert parse(data + b"\x16\x03") == TlsStream(None, None, (), False, True)


def test_server_alert_after_hello_ends_stream() -> None:
    data = record(22, handshake(2, server_hello_body())) + record(21, b"\x02\x28") + HELLO
    stream = parse(data)
    assert stream.server_hello is not None
    assert stream.done is True


@pytest.mark.parametrize(
    ("sni", "expected"),
    [
        (sni_ext(b"example.com"), "example.com"),
        (sni_ext(b"bad\x1b[31m\x9b.example"), "bad\\x1b[31m\\x9b.example"),
        (sni_ext(b"caf\xc3\xa9.example"), "caf\u00e9.example"),
        (sni_ext(b"\xff\xfe.example"), "\\xff\\xfe.example"),
        # A backslash on the wire is doubled, so it cannot pass for an escape.
        (sni_ext(b"a\\x0a.example"), "a\\\\x0a.example"),
        (sni_ext(b"a\\\n\xff"), "a\\\\\\x0a\\xff"),
        (sni_ext(b"ignored", name_type=7), ""),
        (ext(0, b"\x00\x00"), ""),
        (b"", None),
    ],
)
def test_server_name_decoding(sni: bytes, expected: str | None) -> None:
    exts = [sni] if sni else []
    hello = parse(hello_stream(*exts)).client_hello
    assert hello is not None
    assert hello.server_name == expected
    assert hello.ja4[3] == ("d" if sni else "i")


@pytest.mark.parametrize(
    ("names", "alpn", "ja4_alpn"),
    [
        ((b"h2", b"http/1.1"), ("h2", "http/1.1"), "h2"),
        ((b"http/1.1",), ("http/1.1",), "h1"),
        ((b"\x1bx",), ("\\x1bx",), "18"),
        ((b"\xffx",), ("\\xffx",), "f8"),
        ((b"",), ("",), "00"),
        ((), (), "00"),
    ],
)
def test_alpn_decoding(names: tuple[bytes, ...], alpn: tuple[str, ...], ja4_alpn: str) -> None:
    hello = parse(hello_stream(alpn_ext(*names))).client_hello
    assert hello is not None
    assert hello.alpn == alpn
    assert hello.alpn_raw == names
    assert hello.ja4[8:10] == ja4_alpn


def test_client_hello_fields_and_grease() -> None:
    exts = [
        ext(0x1A1A, b""),
        sni_ext(b"example.com"),
        versions_ext(0x3A3A, 0x0304, 0x0303),
        u16_list_ext(0x000D, (0x0A0A, *CHROME_SIGALGS)),
        u16_list_ext(0x000A, (0x4A4A, 0x001D, 0x0017)),
        alpn_ext(b"h2"),
    ]
    hello = parse(hello_stream(*exts, ciphers=(0x2A2A, *CHROME_CIPHERS))).client_hello
    assert hello is not None
    assert hello.versions == (0x0304, 0x0303)
    assert hello.cipher_suites == (0x2A2A, *CHROME_CIPHERS)
    assert hello.extensions == (0x1A1A, 0x0000, 0x002B, 0x000D, 0x000A, 0x0010)
    assert hello.signature_algorithms == (0x0A0A, *CHROME_SIGALGS)
    assert hello.supported_groups == (0x4A4A, 0x001D, 0x0017)
    assert hello.ja4.startswith("t13d1505h2_8daaf6152771_")


def test_hello_without_extensions_block() -> None:
    """SSLv3/TLS 1.0 hellos may end after the compression methods."""
    body = client_hello_body(version=0x0300, ciphers=(0x000A, 0x002F), omit_extensions_block=True)
    hello = parse_client_hello_body(body, 0x0300)
    assert hello.extensions == ()
    assert hello.record_version == 0x0300
    assert hello.ja4 == "ts3i020000_" + hello.ja4.split("_")[1] + "_000000000000"


def test_parse_client_hello_body_keeps_record_version() -> None:
    body = client_hello_body(extensions=[sni_ext(b"a.example")])
    assert parse_client_hello_body(body, 0x0302).record_version == 0x0302
    assert isinstance(parse_client_hello_body(body, 0x0301), ClientHello)


# --- malformed input ------------------------------------------------------------------------


def ch_record(body: bytes) -> bytes:
    return record(22, handshake(1, body), 0x0301)


GOOD_BODY = client_hello_body(extensions=[sni_ext(b"a.example"), alpn_ext(b"h2")])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x19\x03\x01\x00\x04abcd", id="content-type-25"),
        pytest.param(b"\x00\x03\x01\x00\x04abcd", id="content-type-0"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http"),
        pytest.param(b"\x16\x02\x00\x00\x04abcd", id="version-major-2"),
        pytest.param(b"\x16\x03\x05\x00\x04abcd", id="version-minor-5"),
        pytest.param(b"\x16\x03\x01\x48\x01", id="record-too-long"),
        pytest.param(b"\x16\x03\x01\x00\x00", id="empty-handshake-record"),
        pytest.param(HELLO + b"\x15\x03\x03\x00\x00", id="empty-alert-record"),
        pytest.param(record(22, handshake(11, certificate_body())), id="starts-with-certificate"),
        pytest.param(record(22, b"\x07\x00\x00\x00"), id="handshake-type-7"),
        pytest.param(HELLO + record(22, b"\x63\x00\x00\x00"), id="later-handshake-type-99"),
        pytest.param(
            record(22, b"\x01" + (MAX_HELLO_BODY + 1).to_bytes(3, "big")), id="hello-too-long"
        ),
        pytest.param(ch_record(b"\x03\x03"), id="hello-cut-in-random"),
        pytest.param(ch_record(client_hello_body(session_id=bytes(33))), id="session-id-33-bytes"),
        pytest.param(
            ch_record(b"\x03\x03" + bytes(32) + b"\x00\x00\x03\x13\x01\x13\x01\x00"),
            id="odd-cipher-bytes",
        ),
        pytest.param(ch_record(GOOD_BODY + b"\x00"), id="trailing-byte"),
        pytest.param(ch_record(GOOD_BODY[:-1]), id="extensions-short"),
        pytest.param(ch_record(client_hello_body() + b"\x00"), id="byte-after-empty-extensions"),
        pytest.param(
            ch_record(client_hello_body(extensions=[ext(0, b"\x00\x09\x00\x00\x05ab")])),
            id="sni-list-overrun",
        ),
        pytest.param(
            ch_record(client_hello_body(extensions=[ext(0x10, b"\x00\x03\x05h2x")])),
            id="alpn-name-overrun",
        ),
        pytest.param(
            ch_record(client_hello_body(extensions=[ext(0x10, b"\x00\x03\x02h2x")])),
            id="alpn-trailing-in-list",
        ),
        pytest.param(
            ch_record(client_hello_body(extensions=[ext(0x2B, b"\x03\x03\x04\x03")])),
            id="supported-versions-odd",
        ),
        pytest.param(
            ch_record(client_hello_body(extensions=[ext(0x0D, b"\x00\x04\x04\x03")])),
            id="sigalgs-overrun",
        ),
        pytest.param(
            ch_record(client_hello_body(extensions=[ext(0x0A, b"\x00\x02\x00\x17\x00")])),
            id="groups-trailing",
        ),
        pytest.param(
            record(22, handshake(2, server_hello_body(extensions=[alpn_ext(b"h2", b"h3")]))),
            id="server-alpn-two-names",
        ),
        pytest.param(
            record(22, handshake(2, server_hello_body(extensions=[ext(0x2B, b"\x03")]))),
            id="server-version-short",
        ),
        pytest.param(
            record(22, handshake(2, server_hello_body()) + handshake(11, b"\x00\x00\x05\x00")),
            id="certificate-list-overrun",
        ),
        pytest.param(
            record(
                22, handshake(2, server_hello_body()) + handshake(11, b"\x00\x00\x03\x00\x00\x09")
            ),
            id="certificate-entry-overrun",
        ),
    ],
)
def test_malformed_input_raises_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_tls_stream(data)


def test_every_truncated_client_hello_body_is_a_parse_error() -> None:
    # Except the one that ends right after the compression methods: a valid extension-less hello.
    no_extensions = len(client_hello_body(omit_extensions_block=True))
    assert parse_client_hello_body(GOOD_BODY[:no_extensions], 0x0301).extensions == ()
    for end in range(len(GOOD_BODY)):
        if end != no_extensions:
            with pytest.raises(ParseError):
                parse_client_hello_body(GOOD_BODY[:end], 0x0301)


# --- properties -------------------------------------------------------------------------------

REAL_STREAMS = [
    *sorted(ANYDESK.values()),
    stream_by_ports(CHROME, 64394, 443),
    stream_by_ports(CHROME, 443, 64394),
]


def cleartext_end(data: bytes) -> int:
    """Length of the leading handshake records plus one more record header."""
    _payload, rest = split_stream(data)
    return len(data) - len(rest) + 5


@pytest.mark.parametrize("index", range(len(REAL_STREAMS)))
def test_every_truncation_of_a_real_stream(index: int) -> None:
    """Prefixes never raise, and what they show agrees with the whole stream."""
    data = REAL_STREAMS[index]
    whole = parse(data)
    for end in range(min(len(data), cleartext_end(data) + 64) + 1):
        result = parse_tls_stream(data[:end])
        if result is None:
            continue
        assert result.client_hello in (None, whole.client_hello)
        assert result.server_hello in (None, whole.server_hello)
        assert len(result.certificates) in (0, len(whole.certificates))
        assert not result.certificate_request or whole.certificate_request
        assert not result.done or whole.done


@pytest.mark.parametrize("index", range(len(REAL_STREAMS)))
@pytest.mark.parametrize("segment", [1, 7, 536, 1460])
def test_growing_stream_reuses_the_earlier_client_hello(index: int, segment: int) -> None:
    """Parsed again as segments arrive, each time given the last result, as the inspector does:
    every result equals a parse from scratch, and the ClientHello is parsed only once."""
    data = REAL_STREAMS[index]
    earlier: TlsStream | None = None
    for end in range(segment, len(data) + segment, segment):
        fresh = parse_tls_stream(data[:end])
        result = parse_tls_stream(data[:end], earlier)
        assert result == fresh
        if earlier is not None and earlier.client_hello is not None:
            assert result is not None
            assert result.client_hello is earlier.client_hello
        earlier = result or earlier


def check_contract(data: bytes) -> None:
    try:
        result = parse_tls_stream(data)
    except ParseError:
        return
    assert result is None or isinstance(result, TlsStream)


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check_contract(data)


@settings(max_examples=500)
@given(st.binary(max_size=600), st.sampled_from([0x0300, 0x0301, 0x0303]), st.sampled_from([1, 2]))
def test_random_handshake_bodies(body: bytes, version: int, msg_type: int) -> None:
    """Random bodies behind valid record and handshake headers reach the message parsers."""
    check_contract(record(22, handshake(msg_type, body), version))
    with contextlib.suppress(ParseError):
        parse_client_hello_body(body, version)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(REAL_STREAMS))),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 7)), min_size=1, max_size=4),
)
def test_bit_flips_of_real_streams(index: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(REAL_STREAMS[index][:4096])
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    check_contract(bytes(data))


def test_one_byte_records_parse_in_linear_time() -> None:
    """A 60 KB hello in 1-byte records (360 KB of input): quadratic work would take minutes."""
    body = client_hello_body(extensions=[ext(0x0015, bytes(60_000)), sni_ext(b"big.example")])
    data = records(handshake(1, body), 1, 0x0301)
    start = time.perf_counter()
    hello = parse(data).client_hello
    elapsed = time.perf_counter() - start
    assert hello is not None
    assert hello.server_name == "big.example"
    assert elapsed < 5.0


SPECIAL_EXTENSIONS = {0x0000, 0x000A, 0x000D, 0x0010, 0x002B}
u16s = st.integers(0, 0xFFFF)


@settings(max_examples=200)
@example(ciphers=[], other_types=[], sigalgs=[], alpn=[], sni=b"a\\b", size=1)
@given(
    ciphers=st.lists(u16s, max_size=120),
    other_types=st.lists(u16s.filter(lambda t: t not in SPECIAL_EXTENSIONS), max_size=30),
    sigalgs=st.lists(u16s, max_size=20),
    alpn=st.lists(st.binary(max_size=12), max_size=4),
    sni=st.none() | st.binary(max_size=40),
    size=st.integers(1, 400),
)
def test_built_client_hello_round_trips(
    ciphers: list[int],
    other_types: list[int],
    sigalgs: list[int],
    alpn: list[bytes],
    sni: bytes | None,
    size: int,
) -> None:
    exts = [ext(t, b"") for t in other_types] + [u16_list_ext(0x000D, sigalgs), alpn_ext(*alpn)]
    if sni is not None:
        exts.insert(0, sni_ext(sni))
    body = client_hello_body(ciphers=ciphers, extensions=exts)
    hello = parse(records(handshake(1, body), size, 0x0301)).client_hello
    assert hello is not None
    assert hello.cipher_suites == tuple(ciphers)
    assert hello.extensions == (*([0] if sni is not None else []), *other_types, 0x000D, 0x0010)
    assert hello.signature_algorithms == tuple(sigalgs)
    assert hello.alpn_raw == tuple(alpn)
    if sni is None:
        assert hello.server_name is None
    else:
        assert hello.server_name is not None
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in hello.server_name)
        if all(0x20 <= b < 0x7F for b in sni):
            # Printable ASCII comes through as it is, but for the doubled backslash.
            assert hello.server_name == sni.decode("ascii").replace("\\", "\\\\")
    assert hello.ja4 == ja4(hello)
