"""Signatures compiled into lookups, and matched once per flow record.

Each signature is filed under one *primary* condition in a dict (exact names, label suffixes,
prefixes by length, first payload byte, ports) or, for regexes and substrings, in a short list
per field. Matching a record looks up only the fields the record has, then checks the remaining
conditions of the few candidates found. No signature is ever tried against every flow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sensor.model import FlowRecord
from sensor.signatures.schema import Condition, Signature, ToolFile
from sensor.yamlsource import SourceError

# Primary-condition preference: the most selective, cheapest lookups first.
PRIMARY_ORDER = (
    "dns.query", "tls.sni", "http.host", "tls.alpn", "tls.ja4", "http.server", "http.user_agent",
    "tls.server_cert.subject", "tls.server_cert.issuer", "tls.client_cert.subject",
    "tls.client_cert.issuer", "http.path", "payload.client", "payload.server", "dest_port",
)  # fmt: skip
INDEXED_OPS = frozenset(("suffix", "equals", "regex", "prefix", "contains", "pattern", "in"))
NAME_FIELDS = frozenset(("dns.query", "tls.sni", "http.host"))
MAX_PORT_SPAN = 4096  # wider port ranges are kept as ranges, not expanded into the dict

Decoder = Callable[[FlowRecord], "Decoded | None"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a tool-specific decoder read from a flow."""

    attributes: tuple[tuple[str, str], ...] = ()
    instance: str | None = None


@dataclass(frozen=True, slots=True)
class Match:
    signature: Signature
    field: str
    value: str
    decoded: Decoded | None


class _FieldIndex:
    def __init__(self) -> None:
        self.exact: dict[Any, list[tuple[Signature, Condition]]] = {}
        self.suffix: dict[str, list[tuple[Signature, Condition]]] = {}
        self.prefix: dict[int, dict[str, list[tuple[Signature, Condition]]]] = {}
        self.scan: list[tuple[Signature, Condition]] = []  # regex, contains, wide port ranges
        self.first_byte: dict[int, list[tuple[Signature, Condition]]] = {}

    def add(self, sig: Signature, cond: Condition) -> None:
        entry = (sig, cond)
        if cond.op == "equals":
            for v in cond.values:
                self.exact.setdefault(v, []).append(entry)
        elif cond.op == "suffix":
            for v in cond.values:
                self.suffix.setdefault(v, []).append(entry)
        elif cond.op == "prefix":
            for v in cond.values:
                self.prefix.setdefault(len(v), {}).setdefault(v, []).append(entry)
        elif (
            cond.op == "pattern"
            and cond.offset == 0
            and cond.depth == 0
            and cond.values[0][:1] not in (b".", b"\\")
        ):
            self.first_byte.setdefault(cond.values[0][0], []).append(entry)
        elif cond.op == "in" and all(hi - lo < MAX_PORT_SPAN for lo, hi in cond.values):
            for lo, hi in cond.values:
                for port in range(lo, hi + 1):
                    self.exact.setdefault(port, []).append(entry)
        else:
            self.scan.append(entry)

    def candidates(
        self, values: Iterable[Any], field: str
    ) -> Iterable[tuple[Signature, Condition]]:
        for v in values:
            yield from self.exact.get(v, ())
            if isinstance(v, str):
                if self.suffix:
                    for s in _label_suffixes(v):
                        yield from self.suffix.get(s, ())
                for length, table in self.prefix.items():
                    yield from table.get(v[:length], ())
            elif isinstance(v, bytes) and v:
                yield from self.first_byte.get(v[0] if len(v) > 0 else -1, ())
        yield from self.scan


def _label_suffixes(name: str) -> Iterable[str]:
    """'a.b.example.com' -> itself, 'b.example.com', 'example.com', 'com'."""
    yield name
    pos = name.find(".")
    while pos >= 0:
        yield name[pos + 1 :]
        pos = name.find(".", pos + 1)


