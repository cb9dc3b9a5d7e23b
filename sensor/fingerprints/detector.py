"""Fingerprint stage: a flow record in, a candidate session (tool, channel, evidence) out."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from sensor.addresses import Network, in_networks, strip_port
from sensor.config import DEFAULT_INTERNAL
from sensor.fingerprints.attribution import Attribution, AttributionCache, NameCache
from sensor.model import Evidence, FlowRecord, Session, flow_session
from sensor.protocols.dns import DnsMessage
from sensor.signatures.index import Decoded, Match, SignatureIndex
from sensor.signatures.schema import CONFIDENCE_RANK, Signature

A, AAAA, CNAME = 1, 28, 5
PORT_ONLY_FIELDS: Final = frozenset(("dest_port", "proto", "first_speaker", "first_size.client",
                              "first_size.server", "boundary"))  # fmt: skip


class Detector:
    def __init__(
        self,
        index: SignatureIndex,
        enrichers: Mapping[str, Callable[[FlowRecord], Decoded]],
        cache: AttributionCache | None = None,
        internal_networks: Iterable[Network] | None = None,
    ) -> None:
        """``internal_networks`` (the policy's) decide the ``boundary`` signature field."""
        self.index = index
        self.enrichers = enrichers
        self.cache = cache if cache is not None else AttributionCache()
        self.internal_networks: tuple[Network, ...] = ()
        self.set_internal_networks(
            internal_networks
            if internal_networks is not None
            else (ipaddress.ip_network(n) for n in DEFAULT_INTERNAL)
        )
        self.names = NameCache()
        # Live workers pass what they learn from DNS to the other workers through these.
        self.on_learn: Callable[[str, str], None] | None = None
        self.on_attribution: Callable[[Attribution], None] | None = None
        self._attributing = [s for s in index.signatures if s.attribute]

    def set_internal_networks(self, networks: Iterable[Network]) -> None:
        """Take the internal networks of a (re)loaded policy."""
        self.internal_networks = tuple(networks)

    def boundary(self, record: FlowRecord) -> str:
        """Crossing when exactly one of client and server is internal, else where both are."""
        inside = in_networks(record.src_ip, self.internal_networks)
        if inside != in_networks(record.dest_ip, self.internal_networks):
            return "crossing"
        return "internal" if inside else "external"

    def dns_answer(self, ts_ns: int, client: bytes, message: DnsMessage) -> None:
        """Remember the addresses answered for names that an attributing signature matches."""
        if not message.answers:
            return
        for answer in message.answers:
            if answer.rrtype in (A, AAAA) and answer.data and message.questions:
                name = message.questions[0].name.lower().rstrip(".")
                self.names.remember(answer.data, name)
                if self.on_learn is not None:
                    self.on_learn(answer.data, name)
        for question in message.questions:
            sig = self._attribution_signature(question.name.lower().rstrip("."))
            if sig is None or sig.attribute is None:
                continue
            for answer in message.answers:
                if answer.rrtype in (A, AAAA) and answer.data:
                    entry = self.cache.remember(
                        answer.data, question.name, answer.ttl, ts_ns, signature=sig.id,
                        tool=sig.tool, channel=sig.attribute, confidence="medium",
                    )  # fmt: skip
                    if self.on_attribution is not None:
                        self.on_attribution(entry)

    def learn(self, names: list[tuple[str, str]], attributions: list[Attribution]) -> None:
        """Apply DNS facts another worker learned."""
        for address, name in names:
            self.names.remember(address, name)
        for entry in attributions:
            self.cache.put(entry)

    def _attribution_signature(self, name: str) -> Signature | None:
        for sig in self._attributing:
            for cond in sig.conditions:
                if cond.field == "dns.query" and self.index.check(cond, (name,)) is not None:
                    return sig
        return None

    def detect(self, record: FlowRecord) -> Session | None:
        matches = self.index.match(record, self.boundary)
        evidence: list[tuple[Evidence, str, str, int]] = []  # evidence, tool, channel, specificity
        decoded: list[Decoded] = []
        for m in matches:
            evidence.append((_evidence(m), m.signature.tool, m.signature.channel,
                             len(m.signature.conditions)))  # fmt: skip
            if m.decoded is not None:
                decoded.append(m.decoded)
        if record.app_proto != "dns":
            hit = self.cache.lookup(record.dest_ip, record.start_ns)
            if hit is not None and _sni_allows(record, hit.tool, matches):
                ev = Evidence(hit.signature, "dns-attribution", hit.name, hit.confidence)
                evidence.append((ev, hit.tool, hit.channel, 0))
        if not evidence:
            return None
        tool = _best_tool(evidence)
        mine = [e for e in evidence if e[1] == tool]
        mine.sort(key=lambda e: (-CONFIDENCE_RANK[e[0].confidence], -e[3]))
        channel = mine[0][2]
        confidence = mine[0][0].confidence
        if all(_port_only(self.index, e[0].signature) for e in mine):
            confidence = "low"
        attrs: dict[str, str] = {}
        instance = None
        enrich = self.enrichers.get(tool)
        for d in [*decoded, enrich(record)] if enrich else decoded:
            for k, v in d.attributes:
                attrs.setdefault(k, v)
            instance = instance or d.instance
        server_name = _server_name(record) or next(
            (e[0].value for e in mine if e[0].field == "dns-attribution"), None
        )
        if record.app_proto != "dns" and (resolved := self.names.name(record.dest_ip)):
            attrs.setdefault("resolved_name", resolved)
            server_name = server_name or resolved
        for ev, *_ in mine:
            if ev.field == "dns-attribution" and channel == "relay":
                attrs.setdefault("relay_host", ev.value)
        return flow_session(
            record,
            tool=tool,
            channel=channel,
            server_name=server_name,
            instance=instance
            or (server_name.lower() if server_name else f"{record.dest_ip}:{record.dest_port}"),
            confidence=confidence,
            evidence=tuple(dict.fromkeys(e[0] for e in mine)),
            attributes=tuple(attrs.items()),
        )


def _evidence(m: Match) -> Evidence:
    return Evidence(m.signature.id, m.field, m.value, m.signature.confidence)


def _best_tool(evidence: list[tuple[Evidence, str, str, int]]) -> str:
    score: dict[str, tuple[int, int]] = {}
    for ev, tool, _, _ in evidence:
        best, count = score.get(tool, (-1, 0))
        score[tool] = (max(best, CONFIDENCE_RANK[ev.confidence]), count + 1)
    return max(score, key=lambda t: score[t])


def _port_only(index: SignatureIndex, sig_id: str) -> bool:
    sig = index.by_id.get(sig_id)
    return sig is not None and all(c.field in PORT_ONLY_FIELDS for c in sig.conditions)


def _sni_allows(record: FlowRecord, tool: str, matches: list[Match]) -> bool:
    """A flow that names another host in its SNI is not the relay the DNS answer named."""
    if record.tls is None or not record.tls.server_name:
        return True
    return any(m.signature.tool == tool for m in matches)


def _server_name(r: FlowRecord) -> str | None:
    if r.tls is not None and r.tls.server_name:
        return r.tls.server_name
    if r.http is not None:
        for q in r.http.requests:
            if q.host:
                return strip_port(q.host)
    if r.dns is not None and r.dns.queries:
        return r.dns.queries[0].name
    return None
