"""Turn an ended flow's mutable state into a frozen :class:`FlowRecord` (once per flow)."""

from __future__ import annotations

import socket
from collections import OrderedDict

from sensor.flows.table import Flow, key_ports
from sensor.model import DnsSummary, FlowRecord, HttpSummary, TlsSummary
from sensor.protocols.dns import DnsMessage
from sensor.protocols.http import HttpRequest, HttpResponse
from sensor.protocols.tls import TlsStream
from sensor.protocols.x509 import CertSummary, summarize_certificate


def ip_text(raw: bytes) -> str:
    if len(raw) == 4:
        # What inet_ntop gives, without its call (about half the time, twice per flow).
        return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"
    return socket.inet_ntop(socket.AF_INET6, raw)


class CertCache:
    """Summaries of recently seen certificates: servers send the same chain to every client."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._items: OrderedDict[bytes, CertSummary] = OrderedDict()

    def summary(self, der: bytes) -> CertSummary:
        items = self._items
        hit = items.get(der)
        if hit is not None:
            items.move_to_end(der)
            return hit
        hit = items[der] = summarize_certificate(der)
        if len(items) > self.size:
            items.popitem(last=False)
        return hit


def build_record(flow: Flow, reason: str, certs: CertCache) -> FlowRecord:
    key = flow.key
    half = (len(key) - 4) >> 1
    src, dst = key[:half], key[half : 2 * half]
    sport, dport = key_ports(key)
    c2s, s2c = flow.c2s, flow.s2c
    return FlowRecord(
        flow_id=flow.id,
        proto=flow.proto,
        src_ip=ip_text(src),
        src_port=sport,
        dest_ip=ip_text(dst),
        dest_port=dport,
        start_ns=flow.first,
        end_ns=flow.last,
        pkts_toserver=c2s.pkts,
        pkts_toclient=s2c.pkts,
        bytes_toserver=c2s.bytes,
        bytes_toclient=s2c.bytes,
        tcp_flags_ts=c2s.flags,
        tcp_flags_tc=s2c.flags,
        syn_seen=flow.syn_seen,
        end_reason=reason,
        app_proto=flow.app or ("unknown" if flow.first_speaker else ""),
        first_speaker=flow.first_speaker,
        client_head=flow.heads[0],
        server_head=flow.heads[1],
        client_first_size=flow.first_sizes[0],
        server_first_size=flow.first_sizes[1],
        tls=_tls_summary(flow, certs),
        dns=_dns_summary(flow),
        http=_http_summary(flow),
    )


def _tls_summary(flow: Flow, certs: CertCache) -> TlsSummary | None:
    client, server = flow.tls
    if not isinstance(client, TlsStream) and not isinstance(server, TlsStream):
        return None
    hello = client.client_hello if isinstance(client, TlsStream) else None
    shello = server.server_hello if isinstance(server, TlsStream) else None
    return TlsSummary(
        server_name=hello.server_name if hello else None,
        client_versions=hello.versions if hello else (),
        version=shello.version if shello else None,
        alpn_offered=hello.alpn if hello else (),
        alpn=shello.alpn if shello else None,
        client_hello=hello,
        cipher_suite=shello.cipher_suite if shello else None,
        client_certificates=_certs(client, certs),
        server_certificates=_certs(server, certs),
        certificate_requested=isinstance(server, TlsStream) and server.certificate_request,
    )


def _certs(stream: object, cache: CertCache) -> tuple[CertSummary, ...]:
    if not isinstance(stream, TlsStream):
        return ()
    return tuple(cache.summary(der) for der in stream.certificates)


def _dns_summary(flow: Flow) -> DnsSummary | None:
    if not flow.dns:
        return None  # most flows: nothing to build
    messages = [m for m in flow.dns if isinstance(m, DnsMessage)]
    if not messages:
        return None
    queries = []
    seen: set[tuple[str, int]] = set()  # a question's fields: its own hash is interpreted code
    for m in messages:
        for q in m.questions:
            fields = (q.name, q.rrtype)
            if fields not in seen:
                seen.add(fields)
                queries.append(q)
    answers = tuple(a for m in messages if m.is_response for a in m.answers)
    rcodes = tuple(m.rcode for m in messages if m.is_response)
    return DnsSummary(queries=tuple(queries), answers=answers, rcodes=rcodes)


def _http_summary(flow: Flow) -> HttpSummary | None:
    if not flow.http_requests and flow.http_response is None:
        return None  # most flows: nothing to build
    requests = tuple(r for r in flow.http_requests if isinstance(r, HttpRequest))
    response = flow.http_response if isinstance(flow.http_response, HttpResponse) else None
    if not requests and response is None:
        return None
    return HttpSummary(requests=requests, response=response)
