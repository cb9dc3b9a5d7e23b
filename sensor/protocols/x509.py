"""Summaries of X.509 certificates seen in cleartext TLS handshakes (EVE-like strings)."""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from sensor.frozen import picklable

# Short attribute names as OpenSSL and Suricata print them; other OIDs print dotted.
_ATTRIBUTE_NAMES: Final = MappingProxyType(
    {
        NameOID.COMMON_NAME: "CN",
        NameOID.COUNTRY_NAME: "C",
        NameOID.LOCALITY_NAME: "L",
        NameOID.STATE_OR_PROVINCE_NAME: "ST",
        NameOID.STREET_ADDRESS: "street",
        NameOID.ORGANIZATION_NAME: "O",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
        NameOID.SERIAL_NUMBER: "serialNumber",
        NameOID.SURNAME: "SN",
        NameOID.GIVEN_NAME: "GN",
        NameOID.TITLE: "title",
        NameOID.INITIALS: "initials",
        NameOID.PSEUDONYM: "pseudonym",
        NameOID.GENERATION_QUALIFIER: "generationQualifier",
        NameOID.DN_QUALIFIER: "dnQualifier",
        NameOID.X500_UNIQUE_IDENTIFIER: "x500UniqueIdentifier",
        NameOID.USER_ID: "UID",
        NameOID.DOMAIN_COMPONENT: "DC",
        NameOID.EMAIL_ADDRESS: "emailAddress",
        NameOID.BUSINESS_CATEGORY: "businessCategory",
        NameOID.POSTAL_ADDRESS: "postalAddress",
        NameOID.POSTAL_CODE: "postalCode",
        NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
        NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
        NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
        NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    }
)


@dataclass(frozen=True, slots=True)
class CertSummary:
    subject: str | None  # RDNs in DER order, "C=DE, O=philandro Software GmbH, CN=AnyNet Relay"
    issuer: str | None
    serial: str | None  # uppercase hex bytes of the DER INTEGER, ":"-separated, like EVE
    not_before: str | None  # ISO 8601 UTC, "2018-11-18T13:38:31Z"
    not_after: str | None
    sha1: str  # lowercase hex of the DER, ":"-separated, like EVE's tls.fingerprint
    sha256: str  # lowercase hex, no separators
    error: str | None  # why subject etc. are None (the DER could not be parsed)
    defects: tuple[str, ...] = ()  # what the parser found non-conformant but accepted


@dataclass(frozen=True, slots=True)
class _Fields:
    subject: x509.Name
    issuer: x509.Name
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime


def summarize_certificate(der: bytes) -> CertSummary:
    """Summarize one DER certificate. Never raises: bad DER gives ``error`` and hashes only."""
    sha1 = hashlib.sha1(der).hexdigest()
    sha1_text = ":".join(sha1[i : i + 2] for i in range(0, len(sha1), 2))
    sha256 = hashlib.sha256(der).hexdigest()
    # cryptography reports lesser defects (negative serial, over-long country name) as
    # warnings; record them instead of letting them reach stderr.
    fields: _Fields | None = None
    error: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fields = _read(der)
        except (ValueError, TypeError, x509.InvalidVersion) as exc:
            error = _escape(f"{type(exc).__name__}: {exc}")
    notes = tuple(_escape(str(w.message)) for w in caught)
    if fields is None:
        return CertSummary(None, None, None, None, None, sha1_text, sha256, error, notes)
    return CertSummary(
        subject=format_name(fields.subject),
        issuer=format_name(fields.issuer),
        serial=format_serial(fields.serial),
        not_before=format_time(fields.not_before),
        not_after=format_time(fields.not_after),
        sha1=sha1_text,
        sha256=sha256,
        error=None,
        defects=notes,
    )


def _read(der: bytes) -> _Fields:
    """Every cryptography call that can fail on bad input, in one place.

    Observed failures: ValueError (ASN.1 errors, bad strings, bad times), InvalidVersion,
    and TypeError when a Name holds a BIT STRING under an OID other than x500UniqueIdentifier
    (Name values are decoded lazily, on first access).
    """
    cert = x509.load_der_x509_certificate(der)
    return _Fields(
        subject=cert.subject,
        issuer=cert.issuer,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def format_name(name: x509.Name) -> str:
    """RDNs in DER order joined by ", "; attributes of one multi-valued RDN joined by "+"."""
    return ", ".join("+".join(_format_attribute(attr) for attr in rdn) for rdn in name.rdns)


def _format_attribute(attr: x509.NameAttribute[str | bytes]) -> str:
    key = _ATTRIBUTE_NAMES.get(attr.oid, attr.oid.dotted_string)
    value = attr.value
    text = "#" + value.hex() if isinstance(value, bytes) else _escape(value)
    return f"{key}={text}"


def format_serial(serial: int) -> str:
    """The DER INTEGER content bytes (two's complement, minimal) as "00:F1:88:..."."""
    magnitude = serial if serial >= 0 else ~serial
    raw = serial.to_bytes((magnitude.bit_length() + 8) // 8, "big", signed=True)
    return ":".join(f"{byte:02X}" for byte in raw)


def format_time(moment: dt.datetime) -> str:
    # Formatted by hand: strftime("%Y") does not zero-pad years below 1000 on glibc.
    utc = moment.astimezone(dt.UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    )


def _escape(text: str) -> str:
    """Escape C0, DEL and C1 control characters so text cannot drive a terminal."""
    return "".join(
        f"\\x{ord(ch):02x}" if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F else ch for ch in text
    )


picklable(CertSummary, _Fields)
