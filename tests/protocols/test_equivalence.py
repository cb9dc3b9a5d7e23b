"""The protocol parsers against the reference copies of their earlier versions (``legacy/``).

The parsers were rewritten for speed; their results must not change. Every check here runs the
same input through both and wants the same result, or ParseError from both: on every TCP
direction and UDP payload of the shared captures (whole, cut at each segment boundary, and cut
at every length for a few), and on generated inputs aimed at each parser's edge cases.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.protocols import dns, http, ja4, tls
from sensor.protocols.errors import ParseError
from tests.protocols.legacy import dns as old_dns
from tests.protocols.legacy import http as old_http
from tests.protocols.legacy import ja4 as old_ja4
from tests.protocols.legacy import tls as old_tls
from tests.protocols.tlsbuild import (
    alpn_ext,
    client_hello_body,
    ext,
    handshake,
    record,
    records,
    rerecord,
    server_hello_body,
    sni_ext,
    split_stream,
    u16_list_ext,
    versions_ext,
)

CAPTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "captures"
STREAM_LIMIT = 65536  # the parsers never need more of a direction than this
DNS_PORTS = frozenset({53, 5353, 5355})

Outcome = object


# --- the corpus: every TCP direction and UDP payload of the shared captures -----------------


@dataclasses.dataclass(frozen=True)
class TcpDirection:
    capture: str
    data: bytes  # in-order payload up to the first hole (at most STREAM_LIMIT bytes)
    segment_ends: tuple[int, ...]  # offsets where each segment ended: what a sensor sees grow


def _ip_packets(path: Path) -> Iterator[dpkt.ip.IP | dpkt.ip6.IP6]:
    with path.open("rb") as handle:
        reader = dpkt.pcap.UniversalReader(handle)
        decode = dpkt.loopback.Loopback if reader.datalink() == 0 else dpkt.ethernet.Ethernet
        for _ts, frame in reader:
            layer = decode(frame).data
            for _ in range(3):  # PPPoE -> PPP -> IP; dpkt has already removed VLAN tags
                if isinstance(layer, dpkt.pppoe.PPPoE | dpkt.ppp.PPP):
                    layer = layer.data
            if isinstance(layer, dpkt.ip.IP | dpkt.ip6.IP6):
                yield layer


def _read_captures() -> tuple[list[TcpDirection], list[tuple[str, int, int, bytes]]]:
    directions: list[TcpDirection] = []
    datagrams: list[tuple[str, int, int, bytes]] = []
    for path in sorted(CAPTURES.glob("*.pcap*")):
        if path.name.startswith("bench-"):
            continue  # derived from the others
        segments: dict[tuple[bytes, int, bytes, int], dict[int, bytes]] = {}
        for ip in _ip_packets(path):
            layer = ip.data
            if isinstance(layer, dpkt.tcp.TCP) and layer.data:
                key = (bytes(ip.src), layer.sport, bytes(ip.dst), layer.dport)
                segments.setdefault(key, {}).setdefault(layer.seq, bytes(layer.data))
            elif isinstance(layer, dpkt.udp.UDP):
                datagrams.append((path.name, layer.sport, layer.dport, bytes(layer.data)))
        for by_seq in segments.values():
            parts: list[bytes] = []
            ends: list[int] = []
            expected: int | None = None
            for seq in sorted(by_seq):
                if expected is not None and seq != expected:
                    if seq > expected:
                        break  # a hole: later bytes would be misaligned
                    continue  # a retransmission
                parts.append(by_seq[seq])
                ends.append(sum(map(len, parts)))
                expected = seq + len(by_seq[seq])
            data = b"".join(parts)[:STREAM_LIMIT]
            cuts = (*(end for end in ends if end < len(data)), len(data))
            directions.append(TcpDirection(path.name, data, cuts))
    return directions, datagrams


TCP, UDP = _read_captures()
CAPTURE_NAMES = sorted({d.capture for d in TCP} | {u[0] for u in UDP})
TLS = [d for d in TCP if old_tls.looks_like_tls(d.data[:8])]
DNS_PAYLOADS = [payload for _c, sport, dport, payload in UDP if {sport, dport} & DNS_PORTS]


def _plain(value: object) -> object:
    """A result as nested tuples (with class names), comparable across the two versions."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (type(value).__name__, *(_plain(getattr(value, f.name)) for f in fields))
    if isinstance(value, tuple | list):
        return tuple(_plain(item) for item in value)
    return value


def _outcome(parse: Callable[..., object], *args: object, **kwargs: object) -> Outcome:
    try:
        return _plain(parse(*args, **kwargs))
    except ParseError:
        return ParseError


