"""Certificate summaries: real AnyDesk certificates, built edge cases, and junk input."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.protocols.tls import parse_tls_stream
from sensor.protocols.x509 import (
    CertSummary,
    format_serial,
    format_time,
    summarize_certificate,
)
from tests.protocols.tlsbuild import make_certificate, stream_by_ports, tcp_streams


def chain(sport: int, dport: int) -> tuple[bytes, ...]:
    stream = parse_tls_stream(stream_by_ports(ANYDESK, sport, dport))
    assert stream is not None
    return stream.certificates


ANYDESK = tcp_streams("anydesk-2022-ndpi.pcapng")
RELAY_LEAF, RELAY_ROOT = chain(443, 48260)
CLIENT_2022 = chain(48260, 443)[0]
CLIENT_2018 = chain(52039, 7070)[0]
REAL_DERS = [RELAY_LEAF, RELAY_ROOT, CLIENT_2022, CLIENT_2018]


def patch(der: bytes, old: bytes, new: bytes) -> bytes:
    """Replace every occurrence (a self-signed certificate repeats its name as issuer)."""
    assert old in der, old
    return der.replace(old, new)


def name(*attributes: tuple[ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


# --- real certificates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("der", "expected"),
    [
        (
            RELAY_LEAF,
            CertSummary(
                subject="C=DE, O=philandro Software GmbH, CN=AnyNet Relay",
                issuer="CN=AnyNet Root CA, O=philandro Software GmbH, C=DE",
                serial="00:F1:88:30:76:74:53:24:93",
                not_before="2018-11-18T02:14:23Z",
                not_after="2028-11-15T02:14:23Z",
                # protocols.md §2.3: SHA-1 9E:08:D2:58:A9:02:CD:4F:...
                sha1="9e:08:d2:58:a9:02:cd:4f:e2:4a:26:b8:48:5c:43:0b:81:29:99:e3",
                sha256="f8321c8cf5067790b114bf3fa8f1415de595fd2f73bc3443c78af01d3af8b40c",
                error=None,
            ),
        ),
        (
            RELAY_ROOT,
            CertSummary(
                subject="CN=AnyNet Root CA, O=philandro Software GmbH, C=DE",
                issuer="CN=AnyNet Root CA, O=philandro Software GmbH, C=DE",
                serial="00:87:FB:0D:0C:B7:B1:8B:E8",
                not_before="2014-04-11T02:37:55Z",
                not_after="2024-04-08T02:37:55Z",
                sha1="18:42:fd:a1:39:29:33:47:44:65:bc:a2:d6:73:a8:c5:c9:35:9a:f3",
                sha256="38791f93ce95ab60f05a6b46c377ca85b2eb8f8ec7be0f7190223b435040c6eb",
                error=None,
            ),
        ),
        (
            CLIENT_2022,
            CertSummary(
                subject="CN=AnyDesk Client",
                issuer="CN=AnyDesk Client",
                serial="01",
                not_before="2022-09-13T17:24:01Z",
                not_after="2072-08-31T17:24:01Z",  # GeneralizedTime past 2049
                sha1="a2:01:6c:ce:3c:6a:c2:c6:a5:58:45:24:04:9a:98:f2:54:c2:14:88",
                sha256="f441a000a570c9283d039bb93bbfe7f351425bc2224b63cbe315ea98584a54bd",
                error=None,
            ),
        ),
    ],
    ids=["relay-leaf", "relay-root", "anydesk-client"],
)
def test_real_anydesk_certificates(der: bytes, expected: CertSummary) -> None:
    assert summarize_certificate(der) == expected


def test_client_certificates_differ_per_installation() -> None:
    first, second = summarize_certificate(CLIENT_2022), summarize_certificate(CLIENT_2018)
    assert first.subject == second.subject == "CN=AnyDesk Client"
    assert first.sha1 != second.sha1


# --- built certificates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        (name((NameOID.COMMON_NAME, "host.example")), "CN=host.example"),
        (
            name(
                (NameOID.COUNTRY_NAME, "US"),
                (NameOID.STATE_OR_PROVINCE_NAME, "Massachusetts"),
                (NameOID.LOCALITY_NAME, "Boston"),
                (NameOID.ORGANIZATION_NAME, "Example, Inc."),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "IT"),
                (NameOID.COMMON_NAME, "*.example.com"),
            ),
            "C=US, ST=Massachusetts, L=Boston, O=Example, Inc., OU=IT, CN=*.example.com",
        ),
        (
            name(
                (NameOID.DOMAIN_COMPONENT, "com"),
                (NameOID.DOMAIN_COMPONENT, "example"),
                (NameOID.USER_ID, "jdoe"),
                (NameOID.EMAIL_ADDRESS, "jdoe@example.com"),
                (NameOID.SERIAL_NUMBER, "42"),
            ),
            "DC=com, DC=example, UID=jdoe, emailAddress=jdoe@example.com, serialNumber=42",
        ),
        (name((ObjectIdentifier("1.2.3.4.5"), "x")), "1.2.3.4.5=x"),
        (
            x509.Name(
                [
                    x509.RelativeDistinguishedName(
                        [
                            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "b"),
                            x509.NameAttribute(NameOID.COMMON_NAME, "a"),
                        ]
                    )
                ]
            ),
            "CN=a+OU=b",
        ),
        (name((NameOID.COMMON_NAME, "evil\x1b[2J\x07\x9b\x7f")), "CN=evil\\x1b[2J\\x07\\x9b\\x7f"),
        (name((NameOID.COMMON_NAME, "M\u00fcnchen \u2603")), "CN=M\u00fcnchen \u2603"),
        (x509.Name([]), ""),
    ],
    ids=[
        "cn",
        "ordered-rdns",
        "other-keys",
        "unknown-oid",
        "multi-valued",
        "controls",
        "utf8",
        "empty",
    ],
)
def test_name_formatting(subject: x509.Name, text: str) -> None:
    summary = summarize_certificate(make_certificate(subject))
    assert summary.subject == text
    assert summary.issuer == text
    assert summary.error is None


@pytest.mark.parametrize(
    ("serial", "text"),
    [
        (1, "01"),
        (0x7F, "7F"),
        (0x80, "00:80"),
        (0xFF00, "00:FF:00"),
        (0x0100, "01:00"),
        (2**159 - 1, "7F" + ":FF" * 19),
    ],
)
def test_serial_of_built_certificate(serial: int, text: str) -> None:
    assert summarize_certificate(make_certificate(serial=serial)).serial == text


@pytest.mark.parametrize(
    ("serial", "text"),
    [
        (0, "00"),
        (-1, "FF"),
        (-128, "80"),
        (-129, "FF:7F"),
        (0xF188307674532493, "00:F1:88:30:76:74:53:24:93"),
    ],
)
def test_format_serial(serial: int, text: str) -> None:
    assert format_serial(serial) == text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (dt.datetime(1950, 1, 1, tzinfo=dt.UTC), "1950-01-01T00:00:00Z"),
        (dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC), "2049-12-31T23:59:59Z"),
        (dt.datetime(2050, 1, 1, tzinfo=dt.UTC), "2050-01-01T00:00:00Z"),
        (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), "9999-12-31T23:59:59Z"),
    ],
)
def test_validity_times(moment: dt.datetime, text: str) -> None:
    later = moment + dt.timedelta(seconds=1) if moment.year < 9999 else moment
    summary = summarize_certificate(make_certificate(not_before=moment, not_after=later))
    assert summary.not_before == text


def test_format_time_pads_years_and_converts_to_utc() -> None:
    assert format_time(dt.datetime(999, 2, 3, 4, 5, 6, tzinfo=dt.UTC)) == "0999-02-03T04:05:06Z"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert format_time(dt.datetime(2024, 1, 1, 1, 0, 0, tzinfo=plus_two)) == "2023-12-31T23:00:00Z"


# --- defective certificates --------------------------------------------------------------------

CN_ABC = make_certificate(name((NameOID.COMMON_NAME, "\x00AB")))
DEU = make_certificate(name((NameOID.COMMON_NAME, "DEU")))
SERIAL_7F = make_certificate(serial=0x7F0000000001)


def test_negative_serial_is_reported_as_a_defect() -> None:
    der = patch(SERIAL_7F, b"\x02\x06\x7f\x00\x00\x00\x00\x01", b"\x02\x06\x80\x00\x00\x00\x00\x01")
    summary = summarize_certificate(der)
    assert summary.error is None
    assert summary.serial == "80:00:00:00:00:01"
    assert any("serial number" in defect for defect in summary.defects)


def test_three_letter_country_is_reported_as_a_defect() -> None:
    # Turn the CN attribute's OID (2.5.4.3) into countryName (2.5.4.6): "C=DEU".
    der = patch(DEU, b"\x06\x03\x55\x04\x03\x0c\x03DEU", b"\x06\x03\x55\x04\x06\x0c\x03DEU")
    summary = summarize_certificate(der)
    assert summary.error is None
    assert summary.subject == "C=DEU"
    assert summary.defects
    assert all("length" in defect for defect in summary.defects)


def test_bit_string_unique_identifier_prints_as_hex() -> None:
    # A UTF8String "\0AB" retagged BIT STRING under OID 2.5.4.45. cryptography returns the
    # BIT STRING content as bytes, the unused-bits count (0) first.
    der = make_certificate(name((NameOID.X500_UNIQUE_IDENTIFIER, "\x00AB")))
    der = patch(der, b"\x06\x03\x55\x04\x2d\x0c\x03\x00AB", b"\x06\x03\x55\x04\x2d\x03\x03\x00AB")
    assert summarize_certificate(der).subject == "x500UniqueIdentifier=#004142"


@pytest.mark.parametrize(
    ("der", "error_prefix"),
    [
        # A BIT STRING under commonName: cryptography raises TypeError while decoding the Name.
        (
            patch(
                CN_ABC, b"\x06\x03\x55\x04\x03\x0c\x03\x00AB", b"\x06\x03\x55\x04\x03\x03\x03\x00AB"
            ),
            "TypeError: ",
        ),
        # Version 7 (the field holds version - 1).
        (patch(DEU, b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x07"), "InvalidVersion: "),
        (patch(DEU, b"\x0c\x03DEU", b"\x0c\x03\xff\xfe\xfd"), "ValueError: "),  # bad UTF-8
        (b"", "ValueError: "),
        (b"\x30\x03\x02\x01\x01", "ValueError: "),
        (b"-----BEGIN CERTIFICATE-----\n", "ValueError: "),
    ],
    ids=["bitstring-cn", "bad-version", "bad-utf8", "empty", "not-a-cert", "pem-header"],
)
def test_unparseable_certificates_keep_hashes(der: bytes, error_prefix: str) -> None:
    summary = summarize_certificate(der)
    assert summary.error is not None
    assert summary.error.startswith(error_prefix)
    assert (summary.subject, summary.issuer, summary.serial) == (None, None, None)
    assert (summary.not_before, summary.not_after) == (None, None)
    assert summary.sha256 == hashlib.sha256(der).hexdigest()
    assert summary.sha1.replace(":", "") == hashlib.sha1(der).hexdigest()


# --- properties -------------------------------------------------------------------------------


def check_never_raises(der: bytes) -> CertSummary:
    summary = summarize_certificate(der)
    assert summary.sha256 == hashlib.sha256(der).hexdigest()
    assert summary.sha1.replace(":", "") == hashlib.sha1(der).hexdigest()
    if summary.error is None:
        assert isinstance(summary.subject, str)
        assert isinstance(summary.not_after, str)
    else:
        assert summary.subject is None
    for text in (summary.subject, summary.issuer, summary.error, *summary.defects):
        assert text is None or not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
    return summary


@pytest.mark.parametrize("index", range(len(REAL_DERS)))
def test_every_truncation_of_real_der(index: int) -> None:
    der = REAL_DERS[index]
    assert check_never_raises(der).error is None
    for end in range(len(der)):
        assert check_never_raises(der[:end]).error is not None


@settings(max_examples=500)
@given(st.binary(max_size=1500))
def test_random_bytes(der: bytes) -> None:
    check_never_raises(der)


@settings(max_examples=500)
@given(
    st.sampled_from(REAL_DERS),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_byte_changes_of_real_der(der: bytes, changes: list[tuple[int, int]]) -> None:
    data = bytearray(der)
    for position, value in changes:
        data[position % len(data)] = value
    check_never_raises(bytes(data))