class SignatureIndex:
    """All loaded signatures, compiled."""

    def __init__(self, files: Iterable[ToolFile], decoders: Mapping[str, Decoder]) -> None:
        self.files = tuple(files)
        self.decoders = decoders
        self.signatures: tuple[Signature, ...] = ()
        self._fields: dict[str, _FieldIndex] = {}
        self._regex: dict[str, re.Pattern[str]] = {}
        self._patterns: dict[bytes, re.Pattern[bytes]] = {}
        seen: dict[str, Signature] = {}
        tools: dict[str, str] = {}
        sigs = []
        for f in self.files:
            if f.tool in tools:
                raise SourceError(f.path, 1, f"tool {f.tool!r} is also defined in {tools[f.tool]}")
            tools[f.tool] = f.path
            for sig in f.signatures:
                if sig.id in seen:
                    other = seen[sig.id]
                    raise SourceError(
                        sig.path, sig.line,
                        f"signature {sig.id!r} is also defined at {other.path}:{other.line}",
                    )  # fmt: skip
                seen[sig.id] = sig
                self._compile(sig)
                sigs.append(sig)
        self.signatures = tuple(sigs)
        self.by_id = {s.id: s for s in sigs}
        self._order = {s.id: i for i, s in enumerate(sigs)}

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(f.tool for f in self.files)

    def _compile(self, sig: Signature) -> None:
        primary = None
        for field in PRIMARY_ORDER:
            for cond in sig.conditions:
                if cond.field == field and cond.op in INDEXED_OPS:
                    primary = cond
                    break
            if primary:
                break
        if primary is None:
            raise SourceError(
                sig.path, sig.line,
                f"signature {sig.id!r}: needs at least one indexable condition "
                f"({', '.join(PRIMARY_ORDER)})",
            )  # fmt: skip
        for cond in sig.conditions:
            if cond.op == "regex":
                for v in cond.values:
                    self._regex[v] = re.compile(
                        v, re.IGNORECASE if cond.field in NAME_FIELDS else 0
                    )
            elif cond.op == "pattern":
                self._patterns[cond.values[0]] = re.compile(cond.values[0], re.DOTALL)
            elif cond.field == "decoder" and cond.values[0] not in self.decoders:
                raise SourceError(
                    sig.path, sig.line,
                    f"signature {sig.id!r}: unknown decoder {cond.values[0]!r} "
                    f"(known: {', '.join(sorted(self.decoders))})",
                )  # fmt: skip
        self._fields.setdefault(primary.field, _FieldIndex()).add(sig, primary)

    def match(self, record: FlowRecord) -> list[Match]:
        """Every signature whose conditions all hold for the record, in file order."""
        values = _FieldValues(record)
        found: dict[str, Match] = {}
        for field, index in self._fields.items():
            vals = values.get(field)
            if not vals:
                continue
            for sig, cond in index.candidates(vals, field):
                if sig.id in found:
                    continue
                matched = self.check(cond, vals)
                if matched is None:
                    continue
                ok, decoded = self._rest(sig, cond, values, record)
                if ok:
                    found[sig.id] = Match(sig, field, matched, decoded)
        if len(found) < 2:
            return list(found.values())
        return sorted(found.values(), key=lambda m: self._order[m.signature.id])

    def _rest(
        self, sig: Signature, primary: Condition, values: _FieldValues, record: FlowRecord
    ) -> tuple[bool, Decoded | None]:
        """Check the non-primary conditions; the decoder's result when all hold."""
        decoded: Decoded | None = None
        for cond in sig.conditions:
            if cond is primary:
                continue
            if cond.field == "decoder":
                decoded = self.decoders[cond.values[0]](record)
                if decoded is None:
                    return False, None
                continue
            if self.check(cond, values.get(cond.field)) is None:
                return False, None
        return True, decoded

    def check(self, cond: Condition, vals: tuple[Any, ...]) -> str | None:
        """The first value satisfying the condition, as text for the evidence, or None."""
        op = cond.op
        if op == "absent":
            return "absent" if vals == ("",) else None
        for v in vals:
            if op == "equals":
                if v in cond.values:
                    return str(v)
            elif op == "suffix":
                if any(v == s or v.endswith("." + s) for s in cond.values):
                    return str(v)
            elif op == "prefix":
                if any(v.startswith(p) for p in cond.values):
                    return str(v)
            elif op == "contains":
                if any(p in v for p in cond.values):
                    return str(v)
            elif op == "regex":
                if any(self._regex[p].search(v) for p in cond.values):
                    return str(v)
            elif op == "in":
                if any(lo <= v <= hi for lo, hi in cond.values):
                    return str(v)
            elif op == "range":
                lo, hi = cond.values
                if lo <= v <= hi:
                    return str(v)
            elif op == "has":
                if all(k in v for k in cond.values):
                    return ",".join(cond.values)
            elif op == "pattern":
                rx = self._patterns[cond.values[0]]
                last = cond.offset + cond.depth
                for start in range(cond.offset, min(last, len(v)) + 1):
                    if rx.match(v, start):
                        return bytes(v[start : start + 16]).hex()
        return None


