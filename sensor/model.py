"""Frozen records passed between the stages after the hot path.

Packets never become objects; a flow becomes a :class:`FlowRecord` once, when it ends. The
fingerprint stage turns records into :class:`Evidence`, the session stage groups evidence into
:class:`Session` records, and the policy stage gives each session a verdict.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Final

from sensor.communityid import community_id
from sensor.frozen import picklable
from sensor.protocols.dns import DnsAnswer, DnsQuestion
from sensor.protocols.http import HttpRequest, HttpResponse
from sensor.protocols.tls import ClientHello
from sensor.protocols.x509 import CertSummary

PROTO_NAMES: Final = {6: "TCP", 17: "UDP"}


@dataclass(frozen=True, slots=True, init=False)
class TlsSummary:
    server_name: str | None
    client_versions: tuple[int, ...]
    version: int | None  # negotiated, from the ServerHello
    alpn_offered: tuple[str, ...]
    alpn: str | None
    client_hello: ClientHello | None  # None: the client's hello was not seen
    cipher_suite: int | None
    client_certificates: tuple[CertSummary, ...]
    server_certificates: tuple[CertSummary, ...]
    certificate_requested: bool

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        server_name: str | None,
        client_versions: tuple[int, ...],
        version: int | None,
        alpn_offered: tuple[str, ...],
        alpn: str | None,
        client_hello: ClientHello | None,
        cipher_suite: int | None,
        client_certificates: tuple[CertSummary, ...],
        server_certificates: tuple[CertSummary, ...],
        certificate_requested: bool,
    ) -> None:
        object.__setattr__(self, "server_name", server_name)
        object.__setattr__(self, "client_versions", client_versions)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "alpn_offered", alpn_offered)
        object.__setattr__(self, "alpn", alpn)
        object.__setattr__(self, "client_hello", client_hello)
        object.__setattr__(self, "cipher_suite", cipher_suite)
        object.__setattr__(self, "client_certificates", client_certificates)
        object.__setattr__(self, "server_certificates", server_certificates)
        object.__setattr__(self, "certificate_requested", certificate_requested)

    @property
    def ja4(self) -> str | None:
        """JA4 of the ClientHello, computed when an output or a signature reads it."""
        return self.client_hello.ja4 if self.client_hello is not None else None


@dataclass(frozen=True, slots=True, init=False)
class DnsSummary:
    queries: tuple[DnsQuestion, ...]
    answers: tuple[DnsAnswer, ...]
    rcodes: tuple[int, ...]

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        queries: tuple[DnsQuestion, ...],
        answers: tuple[DnsAnswer, ...],
        rcodes: tuple[int, ...],
    ) -> None:
        object.__setattr__(self, "queries", queries)
        object.__setattr__(self, "answers", answers)
        object.__setattr__(self, "rcodes", rcodes)


@dataclass(frozen=True, slots=True, init=False)
class HttpSummary:
    requests: tuple[HttpRequest, ...]
    response: HttpResponse | None

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(self, requests: tuple[HttpRequest, ...], response: HttpResponse | None) -> None:
        object.__setattr__(self, "requests", requests)
        object.__setattr__(self, "response", response)


@dataclass(frozen=True, slots=True, init=False)
class FlowRecord:
    flow_id: int
    proto: int
    src_ip: str  # the client
    src_port: int
    dest_ip: str  # the server
    dest_port: int
    start_ns: int
    end_ns: int
    pkts_toserver: int
    pkts_toclient: int
    bytes_toserver: int
    bytes_toclient: int
    tcp_flags_ts: int
    tcp_flags_tc: int
    syn_seen: bool  # orientation came from the handshake, not from port numbers
    end_reason: str
    app_proto: str
    first_speaker: str  # "client", "server" or "" when no payload was seen
    client_head: bytes  # first payload bytes each way, for byte signatures
    server_head: bytes
    client_first_size: int  # payload size of the first segment or datagram each way
    server_first_size: int
    tls: TlsSummary | None = None
    dns: DnsSummary | None = None
    http: HttpSummary | None = None

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        flow_id: int,
        proto: int,
        src_ip: str,
        src_port: int,
        dest_ip: str,
        dest_port: int,
        start_ns: int,
        end_ns: int,
        pkts_toserver: int,
        pkts_toclient: int,
        bytes_toserver: int,
        bytes_toclient: int,
        tcp_flags_ts: int,
        tcp_flags_tc: int,
        syn_seen: bool,
        end_reason: str,
        app_proto: str,
        first_speaker: str,
        client_head: bytes,
        server_head: bytes,
        client_first_size: int,
        server_first_size: int,
        tls: TlsSummary | None = None,
        dns: DnsSummary | None = None,
        http: HttpSummary | None = None,
    ) -> None:
        object.__setattr__(self, "flow_id", flow_id)
        object.__setattr__(self, "proto", proto)
        object.__setattr__(self, "src_ip", src_ip)
        object.__setattr__(self, "src_port", src_port)
        object.__setattr__(self, "dest_ip", dest_ip)
        object.__setattr__(self, "dest_port", dest_port)
        object.__setattr__(self, "start_ns", start_ns)
        object.__setattr__(self, "end_ns", end_ns)
        object.__setattr__(self, "pkts_toserver", pkts_toserver)
        object.__setattr__(self, "pkts_toclient", pkts_toclient)
        object.__setattr__(self, "bytes_toserver", bytes_toserver)
        object.__setattr__(self, "bytes_toclient", bytes_toclient)
        object.__setattr__(self, "tcp_flags_ts", tcp_flags_ts)
        object.__setattr__(self, "tcp_flags_tc", tcp_flags_tc)
        object.__setattr__(self, "syn_seen", syn_seen)
        object.__setattr__(self, "end_reason", end_reason)
        object.__setattr__(self, "app_proto", app_proto)
        object.__setattr__(self, "first_speaker", first_speaker)
        object.__setattr__(self, "client_head", client_head)
        object.__setattr__(self, "server_head", server_head)
        object.__setattr__(self, "client_first_size", client_first_size)
        object.__setattr__(self, "server_first_size", server_first_size)
        object.__setattr__(self, "tls", tls)
        object.__setattr__(self, "dns", dns)
        object.__setattr__(self, "http", http)

    @property
    def community_id(self) -> str:
        """The Community ID v1 flow hash. Computed when an output asks for it: most flows are
        never written, and hashing every one took about 2 µs a flow."""
        return community_id(
            self.proto, _packed(self.src_ip), _packed(self.dest_ip), self.src_port, self.dest_port
        )


def _packed(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


@dataclass(frozen=True, slots=True)
class Evidence:
    """One signature that matched, and on what."""

    signature: str
    field: str  # what was compared: "dns.query", "tls.sni", "payload", "dns-attribution" ...
    value: str
    confidence: str  # "low" | "medium" | "high"


@dataclass(frozen=True, slots=True)
class Session:
    """One remote-access session of one tool, built from one or more flows."""

    session_id: int
    tool: str
    channel: str
    proto: int
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int
    community_id: str
    start_ns: int
    end_ns: int
    bytes_toserver: int
    bytes_toclient: int
    pkts_toserver: int
    pkts_toclient: int
    server_name: str | None
    instance: str | None  # the instance identity: tenant, relay host, key hash, AnyDesk ID ...
    confidence: str
    evidence: tuple[Evidence, ...]
    attributes: tuple[tuple[str, str], ...] = ()  # tool-specific facts (version, hostname, ...)
    flow_ids: tuple[int, ...] = ()
    verdict: str = ""
    verdict_reason: str = ""
    severity: str = ""
    tags: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an analyst should look at, with the session that caused it."""

    alert_id: int
    rule: str  # "unsanctioned_rmm_session", ...
    severity: str  # "low" | "medium" | "high" | "critical"
    ts_ns: int
    message: str
    session: Session
    repeats: int = 0  # further sessions condensed into this alert (a follow-up record)
    last_ns: int = 0
    technique: str = "T1219"  # MITRE ATT&CK: Remote Access Tools
    related: Session | None = None  # the other session of a chain


def flow_session(
    record: FlowRecord,
    *,
    tool: str,
    channel: str,
    server_name: str | None,
    instance: str,
    confidence: str,
    evidence: tuple[Evidence, ...],
    attributes: tuple[tuple[str, str], ...],
) -> Session:
    """A session of one flow: the flow's addresses, times and counters, and what matched."""
    return Session(
        session_id=0,
        tool=tool,
        channel=channel,
        proto=record.proto,
        src_ip=record.src_ip,
        src_port=record.src_port,
        dest_ip=record.dest_ip,
        dest_port=record.dest_port,
        community_id=record.community_id,
        start_ns=record.start_ns,
        end_ns=record.end_ns,
        bytes_toserver=record.bytes_toserver,
        bytes_toclient=record.bytes_toclient,
        pkts_toserver=record.pkts_toserver,
        pkts_toclient=record.pkts_toclient,
        server_name=server_name,
        instance=instance,
        confidence=confidence,
        evidence=evidence,
        attributes=attributes,
        flow_ids=(record.flow_id,),
    )


picklable(TlsSummary, DnsSummary, HttpSummary, FlowRecord, Evidence, Session, Alert)
