"""JA4 TLS client fingerprint (the BSD-3-Clause part of FoxIO's JA4+ suite).

Layout: ``{t|q|d}{version}{d|i}{ciphers:02}{extensions:02}{alpn}_{cipher hash}_{extension hash}``.
Spec: FoxIO-LLC/ja4 ``technical_details/JA4.md``. GREASE values are ignored everywhere.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from sensor.frozen import picklable

EXT_SERVER_NAME: Final = 0x0000
EXT_ALPN: Final = 0x0010

# RFC 8701: the sixteen GREASE values 0x0A0A, 0x1A1A, ... 0xFAFA.
GREASE_VALUES: Final = frozenset(range(0x0A0A, 0x10000, 0x1010))

_EMPTY_HASH: Final = "000000000000"
_VERSION_CODES: Final = MappingProxyType(
    {
        0x0304: "13",
        0x0303: "12",
        0x0302: "11",
        0x0301: "10",
        0x0300: "s3",
        0x0002: "s2",
        0xFEFF: "d1",
        0xFEFD: "d2",
        0xFEFC: "d3",
    }
)
_TRANSPORTS: Final = frozenset({"t", "q", "d"})
_NOT_HASHED: Final = frozenset({EXT_SERVER_NAME, EXT_ALPN, *GREASE_VALUES})


class Ja4Input(Protocol):
    """The ClientHello fields JA4 reads (``tls.ClientHello`` satisfies it)."""

    @property
    def legacy_version(self) -> int: ...
    @property
    def versions(self) -> Sequence[int]: ...
    @property
    def cipher_suites(self) -> Sequence[int]: ...
    @property
    def extensions(self) -> Sequence[int]: ...
    @property
    def signature_algorithms(self) -> Sequence[int]: ...
    @property
    def alpn_raw(self) -> Sequence[bytes]: ...


@dataclass(frozen=True, slots=True)
class Ja4Fields:
    """A plain carrier of the JA4 inputs, for callers that have no ClientHello object."""

    legacy_version: int
    versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    alpn_raw: tuple[bytes, ...]


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE: 0x?A?A with both bytes equal (0x0A0A, 0x1A1A, ... 0xFAFA)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def ja4(hello: Ja4Input, transport: str = "t") -> str:
    """JA4 of a ClientHello; ``transport`` is "t" (TCP), "q" (QUIC) or "d" (DTLS)."""
    if transport not in _TRANSPORTS:
        raise ValueError(f"transport must be one of t, q, d, not {transport!r}")
    return ja4_of(
        transport,
        hello.legacy_version,
        hello.versions,
        hello.cipher_suites,
        hello.extensions,
        hello.signature_algorithms,
        hello.alpn_raw[0] if hello.alpn_raw else b"",
    )


def ja4_of(
    transport: str,
    legacy_version: int,
    versions: Sequence[int],
    cipher_suites: Sequence[int],
    extensions: Sequence[int],
    signature_algorithms: Sequence[int],
    first_alpn: bytes,
) -> str:
    """JA4 from the fields themselves (``ja4`` without a hello object; no transport check)."""
    grease = GREASE_VALUES
    ciphers = sorted([c for c in cipher_suites if c not in grease])
    # SNI and ALPN are counted in part a but not hashed: that keeps part c stable per client.
    hashed_exts = sorted([e for e in extensions if e not in _NOT_HASHED])
    ext_count = len(hashed_exts) + extensions.count(EXT_SERVER_NAME) + extensions.count(EXT_ALPN)
    sni = "d" if EXT_SERVER_NAME in extensions else "i"
    offered = [v for v in versions if v not in grease]
    version = max(offered) if offered else legacy_version
    if hashed_exts:
        ext_text = _hex_list(hashed_exts)
        sigalgs = [s for s in signature_algorithms if s not in grease]
        if sigalgs:
            ext_text += "_" + _hex_list(sigalgs)
        ext_hash = _hash12(ext_text)
    else:
        ext_hash = _EMPTY_HASH
    return (
        f"{transport}{_VERSION_CODES.get(version, '00')}{sni}"
        f"{min(len(ciphers), 99):02d}{min(ext_count, 99):02d}{alpn_chars(first_alpn)}"
        f"_{_hash12(_hex_list(ciphers))}_{ext_hash}"
    )


def _hex_list(values: list[int]) -> str:
    """Values as comma-separated 4-digit lowercase hex, e.g. "002f,0035"."""
    try:
        return struct.pack(f">{len(values)}H", *values).hex(",", 2)
    except struct.error:  # a value outside u16 (only from a hand-built Ja4Input)
        return ",".join(f"{v:04x}" for v in values)


def alpn_chars(first: bytes) -> str:
    """First and last character of the first ALPN value, per the JA4 ALPN rule."""
    if not first:
        return "00"
    head, tail = first[:1], first[-1:]
    if head.isalnum() and tail.isalnum():  # bytes.isalnum: ASCII letters and digits only
        return (head + tail).decode("ascii")
    # Non-alphanumeric ends: first and last hex digit of the whole value instead.
    hex_text = first.hex()
    return hex_text[0] + hex_text[-1]


def _hash12(text: str) -> str:
    if not text:
        return _EMPTY_HASH
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


picklable(Ja4Fields)
