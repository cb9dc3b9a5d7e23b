"""ScreenConnect: relay handshake variants, and the instance identity of web traffic.

Relay handshakes (protocols.md §1.3): ``87 ?? 10 00`` + 12 zero bytes, where the M3 variant
(``87 12``) also has 0x01 at offset 23, a length L at 24 and 0x01 after L bytes; and the older
token ``73 10`` + 16 zero bytes within the first bytes, followed by a version tag (4 or 6) and
the relay host ending in 0x01 or 0x02. The installer URL's ``k=`` parameter is the instance's
RSA public key: its SHA-256 identifies the instance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Final
from urllib.parse import parse_qs

from sensor.model import FlowRecord
from sensor.signatures.index import Decoded

LEGACY_TOKEN: Final = b"\x73\x10" + b"\x00" * 16
LEGACY_MAX_OFFSET: Final = 10
MAX_HOST: Final = 255
VERSION_RE: Final = re.compile(r"ScreenConnect/([0-9][0-9A-Za-z.\-]*)")
RELAY_RE: Final = re.compile(r"^instance-[a-z0-9]+-relay\.screenconnect\.com$")
TENANT_RE: Final = re.compile(r"^([a-z0-9-]+)\.screenconnect\.com$")


def relay_m3(record: FlowRecord) -> Decoded | None:
    p = record.client_head
    if len(p) < 26 or p[23] != 0x01:
        return None
    after = 25 + p[24]
    if after >= len(p) or p[after] != 0x01:
        return None
    return Decoded()


def relay_legacy(record: FlowRecord) -> Decoded | None:
    p = record.client_head
    at = p.find(LEGACY_TOKEN, 0, LEGACY_MAX_OFFSET + len(LEGACY_TOKEN))
    if at < 0:
        return None
    pos = at + len(LEGACY_TOKEN)
    if pos >= len(p) or p[pos] not in (4, 6):
        return Decoded()
    end = pos + 1
    while end < len(p) and end - pos <= MAX_HOST and p[end] not in (1, 2):
        end += 1
    host = p[pos + 1 : end].decode("ascii", "backslashreplace")
    if end >= len(p) or not host:
        return Decoded()
    return Decoded(attributes=(("relay_host", host),), instance=host.lower())


def key_hash(k: str) -> str:
    """SHA-256 of the decoded public key blob (of the text itself if it is not base64)."""
    try:
        blob = base64.b64decode(k, validate=False)
    except (binascii.Error, ValueError):
        blob = k.encode()
    return hashlib.sha256(blob or k.encode()).hexdigest()


def enrich(record: FlowRecord) -> Decoded:
    attrs: list[tuple[str, str]] = []
    instance = None
    http = record.http
    if http is not None:
        if http.response and http.response.server:
            m = VERSION_RE.search(http.response.server)
            if m:
                attrs.append(("server_version", m.group(1)))
        for req in http.requests:
            _, _, query = req.target.partition("?")
            params = parse_qs(query, keep_blank_values=True)
            for name, attr in (("h", "relay_host"), ("p", "relay_port"), ("e", "session_type")):
                if params.get(name):
                    attrs.append((attr, params[name][0]))
            if params.get("k"):
                digest = key_hash(params["k"][0])
                attrs.append(("key_sha256", digest))
                instance = "key:" + digest[:16]
            if instance:
                break
    names = []
    if record.tls is not None and record.tls.server_name:
        names.append(record.tls.server_name.lower())
    if record.dns is not None:
        names += [q.name.lower() for q in record.dns.queries]
    for name in names:
        if RELAY_RE.match(name):
            attrs.append(("relay_host", name))
            instance = instance or name
        elif m := TENANT_RE.match(name):
            attrs.append(("tenant", m.group(1)))
            instance = instance or name
    return Decoded(attributes=tuple(dict.fromkeys(attrs)), instance=instance)