def same(
    new: Callable[..., object], old: Callable[..., object], *args: object, **kw: object
) -> None:
    assert _outcome(new, *args, **kw) == _outcome(old, *args, **kw), (args, kw)


def test_the_corpus_has_what_the_checks_need() -> None:
    assert len(TLS) >= 250
    assert sum(http.looks_like_http_request(d.data) for d in TCP) >= 100
    assert sum(http.looks_like_http_response(d.data) for d in TCP) >= 100
    assert len(DNS_PAYLOADS) >= 150
    assert sum(len(d.segment_ends) > 1 for d in TLS) >= 50


# --- TLS ---------------------------------------------------------------------------------------


def _tls_checks(data: bytes) -> None:
    same(tls.parse_tls_stream, old_tls.parse_tls_stream, data)
    assert tls.looks_like_tls(data) is old_tls.looks_like_tls(data)


@pytest.mark.parametrize("capture", CAPTURE_NAMES)
def test_tls_stream_of_every_tcp_direction(capture: str) -> None:
    """Every direction (TLS or not), at every length a sensor would parse it at."""
    for direction in (d for d in TCP if d.capture == capture):
        for end in direction.segment_ends:
            _tls_checks(direction.data[:end])


def _cleartext_end(data: bytes) -> int:
    _payload, rest = split_stream(data)
    return len(data) - len(rest)


def _tls_pick(capture: str, first_byte_of_message: int, min_certificates: int = 0) -> bytes:
    for direction in TLS:
        data = direction.data
        if direction.capture == capture and len(data) > 5 and data[5] == first_byte_of_message:
            stream = old_tls.parse_tls_stream(data)
            if stream is not None and len(stream.certificates) >= min_certificates:
                return data
    raise AssertionError(capture)


EVERY_LENGTH_TLS = {
    "chrome-client-hello": _tls_pick("bg-ja4-tls-handshake.pcapng", 1),
    "three-certificate-flight": _tls_pick("bg-ja4-tls-handshake.pcapng", 2, 3),
    "anydesk-relay-flight": _tls_pick("anydesk-2022-ndpi.pcapng", 2, 2),
    "anydesk-client-second-flight": _tls_pick("anydesk-2022-ndpi.pcapng", 1, 1),
}


@pytest.mark.parametrize("name", list(EVERY_LENGTH_TLS))
def test_tls_stream_cut_at_every_length(name: str) -> None:
    data = EVERY_LENGTH_TLS[name]
    for end in range(min(len(data), _cleartext_end(data) + 64) + 1):
        _tls_checks(data[:end])


def _handshake_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    payload, _rest = split_stream(data)
    pos = 0
    while pos + 4 <= len(payload):
        length = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        if pos + 4 + length > len(payload):
            return
        yield payload[pos], payload[pos + 4 : pos + 4 + length]
        pos += 4 + length


HELLO_BODIES = sorted({body for d in TLS for t, body in _handshake_messages(d.data) if t == 1})
SERVER_BODIES = sorted({body for d in TLS for t, body in _handshake_messages(d.data) if t == 2})
CERTIFICATE_BODIES = sorted(
    {body for d in TLS for t, body in _handshake_messages(d.data) if t == 11}
)


def _cuts(size: int) -> list[int]:
    """Lengths to cut a body at: the short ones, a spread, and the long ones."""
    return sorted({*range(min(size, 48)), *range(0, size, 37), *range(max(0, size - 8), size + 1)})


def test_handshake_bodies_of_the_captures() -> None:
    assert len(HELLO_BODIES) >= 50
    assert len(SERVER_BODIES) >= 20
    assert len(CERTIFICATE_BODIES) >= 10
    for body in HELLO_BODIES:
        for end in _cuts(len(body)):
            for version in (0x0301, 0x0303):
                same(
                    tls.parse_client_hello_body,
                    old_tls.parse_client_hello_body,
                    body[:end],
                    version,
                )
    for body in SERVER_BODIES:
        for end in _cuts(len(body)):
            same(tls.parse_server_hello_body, old_tls.parse_server_hello_body, body[:end])
    for body in CERTIFICATE_BODIES:
        for end in _cuts(len(body)):
            same(tls.parse_certificate_body, old_tls.parse_certificate_body, body[:end])


