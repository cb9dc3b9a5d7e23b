"""Sans-IO parser for the cleartext part of a TLS handshake (one direction of a TCP stream).

Reference copy of ``sensor/protocols/tls.py`` as it was before that module was rewritten
for speed (only this paragraph and imports of sibling reference modules differ).
``tests/protocols/test_equivalence.py`` checks that the rewritten parser gives the same
result (or the same ParseError) on every input.

It reads records and reassembles handshake messages across records, and keeps the
ClientHello, ServerHello, the first Certificate message (TLS <= 1.2) and whether a
CertificateRequest was seen. It stops where the handshake stops being readable.
"""

from __future__ import annotations

from dataclasses import dataclass

from sensor.protocols.errors import ParseError
from tests.protocols.legacy.ja4 import Ja4Fields, is_grease, ja4

CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23
CT_HEARTBEAT = 24

HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
HS_CERTIFICATE = 11
HS_CERTIFICATE_REQUEST = 13

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B

TLS13 = 0x0304
TLS13_DRAFT_MAJOR = 0x7F  # 0x7fNN: TLS 1.3 draft NN, also encrypted after the ServerHello
MAX_RECORD_LENGTH = 2**14 + 2048  # TLSCiphertext limit; TLSPlaintext is tighter
RECORD_HEADER_LENGTH = 5
HANDSHAKE_HEADER_LENGTH = 4
RANDOM_LENGTH = 32
MAX_SESSION_ID_LENGTH = 32
# Largest hello body the length prefixes allow: version, random, session_id, ciphers,
# compression methods, extensions (the ServerHello bound is smaller).
MAX_HELLO_BODY = (
    2 + RANDOM_LENGTH + (1 + MAX_SESSION_ID_LENGTH) + (2 + 0xFFFF) + (1 + 0xFF) + (2 + 0xFFFF)
)

# Handshake types from the IANA registry; anything else in a cleartext record is not TLS.
_KNOWN_HANDSHAKE_TYPES = frozenset({*range(0, 7), *range(8, 18), *range(20, 27), 254})
# RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest (more cleartext follows).
_HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)


@dataclass(frozen=True, slots=True)
class ClientHello:
    record_version: int
    legacy_version: int
    versions: tuple[int, ...]
    server_name: str | None
    alpn: tuple[str, ...]
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    supported_groups: tuple[int, ...]
    ja4: str
    alpn_raw: tuple[bytes, ...]  # ALPN names as sent; JA4 needs the raw bytes


@dataclass(frozen=True, slots=True)
class ServerHello:
    legacy_version: int
    version: int
    cipher_suite: int
    extensions: tuple[int, ...]
    alpn: str | None
    hello_retry_request: bool


@dataclass(frozen=True, slots=True)
class TlsStream:
    """What the cleartext handshake of ONE direction of a TCP stream showed."""

    client_hello: ClientHello | None
    server_hello: ServerHello | None
    certificates: tuple[bytes, ...]
    certificate_request: bool
    done: bool


def looks_like_tls(data: bytes) -> bool:
    """Cheap first-bytes check: a handshake record with version 3.0 .. 3.4."""
    return len(data) >= 3 and data[0] == CT_HANDSHAKE and data[1] == 3 and data[2] <= 4


