"""AnyDesk: the LAN discovery datagram, and what a matched flow tells about the endpoint.

Discovery layout (protocols.md §2.5, big-endian): magic 3E D1, type 01, AnyDesk ID (u32),
4 zero bytes, 02, OS code, then length-prefixed (u32) hostname and user name.
"""

from __future__ import annotations

from typing import Final

from sensor.model import FlowRecord
from sensor.signatures.index import Decoded

DISCOVERY_MAGIC: Final = b"\x3e\xd1"
MAX_NAME: Final = 256


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def decode_discovery(payload: bytes) -> Decoded | None:
    """ID, hostname and user of one discovery datagram; None if it is not one."""
    if len(payload) < 21 or payload[:2] != DISCOVERY_MAGIC or payload[2] != 0x01:
        return None
    anydesk_id = int.from_bytes(payload[3:7], "big")
    if payload[7:11] != b"\x00\x00\x00\x00" or payload[11] != 0x02:
        return None
    host_len = int.from_bytes(payload[13:17], "big")
    if host_len > MAX_NAME or 17 + host_len + 4 > len(payload):
        return None
    host = payload[17 : 17 + host_len]
    pos = 17 + host_len
    user_len = int.from_bytes(payload[pos : pos + 4], "big")
    if user_len > MAX_NAME or pos + 4 + user_len > len(payload):
        return None
    user = payload[pos + 4 : pos + 4 + user_len]
    attrs = (
        ("anydesk_id", str(anydesk_id)),
        ("hostname", _text(host)),
        ("user", _text(user)),
        ("os_code", str(payload[12])),
    )
    return Decoded(attributes=attrs, instance=str(anydesk_id))


def discovery_decoder(record: FlowRecord) -> Decoded | None:
    return decode_discovery(record.client_head)


def enrich(record: FlowRecord) -> Decoded:
    """Version and OS from the ALPN, and the per-installation client certificate."""
    attrs: list[tuple[str, str]] = []
    instance = None
    tls = record.tls
    if tls is not None:
        for alpn in tls.alpn_offered:
            parts = alpn.split("/")
            if len(parts) >= 3 and parts[0] == "anydesk":
                attrs += [("client_version", parts[1]), ("os", parts[2])]
                break
        for cert in tls.client_certificates:
            if cert.subject and "AnyDesk Client" in cert.subject:
                attrs.append(("client_cert_sha1", cert.sha1))
                instance = "cert:" + cert.sha1.replace(":", "")[:16]
                break
        if record.dest_port == 7070:
            for cert in tls.server_certificates:
                if cert.subject and "AnyDesk Client" in cert.subject:
                    attrs.append(("server_cert_sha1", cert.sha1))
                    break
    return Decoded(attributes=tuple(attrs), instance=instance)
