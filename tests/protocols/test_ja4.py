"""JA4 client fingerprint: the FoxIO spec's worked examples and its edge rules."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.protocols.ja4 import Ja4Fields, alpn_chars, is_grease, ja4
from sensor.protocols.tls import parse_tls_stream
from tests.protocols.tlsbuild import (
    CHROME_CIPHERS,
    CHROME_SIGALGS,
    alpn_ext,
    client_hello_body,
    ext,
    handshake,
    record,
    sni_ext,
    u16_list_ext,
    versions_ext,
)

GREASE = tuple(0x0A0A + 0x1010 * i for i in range(16))
# technical_details/JA4.md: the example hello's extensions in wire order.
SPEC_EXTENSIONS = (
    0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D,
    0x0005, 0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015,
)  # fmt: skip
SPEC = Ja4Fields(
    legacy_version=0x0303,
    versions=(0x0304, 0x0303),
    cipher_suites=CHROME_CIPHERS,
    extensions=SPEC_EXTENSIONS,
    signature_algorithms=CHROME_SIGALGS,
    alpn_raw=(b"h2", b"http/1.1"),
)
SPEC_JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"


def fields(**changes: object) -> Ja4Fields:
    return dataclasses.replace(SPEC, **changes)  # type: ignore[arg-type]


def test_spec_example() -> None:
    assert ja4(SPEC) == SPEC_JA4


def test_spec_intermediate_strings() -> None:
    """The hashed strings are exactly the spec's (its digests, recomputed here)."""
    ciphers = "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
    exts = "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
    sigs = "0403,0804,0401,0503,0805,0501,0806,0601"
    assert hashlib.sha256(ciphers.encode()).hexdigest()[:12] == "8daaf6152771"
    assert hashlib.sha256(f"{exts}_{sigs}".encode()).hexdigest()[:12] == "e5627efa2ab1"


def test_no_signature_algorithms_drops_the_underscore() -> None:
    # JA4.md: "0005,...,ff01 = 6d807ffa2a79" when the hello has no signature algorithms.
    assert ja4(fields(signature_algorithms=())).endswith("_6d807ffa2a79")


@pytest.mark.parametrize("grease", GREASE)
def test_grease_is_ignored_everywhere(grease: int) -> None:
    greased = fields(
        versions=(grease, *SPEC.versions),
        cipher_suites=(grease, *SPEC.cipher_suites, grease),
        extensions=(grease, *SPEC.extensions, grease),
        signature_algorithms=(grease, *SPEC.signature_algorithms),
    )
    assert ja4(greased) == SPEC_JA4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(g, True) for g in GREASE],
        (0x0A0B, False),
        (0x1A2A, False),
        (0x0B0B, False),
        (0x0000, False),
        (0xFAFB, False),
        (0x0304, False),
    ],
)
def test_is_grease(value: int, expected: bool) -> None:
    assert is_grease(value) is expected


@pytest.mark.parametrize(
    ("legacy", "versions", "code"),
    [
        (0x0303, (0x0304, 0x0303), "13"),
        (0x0303, (0x0303, 0x0304), "13"),  # highest, not first
        (0x0303, (0x2A2A,), "12"),  # only GREASE: legacy version
        (0x0303, (), "12"),
        (0x0302, (), "11"),
        (0x0301, (), "10"),
        (0x0300, (), "s3"),
        (0x0002, (), "s2"),
        (0xFEFD, (), "d2"),
        (0x0303, (0x7F1C,), "00"),  # TLS 1.3 draft 28
        (0x0305, (), "00"),
        (0x0000, (), "00"),
    ],
)
def test_version(legacy: int, versions: tuple[int, ...], code: str) -> None:
    assert ja4(fields(legacy_version=legacy, versions=versions))[1:3] == code


@pytest.mark.parametrize(
    ("extensions", "marker"),
    [(SPEC_EXTENSIONS, "d"), (tuple(e for e in SPEC_EXTENSIONS if e != 0), "i")],
)
def test_sni_marker_follows_the_extension(extensions: tuple[int, ...], marker: str) -> None:
    result = ja4(fields(extensions=extensions))
    assert result[3] == marker
    assert result.split("_")[2] == "e5627efa2ab1"  # SNI is not part of the hash


@pytest.mark.parametrize(
    ("count", "text"), [(0, "00"), (1, "01"), (9, "09"), (10, "10"), (99, "99"), (150, "99")]
)
def test_counts_are_two_digits_capped_at_99(count: int, text: str) -> None:
    many = tuple(range(1, count + 1))
    result = ja4(fields(cipher_suites=many, extensions=(0x000D, *many[1:])))
    assert result[4:6] == text
    assert result[6:8] == (text if count else "01")


