"""JSON-lines records, with field names taken from Suricata's EVE format where one exists.

Every string that came from the wire was decoded with a replacing error handler, and json.dumps
escapes control characters, so each line is valid JSON whatever bytes were captured.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any, Final

from sensor.model import (
    PROTO_NAMES,
    Alert,
    DnsSummary,
    FlowRecord,
    HttpSummary,
    Session,
    TlsSummary,
)
from sensor.protocols.dns import rrtype_name
from sensor.protocols.x509 import CertSummary
from sensor.timestamps import NS, iso_time

TLS_VERSIONS: Final = {
    0x0300: "SSLv3",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}


def tls_version(v: int | None) -> str | None:
    if v is None:
        return None
    return TLS_VERSIONS.get(v, f"0x{v:04x}")


def flow_json(r: FlowRecord) -> str:
    """The EVE flow event of ``r`` as compact JSON (the text ``json.dumps`` writes for it).

    The part every flow has is written directly: with ``--flows`` a line per flow is most of the
    output, and building a dict for ``json.dumps`` to walk cost three times as much. Strings
    that can come from the wire go through ``json``'s own escaping; the optional sections are
    small dicts for ``json.dumps``.
    """
    quote = encode_basestring_ascii
    start = iso_time(r.start_ns)
    proto = PROTO_NAMES.get(r.proto, str(r.proto))
    orientation = "handshake" if r.syn_seen else "ports"
    parts = [
        f'{{"timestamp":"{start}","event_type":"flow","flow_id":{r.flow_id}'
        f',"src_ip":{quote(r.src_ip)},"src_port":{r.src_port}'
        f',"dest_ip":{quote(r.dest_ip)},"dest_port":{r.dest_port}'
        f',"proto":{quote(proto)},"community_id":{quote(r.community_id)}'
        f',"app_proto":{quote(r.app_proto or "none")}'
        f',"flow":{{"pkts_toserver":{r.pkts_toserver},"pkts_toclient":{r.pkts_toclient}'
        f',"bytes_toserver":{r.bytes_toserver},"bytes_toclient":{r.bytes_toclient}'
        f',"start":"{start}","end":"{iso_time(r.end_ns)}"'
        f',"age":{(r.end_ns - r.start_ns) // NS},"reason":{quote(r.end_reason)}'
        f',"orientation":"{orientation}"}}'
    ]
    if r.proto == 6:
        parts.append(
            f',"tcp":{{"tcp_flags_ts":"{r.tcp_flags_ts:02x}","tcp_flags_tc":"{r.tcp_flags_tc:02x}"}}'
        )
    if r.tls is not None:
        if r.tls.server_name is not None:
            parts.append(f',"server_name":{quote(r.tls.server_name)}')
        parts.append(f',"tls":{dumps(tls_fields(r.tls))}')
    if r.dns is not None:
        parts.append(f',"dns":{dumps(dns_fields(r.dns))}')
    if r.http is not None:
        parts.append(f',"http":{dumps(http_fields(r.http))}')
    parts.append("}")
    return "".join(parts)


def dns_fields(d: DnsSummary) -> dict[str, Any]:
    return {
        "queries": [{"rrname": q.name, "rrtype": rrtype_name(q.rrtype)} for q in d.queries],
        "answers": [
            {"rrname": a.name, "rrtype": rrtype_name(a.rrtype), "ttl": a.ttl, "rdata": a.data}
            for a in d.answers
        ],
        "rcodes": list(d.rcodes),
    }


def tls_fields(t: TlsSummary) -> dict[str, Any]:
    return {
        "sni": t.server_name,
        "version": tls_version(t.version),
        "client_versions": [tls_version(v) for v in t.client_versions],
        "alpn_offered": list(t.alpn_offered),
        "alpn": t.alpn,
        "ja4": t.ja4,
        "cipher_suite": None if t.cipher_suite is None else f"0x{t.cipher_suite:04x}",
        "certificate_requested": t.certificate_requested,
        "client_certificates": [cert_fields(c) for c in t.client_certificates],
        "server_certificates": [cert_fields(c) for c in t.server_certificates],
    }


def cert_fields(c: CertSummary) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subject": c.subject,
        "issuerdn": c.issuer,
        "serial": c.serial,
        "notbefore": c.not_before,
        "notafter": c.not_after,
        "fingerprint": c.sha1,
        "sha256": c.sha256,
    }
    if c.error:
        out["error"] = c.error
    return out


def http_fields(h: HttpSummary) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if h.requests:
        first = h.requests[0]
        out.update(
            hostname=first.host,
            url=first.target,
            http_method=first.method,
            protocol=first.version,
            http_user_agent=first.user_agent,
        )
        if len(h.requests) > 1:
            out["requests"] = [
                {"http_method": q.method, "url": q.target, "hostname": q.host}
                for q in h.requests[1:]
            ]
    if h.response is not None:
        out.update(status=h.response.status, server=h.response.server)
        if h.response.location is not None:
            out["redirect"] = h.response.location
    return out


def session_event(s: Session) -> dict[str, Any]:
    event: dict[str, Any] = {
        "timestamp": iso_time(s.start_ns),
        "event_type": "session",
        "session_id": s.session_id,
        "src_ip": s.src_ip,
        "src_port": s.src_port,
        "dest_ip": s.dest_ip,
        "dest_port": s.dest_port,
        "proto": PROTO_NAMES.get(s.proto, str(s.proto)),
        "community_id": s.community_id,
        "rmm": {
            "tool": s.tool,
            "channel": s.channel,
            "server_name": s.server_name,
            "instance": s.instance,
            "confidence": s.confidence,
            "evidence": [
                {
                    "signature": e.signature,
                    "field": e.field,
                    "value": e.value,
                    "confidence": e.confidence,
                }
                for e in s.evidence
            ],
            "attributes": dict(s.attributes),
            "start": iso_time(s.start_ns),
            "end": iso_time(s.end_ns),
            "pkts_toserver": s.pkts_toserver,
            "pkts_toclient": s.pkts_toclient,
            "bytes_toserver": s.bytes_toserver,
            "bytes_toclient": s.bytes_toclient,
            "flow_ids": list(s.flow_ids),
        },
    }
    if s.verdict:
        event["rmm"]["verdict"] = s.verdict
        event["rmm"]["verdict_reason"] = s.verdict_reason
    if s.severity:
        event["rmm"]["severity"] = s.severity
    return event


def alert_event(a: Alert) -> dict[str, Any]:
    event = session_event(a.session)
    event["timestamp"] = iso_time(a.ts_ns)
    event["event_type"] = "alert"
    event["alert"] = {
        "alert_id": a.alert_id,
        "signature": a.rule,
        "category": "Remote access software",
        "severity": a.severity,
        "message": a.message,
        "repeats": a.repeats,
        "last_seen": iso_time(a.last_ns) if a.last_ns else None,
        "mitre": {
            "technique_id": a.technique,
            "technique_name": "Remote Access Tools",
            "tactic": "Command and Control",
        },
    }
    if a.related is not None:
        event["alert"]["related_session"] = session_event(a.related)["rmm"] | {
            "src_ip": a.related.src_ip,
            "dest_ip": a.related.dest_ip,
            "dest_port": a.related.dest_port,
        }
    return event


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))