@pytest.mark.parametrize("index", [0, 1, len(HELLO_BODIES) // 2, len(HELLO_BODIES) - 1])
def test_client_hello_body_cut_at_every_length(index: int) -> None:
    body = HELLO_BODIES[index]
    for end in range(len(body) + 1):
        same(tls.parse_client_hello_body, old_tls.parse_client_hello_body, body[:end], 0x0301)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(TLS),
    st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 7)), min_size=1, max_size=4),
    st.integers(0, STREAM_LIMIT),
)
def test_tls_bit_flips_and_cuts(
    direction: TcpDirection, flips: list[tuple[int, int]], end: int
) -> None:
    data = bytearray(direction.data[:6000])
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    _tls_checks(bytes(data[:end]))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TLS), st.integers(1, 600), st.integers(0, 8000))
def test_tls_records_recut(direction: TcpDirection, size: int, end: int) -> None:
    """The same handshake bytes in records of another size, cut anywhere."""
    data = rerecord(direction.data, size)
    _tls_checks(data[:end])


# Extension types the parser decodes, plus ordinary and GREASE ones.
EXTENSION_TYPES = st.sampled_from([0x0000, 0x000A, 0x000D, 0x0010, 0x002B, 0x0017, 0x0A0A, 0xFF01])
EXTENSION_DATA = st.one_of(
    st.binary(max_size=12),
    st.lists(st.binary(max_size=6), max_size=3).map(
        lambda names: alpn_ext(*names)[4:]  # a well-formed name list (also valid SNI-like)
    ),
    st.lists(st.integers(0, 0xFFFF), max_size=6).map(lambda values: u16_list_ext(0, values)[4:]),
    st.lists(st.integers(0, 0xFFFF), max_size=6).map(lambda values: versions_ext(*values)[4:]),
    st.binary(max_size=20).map(lambda name: sni_ext(name)[4:]),
)


@settings(max_examples=400)
@given(
    st.lists(st.tuples(EXTENSION_TYPES, EXTENSION_DATA), max_size=8),
    st.lists(st.integers(0, 0xFFFF), max_size=8),
    st.binary(max_size=40),
    st.sampled_from([0x0300, 0x0301, 0x0303, 0x0304, 0x7F1C]),
)
def test_generated_hellos(
    extensions: list[tuple[int, bytes]], ciphers: list[int], session_id: bytes, version: int
) -> None:
    exts = [ext(ext_type, data) for ext_type, data in extensions]
    body = client_hello_body(
        version=version, ciphers=ciphers, extensions=exts, session_id=session_id
    )
    same(tls.parse_client_hello_body, old_tls.parse_client_hello_body, body, version)
    server = server_hello_body(version=version, extensions=exts)
    same(tls.parse_server_hello_body, old_tls.parse_server_hello_body, server)
    flight = handshake(2, server) + handshake(11, b"\x00\x00\x00") + handshake(13, b"")
    for data in (record(22, handshake(1, body)), records(flight, 7)):
        _tls_checks(data)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from([0, 1, 2, 11, 13, 14, 99]), st.integers(1, 50))
def test_random_handshake_bodies(body: bytes, msg_type: int, size: int) -> None:
    data = records(handshake(2, server_hello_body()) + handshake(msg_type, body), size)
    _tls_checks(data)
    _tls_checks(record(22, handshake(msg_type, body)))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_tls_random_bytes(data: bytes) -> None:
    _tls_checks(data)
    _tls_checks(b"\x16\x03\x01" + data)


# --- JA4 ---------------------------------------------------------------------------------------

u16s = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0x0A0A, 0x1A1A, 0xFAFA, 0, 0x10]))


@settings(max_examples=400)
@given(
    st.builds(
        ja4.Ja4Fields,
        legacy_version=st.sampled_from([0x0002, 0x0300, 0x0301, 0x0303, 0x0304, 0xFEFD, 0x1234]),
        versions=st.lists(u16s, max_size=5).map(tuple),
        cipher_suites=st.lists(u16s, max_size=120).map(tuple),
        extensions=st.lists(u16s, max_size=120).map(tuple),
        signature_algorithms=st.lists(u16s, max_size=10).map(tuple),
        alpn_raw=st.lists(st.binary(max_size=5), max_size=3).map(tuple),
    ),
    st.sampled_from(["t", "q", "d"]),
)
def test_ja4_of_generated_fields(fields: ja4.Ja4Fields, transport: str) -> None:
    assert ja4.ja4(fields, transport) == old_ja4.ja4(fields, transport)


@pytest.mark.parametrize("value", [-1, 0x10000, 0x12345])
def test_ja4_of_values_outside_u16(value: int) -> None:
    """Hand-built inputs may hold any int; the text is the old one."""
    fields = ja4.Ja4Fields(0x0303, (value,), (value, 1), (value, 5), (value,), ())
    assert ja4.ja4(fields) == old_ja4.ja4(fields)


