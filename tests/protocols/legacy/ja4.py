"""JA4 TLS client fingerprint (the BSD-3-Clause part of FoxIO's JA4+ suite).

Reference copy of ``sensor/protocols/ja4.py`` as it was before that module was rewritten
for speed (only this paragraph and imports of sibling reference modules differ).
``tests/protocols/test_equivalence.py`` checks that the rewritten parser gives the same
result (or the same ParseError) on every input.

Layout: ``{t|q|d}{version}{d|i}{ciphers:02}{extensions:02}{alpn}_{cipher hash}_{extension hash}``.
Spec: FoxIO-LLC/ja4 ``technical_details/JA4.md``. GREASE values are ignored everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

EXT_SERVER_NAME = 0x0000
EXT_ALPN = 0x0010

_EMPTY_HASH = "000000000000"
_VERSION_CODES = (
    (0x0304, "13"),
    (0x0303, "12"),
    (0x0302, "11"),
    (0x0301, "10"),
    (0x0300, "s3"),
    (0x0002, "s2"),
    (0xFEFF, "d1"),
    (0xFEFD, "d2"),
    (0xFEFC, "d3"),
)
_TRANSPORTS = frozenset({"t", "q", "d"})


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
    ciphers = [c for c in hello.cipher_suites if not is_grease(c)]
    extensions = [e for e in hello.extensions if not is_grease(e)]
    sigalgs = [s for s in hello.signature_algorithms if not is_grease(s)]
    sni = "d" if EXT_SERVER_NAME in extensions else "i"
    first_alpn = hello.alpn_raw[0] if hello.alpn_raw else b""
    part_a = (
        f"{transport}{_version_code(hello)}{sni}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn_chars(first_alpn)}"
    )
    cipher_hash = _hash12(",".join(f"{c:04x}" for c in sorted(ciphers)))
    # SNI and ALPN are already in part a; dropping them keeps part c stable per client.
    hashed_exts = sorted(e for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    ext_text = ",".join(f"{e:04x}" for e in hashed_exts)
    if sigalgs:
        ext_text += "_" + ",".join(f"{s:04x}" for s in sigalgs)
    ext_hash = _hash12(ext_text) if hashed_exts else _EMPTY_HASH
    return f"{part_a}_{cipher_hash}_{ext_hash}"


def _version_code(hello: Ja4Input) -> str:
    offered = [v for v in hello.versions if not is_grease(v)]
    version = max(offered) if offered else hello.legacy_version
    for value, code in _VERSION_CODES:
        if value == version:
            return code
    return "00"


def alpn_chars(first: bytes) -> str:
    """First and last character of the first ALPN value, per the JA4 ALPN rule."""
    if not first:
        return "00"
    if _is_alnum(first[0]) and _is_alnum(first[-1]):
        return chr(first[0]) + chr(first[-1])
    # Non-alphanumeric ends: first and last hex digit of the whole value instead.
    hex_text = first.hex()
    return hex_text[0] + hex_text[-1]


def _is_alnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _hash12(text: str) -> str:
    if not text:
        return _EMPTY_HASH
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]
