"""Sans-IO parser for the cleartext part of a TLS handshake (one direction of a TCP stream).

It reads records and reassembles handshake messages across records, and keeps the
ClientHello, ServerHello, the first Certificate message (TLS <= 1.2) and whether a
CertificateRequest was seen. It stops where the handshake stops being readable.

It runs on the first bytes of every TLS flow, again each time a segment adds bytes, so it
reads fields with integer offsets into one bytes object (no reader object, no call per field).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from sensor.frozen import picklable
from sensor.protocols.errors import ParseError
from sensor.protocols.ja4 import GREASE_VALUES
from sensor.protocols.ja4 import ja4 as client_ja4

CT_CHANGE_CIPHER_SPEC: Final = 20
CT_ALERT: Final = 21
CT_HANDSHAKE: Final = 22
CT_APPLICATION_DATA: Final = 23
CT_HEARTBEAT: Final = 24

HS_CLIENT_HELLO: Final = 1
HS_SERVER_HELLO: Final = 2
HS_CERTIFICATE: Final = 11
HS_CERTIFICATE_REQUEST: Final = 13

EXT_SERVER_NAME: Final = 0x0000
EXT_SUPPORTED_GROUPS: Final = 0x000A
EXT_SIGNATURE_ALGORITHMS: Final = 0x000D
EXT_ALPN: Final = 0x0010
EXT_SUPPORTED_VERSIONS: Final = 0x002B

TLS13: Final = 0x0304
TLS13_DRAFT_MAJOR: Final = 0x7F  # 0x7fNN: TLS 1.3 draft NN, also encrypted after the ServerHello
MAX_RECORD_LENGTH: Final = 2**14 + 2048  # TLSCiphertext limit; TLSPlaintext is tighter
RECORD_HEADER_LENGTH: Final = 5
HANDSHAKE_HEADER_LENGTH: Final = 4
RANDOM_LENGTH: Final = 32
MAX_SESSION_ID_LENGTH: Final = 32
# Largest hello body the length prefixes allow: version, random, session_id, ciphers,
# compression methods, extensions (the ServerHello bound is smaller).
MAX_HELLO_BODY: Final = (
    2 + RANDOM_LENGTH + (1 + MAX_SESSION_ID_LENGTH) + (2 + 0xFFFF) + (1 + 0xFF) + (2 + 0xFFFF)
)

# Handshake types from the IANA registry; anything else in a cleartext record is not TLS.
_KNOWN_HANDSHAKE_TYPES: Final = frozenset({*range(0, 7), *range(8, 18), *range(20, 27), 254})
_HELLO_TYPES: Final = frozenset({HS_CLIENT_HELLO, HS_SERVER_HELLO})
_DECODED_CLIENT_EXTENSIONS: Final = frozenset(
    {
        EXT_SERVER_NAME,
        EXT_SUPPORTED_GROUPS,
        EXT_SIGNATURE_ALGORITHMS,
        EXT_ALPN,
        EXT_SUPPORTED_VERSIONS,
    }
)
_RECORD_TYPES: Final = frozenset(
    {CT_CHANGE_CIPHER_SPEC, CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA, CT_HEARTBEAT}
)
# RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest (more cleartext follows).
_HELLO_RETRY_RANDOM: Final = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)
_RECORD_HEADER: Final = struct.Struct(">BHH")  # content type, version, length
_HELLO_FIXED: Final = 2 + RANDOM_LENGTH  # legacy_version, random: then the session_id length byte


@dataclass(frozen=True, slots=True, init=False)
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
    alpn_raw: tuple[bytes, ...]  # ALPN names as sent; JA4 needs the raw bytes

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        record_version: int,
        legacy_version: int,
        versions: tuple[int, ...],
        server_name: str | None,
        alpn: tuple[str, ...],
        cipher_suites: tuple[int, ...],
        extensions: tuple[int, ...],
        signature_algorithms: tuple[int, ...],
        supported_groups: tuple[int, ...],
        alpn_raw: tuple[bytes, ...],
    ) -> None:
        object.__setattr__(self, "record_version", record_version)
        object.__setattr__(self, "legacy_version", legacy_version)
        object.__setattr__(self, "versions", versions)
        object.__setattr__(self, "server_name", server_name)
        object.__setattr__(self, "alpn", alpn)
        object.__setattr__(self, "cipher_suites", cipher_suites)
        object.__setattr__(self, "extensions", extensions)
        object.__setattr__(self, "signature_algorithms", signature_algorithms)
        object.__setattr__(self, "supported_groups", supported_groups)
        object.__setattr__(self, "alpn_raw", alpn_raw)

    @property
    def ja4(self) -> str:
        """The JA4 fingerprint, computed when asked: most flows' fingerprints are never read."""
        return client_ja4(self)