def test_grease_set_matches_is_grease() -> None:
    for value in range(-2, 0x10002):
        assert (value in ja4.GREASE_VALUES) is ja4.is_grease(value) is old_ja4.is_grease(value)
    assert len(ja4.GREASE_VALUES) == 16


@pytest.mark.parametrize("first", [bytes([b]) for b in range(256)])
def test_alpn_chars_of_every_byte(first: bytes) -> None:
    for value in (first, first + b"2", b"h" + first, first * 3):
        assert ja4.alpn_chars(value) == old_ja4.alpn_chars(value)


# --- HTTP --------------------------------------------------------------------------------------


def _http_checks(data: bytes, max_head: int = 8192) -> None:
    same(http.parse_http_request, old_http.parse_http_request, data, max_head=max_head)
    same(http.parse_http_response, old_http.parse_http_response, data, max_head=max_head)
    same(
        http.parse_http_requests,
        old_http.parse_http_requests,
        data,
        max_head=max_head,
        limit=64,
    )
    assert http.looks_like_http_request(data) is old_http.looks_like_http_request(data)
    assert http.looks_like_http_response(data) is old_http.looks_like_http_response(data)


@pytest.mark.parametrize("capture", CAPTURE_NAMES)
def test_http_of_every_tcp_direction(capture: str) -> None:
    for direction in (d for d in TCP if d.capture == capture):
        for end in direction.segment_ends:
            _http_checks(direction.data[:end])
        _http_checks(direction.data, max_head=64)
        _http_checks(direction.data, max_head=len(direction.data))


HTTP_HEADS = [
    d.data
    for d in TCP
    if d.capture in ("bg-zeek-bro.org.pcap", "bg-ndpi-windowsupdate_over_http.pcap")
    and (http.looks_like_http_request(d.data) or http.looks_like_http_response(d.data))
][:6]


@pytest.mark.parametrize("index", range(len(HTTP_HEADS)))
def test_http_cut_at_every_length(index: int) -> None:
    data = HTTP_HEADS[index]
    end_of_head = data.find(b"\r\n\r\n") + 4
    assert end_of_head > 4
    for end in range(end_of_head + 3):
        _http_checks(data[:end])
    for max_head in range(end_of_head - 3, end_of_head + 3):
        _http_checks(data, max_head=max_head)


HTTP_PIECES = st.sampled_from(
    [
        b"GET",
        b"POST",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2",
        b" ",
        b"\t",
        b"/",
        b"\r\n",
        b"\n",
        b"\r",
        b":",
        b",",
        b"200 OK",
        b"Host",
        b"hOST",
        b"User-Agent",
        b"Content-Length",
        b"content-length",
        b"Transfer-Encoding",
        b"Content-Type",
        b"Server",
        b"Location",
        b"X-Other",
        b"42",
        b"007",
        b"4 2",
        b"\xe9",
        b"\x00",
        b"\x7f",
        b"@",
        b"a",
    ]
)
HTTP_HEAD = st.lists(HTTP_PIECES, max_size=40).map(b"".join)