class _Reader:
    """Bounds-checked big-endian reader over one bytes object."""

    __slots__ = ("_data", "_end", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data)
        self._what = what

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def take(self, count: int) -> bytes:
        if count > self.remaining:
            raise ParseError(f"{self._what}: needs {count} bytes, {self.remaining} left")
        start = self._pos
        self._pos += count
        return self._data[start : self._pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vector8(self) -> bytes:
        return self.take(self.u8())

    def vector16(self) -> bytes:
        return self.take(self.u16())

    def vector24(self) -> bytes:
        return self.take(self.u24())

    def expect_end(self) -> None:
        if self.remaining:
            raise ParseError(f"{self._what}: {self.remaining} trailing bytes")


def _u16_list(data: bytes, what: str) -> tuple[int, ...]:
    if len(data) % 2:
        raise ParseError(f"{what}: odd length {len(data)}")
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


def _text(raw: bytes) -> str:
    """Wire text as a valid str with control characters escaped (safe for terminals)."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(
        f"\\x{ord(ch):02x}" if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F else ch for ch in text
    )


def _extensions(reader: _Reader, what: str) -> list[tuple[int, bytes]]:
    """The optional extensions block that ends a hello (absent in old SSLv3/TLS 1.0 hellos)."""
    if reader.remaining == 0:
        return []
    block = _Reader(reader.vector16(), what)
    reader.expect_end()
    out: list[tuple[int, bytes]] = []
    while block.remaining:
        ext_type = block.u16()
        out.append((ext_type, block.vector16()))
    return out


def _server_name(data: bytes) -> str:
    names = _Reader(_Reader(data, "server_name").vector16(), "server_name list")
    while names.remaining:
        name_type = names.u8()
        name = names.vector16()
        if name_type == 0:  # host_name
            return _text(name)
    return ""


def _alpn_names(data: bytes) -> tuple[bytes, ...]:
    outer = _Reader(data, "alpn")
    names = _Reader(outer.vector16(), "alpn list")
    outer.expect_end()
    out: list[bytes] = []
    while names.remaining:
        out.append(names.vector8())
    return tuple(out)


def _prefixed_u16_list(data: bytes, what: str, *, prefix8: bool = False) -> tuple[int, ...]:
    outer = _Reader(data, what)
    values = _u16_list(outer.vector8() if prefix8 else outer.vector16(), what)
    outer.expect_end()
    return values


def parse_client_hello_body(body: bytes, record_version: int) -> ClientHello:
    """Parse a ClientHello handshake body (after the 4-byte handshake header)."""
    reader = _Reader(body, "ClientHello")
    legacy_version = reader.u16()
    reader.take(RANDOM_LENGTH)
    if len(reader.vector8()) > MAX_SESSION_ID_LENGTH:
        raise ParseError("ClientHello: session_id longer than 32 bytes")
    cipher_suites = _u16_list(reader.vector16(), "cipher_suites")
    reader.vector8()  # compression methods
    server_name: str | None = None
    alpn_raw: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = ()
    sigalgs: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    ext_types: list[int] = []
    for ext_type, data in _extensions(reader, "ClientHello extensions"):
        ext_types.append(ext_type)
        if ext_type == EXT_SERVER_NAME:
            server_name = _server_name(data)
        elif ext_type == EXT_ALPN:
            alpn_raw = _alpn_names(data)
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            offered = _prefixed_u16_list(data, "supported_versions", prefix8=True)
            versions = tuple(v for v in offered if not is_grease(v))
        elif ext_type == EXT_SIGNATURE_ALGORITHMS:
            sigalgs = _prefixed_u16_list(data, "signature_algorithms")
        elif ext_type == EXT_SUPPORTED_GROUPS:
            groups = _prefixed_u16_list(data, "supported_groups")
    extensions = tuple(ext_types)
    fingerprint = ja4(
        Ja4Fields(
            legacy_version=legacy_version,
            versions=versions,
            cipher_suites=cipher_suites,
            extensions=extensions,
            signature_algorithms=sigalgs,
            alpn_raw=alpn_raw,
        )
    )
    return ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        versions=versions,
        server_name=server_name,
        alpn=tuple(_text(name) for name in alpn_raw),
        cipher_suites=cipher_suites,
        extensions=extensions,
        signature_algorithms=sigalgs,
        supported_groups=groups,
        ja4=fingerprint,
        alpn_raw=alpn_raw,
    )


def parse_server_hello_body(body: bytes) -> ServerHello:
    """Parse a ServerHello handshake body (after the 4-byte handshake header)."""
    reader = _Reader(body, "ServerHello")
    legacy_version = reader.u16()
    random = reader.take(RANDOM_LENGTH)
    if len(reader.vector8()) > MAX_SESSION_ID_LENGTH:
        raise ParseError("ServerHello: session_id longer than 32 bytes")
    cipher_suite = reader.u16()
    reader.u8()  # compression method
    version = legacy_version
    alpn: str | None = None
    ext_types: list[int] = []
    for ext_type, data in _extensions(reader, "ServerHello extensions"):
        ext_types.append(ext_type)
        if ext_type == EXT_SUPPORTED_VERSIONS:
            chosen = _Reader(data, "supported_versions")
            version = chosen.u16()
            chosen.expect_end()
        elif ext_type == EXT_ALPN:
            names = _alpn_names(data)
            if len(names) != 1:
                raise ParseError(f"ServerHello: ALPN must name one protocol, not {len(names)}")
            alpn = _text(names[0])
    return ServerHello(
        legacy_version=legacy_version,
        version=version,
        cipher_suite=cipher_suite,
        extensions=tuple(ext_types),
        alpn=alpn,
        hello_retry_request=random == _HELLO_RETRY_RANDOM,
    )


def parse_certificate_body(body: bytes) -> tuple[bytes, ...]:
    """DER blobs of a TLS <= 1.2 Certificate message body, leaf first."""
    outer = _Reader(body, "Certificate")
    chain = _Reader(outer.vector24(), "certificate_list")
    outer.expect_end()
    certs: list[bytes] = []
    while chain.remaining:
        certs.append(chain.vector24())
    return tuple(certs)


@dataclass(slots=True)
class _Progress:
    """Mutable state of one parse call (local to it, never shared)."""

    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    certificates: tuple[bytes, ...] | None = None
    certificate_request: bool = False
    done: bool = False
    messages: int = 0

    def awaiting_server_hello(self) -> bool:
        return self.server_hello is not None and self.server_hello.hello_retry_request

    def result(self) -> TlsStream | None:
        if self.messages == 0 and not self.done:
            return None
        return TlsStream(
            client_hello=self.client_hello,
            server_hello=self.server_hello,
            certificates=self.certificates or (),
            certificate_request=self.certificate_request,
            done=self.done,
        )


def _record_header(data: bytes, pos: int) -> tuple[int, int, int]:
    content_type = data[pos]
    version = int.from_bytes(data[pos + 1 : pos + 3], "big")
    length = int.from_bytes(data[pos + 3 : pos + 5], "big")
    if content_type not in (
        CT_CHANGE_CIPHER_SPEC,
        CT_ALERT,
        CT_HANDSHAKE,
        CT_APPLICATION_DATA,
        CT_HEARTBEAT,
    ):
        raise ParseError(f"record at {pos}: content type {content_type} is not TLS")
    if version >> 8 != 3 or version & 0xFF > 4:
        raise ParseError(f"record at {pos}: version {version:#06x} is not TLS")
    if length > MAX_RECORD_LENGTH:
        raise ParseError(f"record at {pos}: length {length} exceeds {MAX_RECORD_LENGTH}")
    return content_type, version, length


def parse_tls_stream(data: bytes) -> TlsStream | None:
    """Parse the in-order bytes of one direction from the start of a TCP stream.

    Returns None until the first handshake message is complete (or the stream ends its
    cleartext part), a TlsStream with what is complete so far otherwise. Raises ParseError
    when the bytes are not TLS.
    """
    progress = _Progress()
    handshake = bytearray()  # handshake bytes of all records read so far
    consumed = 0  # start of the next unparsed message in `handshake`
    record_version: int | None = None
    pos = 0
    while not progress.done and len(data) - pos >= RECORD_HEADER_LENGTH:
        content_type, version, length = _record_header(data, pos)
        if record_version is None:
            record_version = version
        if length == 0 and content_type != CT_APPLICATION_DATA:
            # RFC 5246 6.2.1 forbids empty handshake, alert and CCS fragments.
            raise ParseError(f"record at {pos}: empty record of content type {content_type}")
        end = pos + RECORD_HEADER_LENGTH + length
        if end > len(data):
            break  # partial trailing record: not usable yet
        if content_type == CT_CHANGE_CIPHER_SPEC and progress.awaiting_server_hello():
            # TLS 1.3 compatibility CCS after a HelloRetryRequest: the real ServerHello follows.
            pos = end
            continue
        if content_type != CT_HANDSHAKE:
            # CCS, alert, application data or heartbeat: what follows is not cleartext handshake.
            progress.done = True
            break
        handshake += data[pos + RECORD_HEADER_LENGTH : end]
        pos = end
        consumed = _parse_messages(handshake, consumed, record_version, progress)
    return progress.result()


def _parse_messages(buffer: bytearray, start: int, record_version: int, out: _Progress) -> int:
    """Parse every complete handshake message from `start`; return where parsing stopped."""
    pos = start
    while not out.done and len(buffer) - pos >= HANDSHAKE_HEADER_LENGTH:
        msg_type = buffer[pos]
        length = int.from_bytes(buffer[pos + 1 : pos + 4], "big")
        if msg_type not in _KNOWN_HANDSHAKE_TYPES:
            raise ParseError(f"handshake type {msg_type} is not TLS")
        if out.messages == 0:
            if msg_type not in (HS_CLIENT_HELLO, HS_SERVER_HELLO):
                raise ParseError(f"stream starts with handshake type {msg_type}, not a hello")
            if length > MAX_HELLO_BODY:
                raise ParseError(f"hello of {length} bytes exceeds what its fields allow")
        body_start = pos + HANDSHAKE_HEADER_LENGTH
        if len(buffer) - body_start < length:
            break
        body = bytes(buffer[body_start : body_start + length])
        pos = body_start + length
        out.messages += 1
        _apply_message(msg_type, body, record_version, out)
    return pos


def _apply_message(msg_type: int, body: bytes, record_version: int, out: _Progress) -> None:
    if msg_type == HS_CLIENT_HELLO and out.client_hello is None:
        out.client_hello = parse_client_hello_body(body, record_version)
    elif msg_type == HS_SERVER_HELLO and (out.server_hello is None or out.awaiting_server_hello()):
        # A HelloRetryRequest is kept until the real ServerHello replaces it.
        out.server_hello = parse_server_hello_body(body)
        # TLS 1.3 encrypts everything after the (real) ServerHello.
        version = out.server_hello.version
        is_tls13 = version == TLS13 or version >> 8 == TLS13_DRAFT_MAJOR
        out.done = is_tls13 and not out.server_hello.hello_retry_request
    elif msg_type == HS_CERTIFICATE and out.certificates is None:
        out.certificates = parse_certificate_body(body)
    elif msg_type == HS_CERTIFICATE_REQUEST:
        out.certificate_request = True