@dataclass(frozen=True, slots=True, init=False)
class ServerHello:
    legacy_version: int
    version: int
    cipher_suite: int
    extensions: tuple[int, ...]
    alpn: str | None
    hello_retry_request: bool

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        legacy_version: int,
        version: int,
        cipher_suite: int,
        extensions: tuple[int, ...],
        alpn: str | None,
        hello_retry_request: bool,
    ) -> None:
        object.__setattr__(self, "legacy_version", legacy_version)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "cipher_suite", cipher_suite)
        object.__setattr__(self, "extensions", extensions)
        object.__setattr__(self, "alpn", alpn)
        object.__setattr__(self, "hello_retry_request", hello_retry_request)


@dataclass(frozen=True, slots=True, init=False)
class TlsStream:
    """What the cleartext handshake of ONE direction of a TCP stream showed."""

    client_hello: ClientHello | None
    server_hello: ServerHello | None
    certificates: tuple[bytes, ...]
    certificate_request: bool
    done: bool

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        client_hello: ClientHello | None,
        server_hello: ServerHello | None,
        certificates: tuple[bytes, ...],
        certificate_request: bool,
        done: bool,
    ) -> None:
        object.__setattr__(self, "client_hello", client_hello)
        object.__setattr__(self, "server_hello", server_hello)
        object.__setattr__(self, "certificates", certificates)
        object.__setattr__(self, "certificate_request", certificate_request)
        object.__setattr__(self, "done", done)


def looks_like_tls(data: bytes) -> bool:
    """Cheap first-bytes check: a handshake record with version 3.0 .. 3.4."""
    return len(data) >= 3 and data[0] == CT_HANDSHAKE and data[1] == 3 and data[2] <= 4


# --- field readers: (data, start, end) of the enclosing structure, checked against `end` ----


def _u16_tuple(data: bytes, start: int, end: int, what: str) -> tuple[int, ...]:
    """The big-endian u16 values that exactly fill data[start:end]."""
    length = end - start
    if length & 1:
        raise ParseError(f"{what}: odd length {length}")
    return struct.unpack_from(f">{length >> 1}H", data, start)


def _vector16_end(data: bytes, pos: int, end: int, what: str) -> int:
    """End of the u16-length-prefixed vector at `pos` (its content starts at pos + 2)."""
    if end - pos < 2:
        raise ParseError(f"{what}: needs 2 bytes, {end - pos} left")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise ParseError(f"{what}: needs {stop - pos - 2} bytes, {end - pos - 2} left")
    return stop