@settings(max_examples=600)
@given(
    st.sampled_from([b"GET /x HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"PUT / HTTP/1.0\n", b""]),
    HTTP_HEAD,
    st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\n\r\n", b"\r\r\n\r\n", b""]),
    st.binary(max_size=8),
    st.integers(1, 200),
)
def test_generated_http_heads(
    start: bytes, fields: bytes, end: bytes, body: bytes, max_head: int
) -> None:
    data = start + fields + end + body
    _http_checks(data)
    _http_checks(data, max_head=max_head)
    _http_checks(data + data)  # pipelined


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_http_random_bytes(data: bytes) -> None:
    _http_checks(data)
    _http_checks(b"GET / HTTP/1.1\r\n" + data)
    _http_checks(b"HTTP/1.1 200 OK\r\n" + data)


# --- DNS ---------------------------------------------------------------------------------------


def _dns_checks(data: bytes) -> None:
    same(dns.parse_dns, old_dns.parse_dns, data)
    prefixed = struct.pack("!H", len(data)) + data
    same(dns.parse_dns_tcp, old_dns.parse_dns_tcp, prefixed + prefixed[:7])


def test_dns_of_every_udp_payload() -> None:
    """DNS ports, and every other UDP payload of the captures too (NBNS, SSDP, RDP-UDP...)."""
    assert len(UDP) >= 1000
    for _capture, _sport, _dport, payload in UDP:
        _dns_checks(payload)


def test_dns_payloads_cut_at_every_length() -> None:
    for payload in DNS_PAYLOADS:
        for end in range(len(payload) + 1):
            same(dns.parse_dns, old_dns.parse_dns, payload[:end])


@pytest.mark.parametrize("capture", CAPTURE_NAMES)
def test_dns_tcp_of_every_tcp_direction(capture: str) -> None:
    for direction in (d for d in TCP if d.capture == capture):
        for end in direction.segment_ends:
            same(dns.parse_dns_tcp, old_dns.parse_dns_tcp, direction.data[:end])


def _label(text: bytes) -> bytes:
    return bytes([len(text)]) + text


# Pieces of names and records: labels (with escapes and non-UTF-8 bytes), pointers into the
# header, the question and each other, roots, and the fixed parts of records.
DNS_PIECES = st.one_of(
    st.sampled_from([_label(b"www"), _label(b"a.b"), _label(b"x\\y"), _label(b"\xc3\xa9")]),
    st.sampled_from([_label(b"\xff"), _label(b"A" * 63), b"\x00", b"\x40", b"\x80"]),
    st.integers(0, 90).map(lambda offset: struct.pack("!H", 0xC000 | offset)),
    st.sampled_from(
        [
            struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 0, 0, 1]),
            struct.pack("!HHIH", 28, 1, 60, 16) + bytes(15) + b"\x01",
            struct.pack("!HHIH", 5, 1, 60, 2) + b"\xc0\x0c",
            struct.pack("!HHIH", 12, 1, 60, 6) + _label(b"ptr") + b"\xc0\x0c",
            struct.pack("!HHIH", 16, 1, 60, 3) + b"\x02hi",
            struct.pack("!HH", 1, 1),
        ]
    ),
)


@settings(max_examples=800)
@given(
    st.integers(0, 3),
    st.integers(0, 4),
    st.lists(DNS_PIECES, max_size=16).map(b"".join),
)
def test_generated_dns_messages(qdcount: int, ancount: int, body: bytes) -> None:
    header = struct.pack("!HHHHHH", 0x1234, 0x8180, qdcount, ancount, 0, 0)
    _dns_checks(header + body)


@settings(max_examples=300)
@given(st.sampled_from(DNS_PAYLOADS), st.lists(st.integers(0, 10**6), max_size=6))
def test_dns_bit_flips(payload: bytes, flips: list[int]) -> None:
    data = bytearray(payload)
    for flip in flips:
        data[(flip >> 3) % len(data)] ^= 1 << (flip & 7)
    _dns_checks(bytes(data))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_dns_random_bytes(data: bytes) -> None:
    _dns_checks(data)


def test_dns_name_reaching_a_name_read_before() -> None:
    """A name read before ends the walk where it starts, even if walking on would fail.

    The third record's name points at a TXT record's data, whose one label runs into the
    second record's name. That name goes on to point into the TXT data, which is not before
    the start of this walk: walked through, it fails; reached as a name read before, it is
    the rest of the name. Both versions reach it as a name read before.
    """
    txt = struct.pack("!HHIH", 16, 1, 60, 3) + b"\x02x\x00"  # data at 23: label "x\0"
    a_record = struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4)
    message = (
        struct.pack("!HHHHHH", 7, 0x8180, 0, 3, 0, 0)
        + b"\x00"
        + txt
        + b"\x01c\xc0\x19"  # at 26: "c", then a pointer to the root at 25
        + a_record
        + b"\xc0\x17"  # a pointer to 23
        + a_record
    )
    names = [answer.name for answer in dns.parse_dns(message).answers]
    assert names == ["", "c", "x\x00.c"]
    _dns_checks(message)


ZERO_HEAVY_HEXTETS = st.lists(
    st.one_of(st.just(0), st.just(0), st.just(0xFFFF), st.integers(0, 0xFFFF)),
    min_size=8,
    max_size=8,
)


@settings(max_examples=500)
@given(ZERO_HEAVY_HEXTETS)
def test_aaaa_text_is_ipaddress_compressed(hextets: list[int]) -> None:
    packed = struct.pack("!8H", *hextets)
    name = b"\x01a\x00"
    message = (
        struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0)
        + name
        + struct.pack("!HH", 28, 1)
        + b"\xc0\x0c"
        + struct.pack("!HHIH", 28, 1, 60, 16)
        + packed
    )
    (answer,) = dns.parse_dns(message).answers
    assert answer.data == ipaddress.IPv6Address(packed).compressed
