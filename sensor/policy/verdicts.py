"""Verdicts: is a session one of our sanctioned instances, and how bad is it if not?

An entry sanctions a session when its tool matches and every criterion the entry gives holds
(hosts, addresses, ports, clients, instance keys, AnyDesk IDs, client certificates), and it has
not expired at the session's start. ``forbidden_tools`` override entries; ``allowed_tools`` need
none. The reason names the entry or says why none matched, so an analyst can fix the allowlist.
"""

from __future__ import annotations

import dataclasses

from sensor.addresses import in_networks
from sensor.config import PolicySettings, SanctionedEntry
from sensor.model import Session
from sensor.signatures.schema import CONFIDENCE_RANK
from sensor.timestamps import utc_date

SEVERITY_BY_CHANNEL = {"relay": "high", "direct": "high", "web": "medium", "download": "medium",
                       "dns": "medium", "discovery": "low"}  # fmt: skip
SEVERITY_ORDER = ("low", "medium", "high", "critical")
HOST_FIELDS = frozenset(("dns.query", "tls.sni", "http.host", "dns-attribution"))


class Policy:
    def __init__(self, settings: PolicySettings | None = None) -> None:
        self.settings = settings or PolicySettings()

    def judge(self, session: Session) -> Session:
        verdict, reason = self._verdict(session)
        severity = self._severity(session) if verdict == "unsanctioned" else ""
        return dataclasses.replace(
            session, verdict=verdict, verdict_reason=reason, severity=severity
        )

    def alertable(self, session: Session) -> bool:
        """Unsanctioned and confident enough: a port-only (low) session never alerts alone."""
        return (
            session.verdict == "unsanctioned"
            and CONFIDENCE_RANK[session.confidence]
            >= CONFIDENCE_RANK[self.settings.alert_min_confidence]
        )

    def is_internal(self, address: str) -> bool:
        return in_networks(address, self.settings.internal_networks)

    def _verdict(self, s: Session) -> tuple[str, str]:
        p = self.settings
        if s.tool in p.forbidden_tools:
            return "unsanctioned", f"tool {s.tool} is never allowed (policy.forbidden_tools)"
        if s.tool in p.allowed_tools:
            return "sanctioned", f"tool {s.tool} is allowed everywhere (policy.allowed_tools)"
        day = utc_date(s.start_ns)
        expired = []
        tried = 0
        for entry in p.sanctioned:
            if entry.tool != s.tool:
                continue
            tried += 1
            if not _matches(entry, s):
                continue
            if entry.expires is not None and entry.expires < day:
                expired.append(entry)
                continue
            return "sanctioned", f"sanctioned by entry {entry.name!r}"
        if expired:
            e = expired[0]
            return "unsanctioned", f"entry {e.name!r} matches but expired on {e.expires}"
        if not tried:
            return "unsanctioned", f"no sanctioned entry for tool {s.tool}"
        return "unsanctioned", f"none of the {tried} sanctioned {s.tool} entries matches"

    def _severity(self, s: Session) -> str:
        severity = SEVERITY_BY_CHANNEL.get(s.channel, "medium")
        if s.confidence == "low":
            severity = "low"
        elif s.confidence == "medium" and severity != "low":
            severity = SEVERITY_ORDER[SEVERITY_ORDER.index(severity) - 1]
        if s.channel == "direct" and not self.is_internal(s.src_ip):
            severity = "critical"  # someone outside is driving one of our hosts
        elif s.tool in self.settings.forbidden_tools and severity in ("low", "medium"):
            severity = "high"
        return severity


def session_hosts(s: Session) -> set[str]:
    """Every host name the session was seen under, lower-case, without a port."""
    names = {s.server_name or "", s.instance or ""}
    names.update(v for k, v in s.attributes if k in ("relay_host", "resolved_name"))
    names.update(e.value for e in s.evidence if e.field in HOST_FIELDS)
    return {_bare_host(n) for n in names if n}


def _bare_host(name: str) -> str:
    """Lower-case, without port or trailing dot: ``Host.Example.:8040`` -> ``host.example``."""
    name = name.lower()
    if name.count(":") == 1:  # an IPv6 address has several colons and no port here
        name = name.rsplit(":", 1)[0]
    return name.rstrip(".")


def host_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


def _matches(entry: SanctionedEntry, s: Session) -> bool:
    attrs = dict(s.attributes)
    if entry.hosts:
        hosts = session_hosts(s)
        if not any(host_matches(p, h) for p in entry.hosts for h in hosts):
            return False
    if entry.addresses and not in_networks(s.dest_ip, entry.addresses):
        return False
    if entry.ports and s.dest_port not in entry.ports:
        return False
    if entry.clients and not in_networks(s.src_ip, entry.clients):
        return False
    if entry.instance_keys:
        key = attrs.get("key_sha256", "")
        if not key or not any(key.startswith(k) for k in entry.instance_keys):
            return False
    if entry.anydesk_ids and attrs.get("anydesk_id") not in entry.anydesk_ids:
        return False
    if entry.client_certs:
        # Only the side that connected: a listener's own certificate must not sanction
        # whoever reaches it (an inbound direct connection from the internet).
        cert = attrs.get("client_cert_sha1", "").replace(":", "")
        if not cert or not any(cert.startswith(k) for k in entry.client_certs):
            return False
    return True