@pytest.mark.parametrize(
    ("first", "chars"),
    [
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"h3", "h3"),
        (b"anydesk/6.2.0/linux", "ax"),
        (b"a", "aa"),  # one character is both first and last
        (b"", "00"),
        # JA4.md hex rule for non-alphanumeric first or last bytes:
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
        (b"/x", "28"),
        (b"x/", "7f"),
        (b"Z9", "Z9"),
    ],
)
def test_alpn_chars(first: bytes, chars: str) -> None:
    assert alpn_chars(first) == chars
    assert ja4(fields(alpn_raw=(first, b"h2")))[8:10] == chars


def test_no_alpn_is_00() -> None:
    assert ja4(fields(alpn_raw=()))[8:10] == "00"


def test_only_the_first_alpn_counts() -> None:
    assert ja4(fields(alpn_raw=(b"http/1.1", b"h2")))[8:10] == "h1"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"cipher_suites": ()}, "t13d0016h2_000000000000_e5627efa2ab1"),
        ({"cipher_suites": GREASE[:3]}, "t13d0016h2_000000000000_e5627efa2ab1"),
        ({"extensions": (0x0000, 0x0010)}, "t13d1502h2_8daaf6152771_000000000000"),
        (
            {"extensions": (), "signature_algorithms": (), "versions": ()},
            "t12i1500h2_8daaf6152771_000000000000",
        ),
    ],
)
def test_empty_lists_hash_to_zeros(changes: dict[str, object], expected: str) -> None:
    assert ja4(fields(**changes)) == expected


@pytest.mark.parametrize(("transport", "prefix"), [("t", "t"), ("q", "q"), ("d", "d")])
def test_transport_prefix(transport: str, prefix: str) -> None:
    assert ja4(SPEC, transport) == prefix + SPEC_JA4[1:]


@pytest.mark.parametrize("transport", ["", "u", "tcp", "T"])
def test_unknown_transport_is_rejected(transport: str) -> None:
    with pytest.raises(ValueError, match="transport"):
        ja4(SPEC, transport)


def test_quic_style_hello_from_parsed_client_hello() -> None:
    """A QUIC Initial carries the same ClientHello; only the first character changes."""
    body = client_hello_body(
        version=0x0303,
        ciphers=(0x1301, 0x1302, 0x1303),
        extensions=[
            sni_ext(b"www.google.com"),
            alpn_ext(b"h3"),
            versions_ext(0x0304),
            u16_list_ext(0x000D, (0x0403, 0x0804, 0x0401)),
            u16_list_ext(0x000A, (0x001D, 0x0017)),
            ext(0x0039, b"\x01\x02\x03"),  # quic_transport_parameters
        ],
    )
    stream = parse_tls_stream(record(22, handshake(1, body), 0x0301))
    assert stream is not None
    hello = stream.client_hello
    assert hello is not None
    assert hello.ja4.startswith("t13d0306h3_")
    assert ja4(hello, "q") == "q" + hello.ja4[1:]


def test_sorting_ciphers_and_extensions_but_not_sigalgs() -> None:
    shuffled = fields(
        cipher_suites=tuple(reversed(CHROME_CIPHERS)), extensions=tuple(reversed(SPEC_EXTENSIONS))
    )
    assert ja4(shuffled) == SPEC_JA4
    reordered_sigs = fields(signature_algorithms=tuple(reversed(CHROME_SIGALGS)))
    assert ja4(reordered_sigs).split("_")[2] != "e5627efa2ab1"


u16s = st.integers(0, 0xFFFF)


@settings(max_examples=300)
@given(
    legacy=u16s,
    versions=st.lists(u16s, max_size=5),
    ciphers=st.lists(u16s, max_size=150),
    exts=st.lists(u16s, max_size=150),
    sigs=st.lists(u16s, max_size=20),
    alpn=st.lists(st.binary(max_size=8), max_size=3),
    transport=st.sampled_from("tqd"),
)
def test_shape_of_any_fingerprint(
    legacy: int,
    versions: list[int],
    ciphers: list[int],
    exts: list[int],
    sigs: list[int],
    alpn: list[bytes],
    transport: str,
) -> None:
    result = ja4(
        Ja4Fields(legacy, tuple(versions), tuple(ciphers), tuple(exts), tuple(sigs), tuple(alpn)),
        transport,
    )
    part_a, part_b, part_c = result.split("_")
    assert len(part_a) == 10
    assert part_a[0] == transport
    assert part_a[3] in "di"
    assert part_a[4:8].isdigit()
    assert int(part_a[4:6]) == min(99, sum(1 for c in ciphers if not is_grease(c)))
    assert len(part_b) == len(part_c) == 12
    assert all(c in "0123456789abcdef" for c in part_b + part_c)
    assert part_a[8:].isascii() and part_a[8:].isalnum()