class _FieldValues:
    """Per-record field values, computed on first use (once per flow, not per packet)."""

    def __init__(self, record: FlowRecord) -> None:
        self.record = record
        self.cache: dict[str, tuple[Any, ...]] = {}

    def get(self, field: str) -> tuple[Any, ...]:
        vals = self.cache.get(field)
        if vals is None:
            vals = self.cache[field] = _extract(self.record, field)
        return vals


def _extract(r: FlowRecord, field: str) -> tuple[Any, ...]:
    if field == "dns.query":
        return tuple(q.name.lower().rstrip(".") for q in r.dns.queries) if r.dns else ()
    if field.startswith("tls."):
        return _tls_values(r, field)
    if field.startswith("http."):
        return _http_values(r, field)
    if field == "dest_port":
        return (r.dest_port,)
    if field == "proto":
        return ({6: "tcp", 17: "udp"}.get(r.proto, str(r.proto)),)
    if field == "payload.client":
        return (r.client_head,) if r.client_head else ()
    if field == "payload.server":
        return (r.server_head,) if r.server_head else ()
    if field == "first_size.client":
        return (r.client_first_size,) if r.client_first_size else ()
    if field == "first_size.server":
        return (r.server_first_size,) if r.server_first_size else ()
    if field == "first_speaker":
        return (r.first_speaker,) if r.first_speaker else ()
    return ()


def _tls_values(r: FlowRecord, field: str) -> tuple[Any, ...]:
    t = r.tls
    if t is None:
        return ()
    if field == "tls.sni":
        # "" stands for a ClientHello without SNI, so `absent` can tell it from no TLS at all.
        if t.ja4 is None:
            return ()
        return ((t.server_name or "").lower(),)
    if field == "tls.alpn":
        return t.alpn_offered
    if field == "tls.ja4":
        return (t.ja4,) if t.ja4 else ()
    side, _, attr = field[4:].partition(".")
    certs = t.server_certificates if side == "server_cert" else t.client_certificates
    return tuple(v for c in certs if (v := c.subject if attr == "subject" else c.issuer))


def _http_values(r: FlowRecord, field: str) -> tuple[Any, ...]:
    h = r.http
    if h is None:
        return ()
    if field == "http.server":
        return (h.response.server,) if h.response and h.response.server else ()
    reqs = h.requests
    if field == "http.host":
        return tuple(q.host.lower().split(":")[0] for q in reqs if q.host)
    if field == "http.user_agent":
        return tuple(q.user_agent for q in reqs if q.user_agent)
    if field == "http.path":
        return tuple(q.target.split("?", 1)[0] for q in reqs)
    if field == "http.query":
        return tuple(frozenset(_query_keys(q.target)) for q in reqs)
    return ()


def _query_keys(target: str) -> list[str]:
    _, _, query = target.partition("?")
    return [p.split("=", 1)[0] for p in query.split("&") if p]