def _text(raw: bytes) -> str:
    r"""Wire text as a valid str with control characters escaped (safe for terminals).

    A backslash on the wire is doubled first, so a name cannot spell out an escape of its own:
    the four characters ``\x0a`` are written ``\\x0a``, a newline byte ``\x0a``.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\", b"\\\\")
    text = raw.decode("utf-8", "backslashreplace")
    if text.isascii() and text.isprintable():  # the usual case: nothing to escape
        return text
    return "".join(
        f"\\x{ord(ch):02x}" if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F else ch for ch in text
    )


def _server_name(data: bytes, start: int, end: int) -> str:
    """The first host_name of a server_name extension ("" if it names none)."""
    # Bytes after the name list are ignored, and so are entries after the first host_name.
    stop = _vector16_end(data, start, end, "server_name")
    pos = start + 2
    while pos < stop:  # bounded: each pass moves pos forward by at least 3
        if stop - pos < 3:
            raise ParseError("server_name list: truncated entry")
        name_start = pos + 3
        pos = name_start + ((data[pos + 1] << 8) | data[pos + 2])
        if pos > stop:
            raise ParseError("server_name list: name runs past the list")
        if data[name_start - 3] == 0:  # host_name
            return _text(data[name_start:pos])
    return ""


def _alpn_names(data: bytes, start: int, end: int) -> tuple[bytes, ...]:
    stop = _vector16_end(data, start, end, "alpn")
    if stop != end:
        raise ParseError(f"alpn: {end - stop} trailing bytes")
    names: list[bytes] = []
    pos = start + 2
    while pos < stop:  # bounded: each pass moves pos forward by at least 1
        name_start = pos + 1
        pos = name_start + data[pos]
        if pos > stop:
            raise ParseError("alpn list: name runs past the list")
        names.append(data[name_start:pos])
    return tuple(names)


def _prefixed_u16s(data: bytes, start: int, end: int, what: str) -> tuple[int, ...]:
    """A u16-length-prefixed list of u16 values that fills data[start:end] exactly."""
    stop = _vector16_end(data, start, end, what)
    if stop != end:
        raise ParseError(f"{what}: {end - stop} trailing bytes")
    return _u16_tuple(data, start + 2, stop, what)


def _supported_versions(data: bytes, start: int, end: int) -> tuple[int, ...]:
    """ClientHello supported_versions (a u8-length-prefixed list), GREASE removed."""
    if start >= end:
        raise ParseError("supported_versions: needs 1 byte, 0 left")
    stop = start + 1 + data[start]
    if stop != end:
        raise ParseError("supported_versions: list length does not fill the extension")
    offered = _u16_tuple(data, start + 1, stop, "supported_versions")
    return tuple([v for v in offered if v not in GREASE_VALUES])


def _hello_start(body: bytes, what: str) -> int:
    """Check legacy_version, random and session_id; return the offset after session_id."""
    if len(body) <= _HELLO_FIXED:
        raise ParseError(f"{what}: shorter than version, random and session_id")
    session_id_length = body[_HELLO_FIXED]
    pos = _HELLO_FIXED + 1 + session_id_length
    if pos > len(body):
        raise ParseError(f"{what}: session_id runs past the message")
    if session_id_length > MAX_SESSION_ID_LENGTH:
        raise ParseError(f"{what}: session_id longer than 32 bytes")
    return pos


def _extensions_start(body: bytes, pos: int, what: str) -> int:
    """Check the optional extensions block at `pos` fills the rest of the body; return
    where its entries start (len(body) when the block is absent, as in old SSLv3/TLS 1.0)."""
    end = len(body)
    if pos == end:
        return end
    if _vector16_end(body, pos, end, what) != end:
        raise ParseError(f"{what}: trailing bytes after the extensions")
    return pos + 2


def parse_client_hello_body(body: bytes, record_version: int) -> ClientHello:
    """Parse a ClientHello handshake body (after the 4-byte handshake header)."""
    end = len(body)
    pos = _hello_start(body, "ClientHello")
    ciphers_end = _vector16_end(body, pos, end, "cipher_suites")
    cipher_suites = _u16_tuple(body, pos + 2, ciphers_end, "cipher_suites")
    if ciphers_end >= end:
        raise ParseError("ClientHello: compression methods missing")
    pos = ciphers_end + 1 + body[ciphers_end]  # compression methods
    if pos > end:
        raise ParseError("ClientHello: compression methods run past the message")
    server_name: str | None = None
    alpn_raw: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = ()
    sigalgs: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    ext_types: list[int] = []
    pos = _extensions_start(body, pos, "ClientHello extensions")
    while pos < end:  # bounded: each pass moves pos forward by at least 4
        if end - pos < 4:
            raise ParseError("ClientHello extensions: truncated extension header")
        # From single bytes: compiled, plain arithmetic (no tuple per extension).
        ext_type = (body[pos] << 8) | body[pos + 1]
        length = (body[pos + 2] << 8) | body[pos + 3]
        start = pos + 4
        pos = start + length
        if pos > end:
            raise ParseError(f"ClientHello extension {ext_type:#06x} runs past the block")
        ext_types.append(ext_type)
        if ext_type not in _DECODED_CLIENT_EXTENSIONS:
            continue
        if ext_type == EXT_SERVER_NAME:
            server_name = _server_name(body, start, pos)
        elif ext_type == EXT_SUPPORTED_GROUPS:
            groups = _prefixed_u16s(body, start, pos, "supported_groups")
        elif ext_type == EXT_SIGNATURE_ALGORITHMS:
            sigalgs = _prefixed_u16s(body, start, pos, "signature_algorithms")
        elif ext_type == EXT_ALPN:
            alpn_raw = _alpn_names(body, start, pos)
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            versions = _supported_versions(body, start, pos)
    extensions = tuple(ext_types)
    legacy_version = (body[0] << 8) | body[1]
    return ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        versions=versions,
        server_name=server_name,
        alpn=tuple([_text(name) for name in alpn_raw]),
        cipher_suites=cipher_suites,
        extensions=extensions,
        signature_algorithms=sigalgs,
        supported_groups=groups,
        alpn_raw=alpn_raw,
    )


def parse_server_hello_body(body: bytes) -> ServerHello:
    """Parse a ServerHello handshake body (after the 4-byte handshake header)."""
    end = len(body)
    pos = _hello_start(body, "ServerHello")
    if end - pos < 3:
        raise ParseError("ServerHello: cipher suite or compression method missing")
    cipher_suite = (body[pos] << 8) | body[pos + 1]
    legacy_version = (body[0] << 8) | body[1]
    version = legacy_version
    alpn: str | None = None
    ext_types: list[int] = []
    pos = _extensions_start(body, pos + 3, "ServerHello extensions")
    while pos < end:  # bounded: each pass moves pos forward by at least 4
        if end - pos < 4:
            raise ParseError("ServerHello extensions: truncated extension header")
        ext_type = (body[pos] << 8) | body[pos + 1]
        length = (body[pos + 2] << 8) | body[pos + 3]
        start = pos + 4
        pos = start + length
        if pos > end:
            raise ParseError(f"ServerHello extension {ext_type:#06x} runs past the block")
        ext_types.append(ext_type)
        if ext_type == EXT_SUPPORTED_VERSIONS:
            if length != 2:  # the chosen version, with no list length
                raise ParseError(f"ServerHello supported_versions: {length} bytes, not 2")
            version = (body[start] << 8) | body[start + 1]
        elif ext_type == EXT_ALPN:
            names = _alpn_names(body, start, pos)
            if len(names) != 1:
                raise ParseError(f"ServerHello: ALPN must name one protocol, not {len(names)}")
            alpn = _text(names[0])
    return ServerHello(
        legacy_version=legacy_version,
        version=version,
        cipher_suite=cipher_suite,
        extensions=tuple(ext_types),
        alpn=alpn,
        hello_retry_request=body[2 : 2 + RANDOM_LENGTH] == _HELLO_RETRY_RANDOM,
    )


def parse_certificate_body(body: bytes) -> tuple[bytes, ...]:
    """DER blobs of a TLS <= 1.2 Certificate message body, leaf first."""
    end = len(body)
    if end < 3:
        raise ParseError(f"Certificate: needs 3 bytes, {end} left")
    if 3 + ((body[0] << 16) | (body[1] << 8) | body[2]) != end:
        raise ParseError("Certificate: certificate_list length does not fill the message")
    certs: list[bytes] = []
    pos = 3
    while pos < end:  # bounded: each pass moves pos forward by at least 3
        if end - pos < 3:
            raise ParseError("certificate_list: truncated certificate length")
        start = pos + 3
        pos = start + ((body[pos] << 16) | (body[pos + 1] << 8) | body[pos + 2])
        if pos > end:
            raise ParseError("certificate_list: certificate runs past the list")
        certs.append(body[start:pos])
    return tuple(certs)


class _Progress:
    """Mutable state of one parse call (local to it, never shared).

    A plain class: its ``__init__`` is compiled (a dataclass's generated one is interpreted).
    """

    def __init__(self) -> None:
        self.client_hello: ClientHello | None = None
        self.server_hello: ServerHello | None = None
        self.certificates: tuple[bytes, ...] | None = None
        self.certificate_request = False
        self.done = False
        self.messages = 0
        self.known_client_hello: ClientHello | None = None  # from a parse of a prefix

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


def parse_tls_stream(data: bytes, earlier: TlsStream | None = None) -> TlsStream | None:
    """Parse the in-order bytes of one direction from the start of a TCP stream.

    Returns None until the first handshake message is complete (or the stream ends its
    cleartext part), a TlsStream with what is complete so far otherwise. Raises ParseError
    when the bytes are not TLS.

    ``earlier`` is this function's result for a prefix of ``data`` (the same stream before its
    last segments arrived). Its ClientHello is taken instead of being parsed again: the first
    ClientHello of both is the same bytes. The records are still walked and checked anew.
    """
    total = len(data)
    progress = _Progress()
    if earlier is not None:
        progress.known_client_hello = earlier.client_hello
    # Messages are parsed in place in `data` while they do not straddle records; `carry`
    # holds the start of one that does, and grows until the message is complete.
    carry = bytearray()
    record_version = -1
    pos = 0
    while not progress.done and total - pos >= RECORD_HEADER_LENGTH:
        content_type, version, length = _RECORD_HEADER.unpack_from(data, pos)
        if content_type not in _RECORD_TYPES:
            raise ParseError(f"record at {pos}: content type {content_type} is not TLS")
        if version >> 8 != 3 or version & 0xFF > 4:
            raise ParseError(f"record at {pos}: version {version:#06x} is not TLS")
        if length > MAX_RECORD_LENGTH:
            raise ParseError(f"record at {pos}: length {length} exceeds {MAX_RECORD_LENGTH}")
        if record_version < 0:
            record_version = version
        if length == 0 and content_type != CT_APPLICATION_DATA:
            # RFC 5246 6.2.1 forbids empty handshake, alert and CCS fragments.
            raise ParseError(f"record at {pos}: empty record of content type {content_type}")
        start = pos + RECORD_HEADER_LENGTH
        end = start + length
        if end > total:
            break  # partial trailing record: not usable yet
        pos = end
        if content_type == CT_CHANGE_CIPHER_SPEC and progress.awaiting_server_hello():
            continue  # TLS 1.3 compatibility CCS after a HelloRetryRequest: more cleartext
        if content_type != CT_HANDSHAKE:
            # CCS, alert, application data or heartbeat: what follows is not cleartext handshake.
            progress.done = True
            break
        if carry:
            carry += data[start:end]
            used = _parse_messages(carry, 0, len(carry), record_version, progress)
            if used:
                del carry[:used]
        else:
            used = _parse_messages(data, start, end, record_version, progress)
            if used < end:
                carry += data[used:end]
    return progress.result()


def _parse_messages(
    buffer: bytes | bytearray, pos: int, end: int, record_version: int, out: _Progress
) -> int:
    """Parse every complete handshake message in buffer[pos:end]; return where parsing stopped."""
    while not out.done and end - pos >= HANDSHAKE_HEADER_LENGTH:
        msg_type = buffer[pos]
        length = (buffer[pos + 1] << 16) | (buffer[pos + 2] << 8) | buffer[pos + 3]
        if msg_type not in _KNOWN_HANDSHAKE_TYPES:
            raise ParseError(f"handshake type {msg_type} is not TLS")
        if out.messages == 0:
            if msg_type not in _HELLO_TYPES:
                raise ParseError(f"stream starts with handshake type {msg_type}, not a hello")
            if length > MAX_HELLO_BODY:
                raise ParseError(f"hello of {length} bytes exceeds what its fields allow")
        body_start = pos + HANDSHAKE_HEADER_LENGTH
        body_end = body_start + length
        if body_end > end:
            break
        pos = body_end
        out.messages += 1
        _apply_message(msg_type, buffer, body_start, body_end, record_version, out)
    return pos


def _apply_message(
    msg_type: int,
    buffer: bytes | bytearray,
    start: int,
    end: int,
    record_version: int,
    out: _Progress,
) -> None:
    if msg_type == HS_CLIENT_HELLO:
        if out.client_hello is None:
            out.client_hello = out.known_client_hello or parse_client_hello_body(
                bytes(buffer[start:end]), record_version
            )
    elif msg_type == HS_SERVER_HELLO:
        if out.server_hello is None or out.awaiting_server_hello():
            # A HelloRetryRequest is kept until the real ServerHello replaces it.
            hello = out.server_hello = parse_server_hello_body(bytes(buffer[start:end]))
            # TLS 1.3 encrypts everything after the (real) ServerHello.
            version = hello.version
            is_tls13 = version == TLS13 or version >> 8 == TLS13_DRAFT_MAJOR
            out.done = is_tls13 and not hello.hello_retry_request
    elif msg_type == HS_CERTIFICATE:
        if out.certificates is None:
            out.certificates = parse_certificate_body(bytes(buffer[start:end]))
    elif msg_type == HS_CERTIFICATE_REQUEST:
        out.certificate_request = True


picklable(ClientHello, ServerHello, TlsStream)
