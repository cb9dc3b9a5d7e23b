"""Byte builders for TLS handshakes and a small TCP stream extractor for the test captures."""

from __future__ import annotations

import datetime as dt
import ipaddress
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import dpkt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

CAPTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "captures"

CHROME_CIPHERS = (
    0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9,
    0xCCA8, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035,
)  # fmt: skip
CHROME_SIGALGS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)

StreamKey = tuple[str, int, str, int]  # src ip, src port, dst ip, dst port


# --- TLS wire builders -------------------------------------------------------------------


def u8(value: int) -> bytes:
    return struct.pack("!B", value)


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def u24(value: int) -> bytes:
    return struct.pack("!I", value)[1:]


def record(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    return u8(content_type) + u16(version) + u16(len(payload)) + payload


def handshake(msg_type: int, body: bytes) -> bytes:
    return u8(msg_type) + u24(len(body)) + body


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + u16(len(data)) + data


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(u8(name_type) + u16(len(n)) + n for n in names)
    return ext(0x0000, u16(len(entries)) + entries)


def alpn_ext(*names: bytes) -> bytes:
    entries = b"".join(u8(len(n)) + n for n in names)
    return ext(0x0010, u16(len(entries)) + entries)


def versions_ext(*versions: int) -> bytes:
    data = b"".join(u16(v) for v in versions)
    return ext(0x002B, u8(len(data)) + data)


def u16_list_ext(ext_type: int, values: Iterable[int]) -> bytes:
    data = b"".join(u16(v) for v in values)
    return ext(ext_type, u16(len(data)) + data)


def client_hello_body(
    *,
    version: int = 0x0303,
    ciphers: Sequence[int] = CHROME_CIPHERS,
    extensions: Sequence[bytes] = (),
    session_id: bytes = bytes(32),
    compression: bytes = b"\x00",
    omit_extensions_block: bool = False,
) -> bytes:
    body = u16(version) + bytes(range(32)) + u8(len(session_id)) + session_id
    body += u16(2 * len(ciphers)) + b"".join(u16(c) for c in ciphers)
    body += u8(len(compression)) + compression
    if not omit_extensions_block:
        block = b"".join(extensions)
        body += u16(len(block)) + block
    return body


def server_hello_body(
    *,
    version: int = 0x0303,
    cipher: int = 0xC02F,
    extensions: Sequence[bytes] = (),
    random: bytes = bytes(range(32, 64)),
) -> bytes:
    block = b"".join(extensions)
    body = u16(version) + random + u8(32) + bytes(32) + u16(cipher) + u8(0)
    return body + u16(len(block)) + block


def certificate_body(*ders: bytes) -> bytes:
    chain = b"".join(u24(len(d)) + d for d in ders)
    return u24(len(chain)) + chain


def records(messages: bytes, size: int, version: int = 0x0303, content_type: int = 22) -> bytes:
    """Cut handshake bytes into records of at most `size` bytes each."""
    return b"".join(
        record(content_type, messages[i : i + size], version) for i in range(0, len(messages), size)
    )


def split_stream(data: bytes) -> tuple[bytes, bytes]:
    """(handshake payload of the leading handshake records, everything after them)."""
    payload = b""
    pos = 0
    while pos + 5 <= len(data) and data[pos] == 22:
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        payload += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return payload, data[pos:]


def rerecord(data: bytes, size: int) -> bytes:
    """The same stream with its leading handshake bytes re-cut into `size`-byte records."""
    version = int.from_bytes(data[1:3], "big")
    payload, rest = split_stream(data)
    return records(payload, size, version) + rest


# --- certificates ----------------------------------------------------------------------------


def make_certificate(
    subject: x509.Name | None = None,
    *,
    serial: int = 0x1234,
    not_before: dt.datetime = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    not_after: dt.datetime = dt.datetime(2070, 6, 7, 8, 9, 10, tzinfo=dt.UTC),
) -> bytes:
    """A self-signed EC certificate (EC keys are quick to make)."""
    key = ec.generate_private_key(ec.SECP256R1())
    if subject is None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


# --- captures --------------------------------------------------------------------------------


def _reader(handle: object, path: Path) -> Iterable[tuple[float, bytes]]:
    magic = path.read_bytes()[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        return dpkt.pcapng.Reader(handle)  # type: ignore[no-any-return]
    return dpkt.pcap.Reader(handle)  # type: ignore[no-any-return]


def tcp_streams(name: str) -> dict[StreamKey, bytes]:
    """In-order payload of each TCP direction of an Ethernet capture, up to the first gap."""
    path = CAPTURES / name
    segments: dict[StreamKey, list[tuple[int, bytes]]] = {}
    first_seq: dict[StreamKey, int] = {}
    with path.open("rb") as handle:
        for _ts, frame in _reader(handle, path):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) or not isinstance(
                ip.data, dpkt.tcp.TCP
            ):
                continue
            tcp = ip.data
            key = (_addr(ip.src), tcp.sport, _addr(ip.dst), tcp.dport)
            if tcp.flags & dpkt.tcp.TH_SYN:
                first_seq[key] = tcp.seq + 1
            if tcp.data:
                segments.setdefault(key, []).append((tcp.seq, bytes(tcp.data)))
    streams: dict[StreamKey, bytes] = {}
    for key, segs in segments.items():
        base = first_seq.get(key, min(seq for seq, _ in segs))
        data = bytearray()
        for seq, payload in sorted(segs, key=lambda s: (s[0] - base) % 2**32):
            offset = (seq - base) % 2**32
            if offset > len(data):
                break  # a gap: the rest is not in order
            data += payload[len(data) - offset :]
        streams[key] = bytes(data)
    return streams


def _addr(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def stream_by_ports(streams: dict[StreamKey, bytes], sport: int, dport: int) -> bytes:
    matches = [data for key, data in streams.items() if key[1] == sport and key[3] == dport]
    assert len(matches) == 1, (sport, dport, len(matches))
    return matches[0]
