"""Signatures compiled into lookups, and matched once per flow record.

Each signature is filed under one *primary* condition in a dict (exact names, label suffixes,
prefixes by length, the literal tail of an ``...literal$`` regex, the payload byte a pattern fixes
at a position, ports) or, for other regexes and substrings, in a short list per field. Matching
a record looks up only the fields the record has, then checks the remaining conditions of the
few candidates found. No signature is ever tried against every flow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sensor.frozen import picklable
from sensor.model import FlowRecord
from sensor.signatures.schema import Condition, Signature, ToolFile, pattern_tokens
from sensor.yamlsource import SourceError

# Primary-condition preference: the most selective, cheapest lookups first.
PRIMARY_ORDER: Final = (
    "dns.query", "tls.sni", "http.host", "tls.alpn", "tls.ja4", "http.server", "http.user_agent",
    "tls.server_cert.subject", "tls.server_cert.issuer", "tls.client_cert.subject",
    "tls.client_cert.issuer", "http.path", "payload.client", "payload.server", "dest_port",
)  # fmt: skip
INDEXED_OPS: Final = frozenset(("suffix", "equals", "regex", "prefix", "contains", "pattern", "in"))
NAME_FIELDS: Final = frozenset(("dns.query", "tls.sni", "http.host"))
MAX_PORT_SPAN: Final = 4096  # wider port ranges are kept as ranges, not expanded into the dict

Decoder = Callable[[FlowRecord], "Decoded | None"]
# Where a flow runs: "crossing" (exactly one end internal), "internal" or "external".
Boundary = Callable[[FlowRecord], str]


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
        # payload patterns by the first byte they fix: position -> byte -> entries
        self.byte_at: dict[int, dict[int, list[tuple[Signature, Condition]]]] = {}
        # regexes that end in a literal tail: tail length -> tail -> entries
        self.tail: dict[int, dict[str, list[tuple[Signature, Condition]]]] = {}

    def add(self, sig: Signature, cond: Condition) -> None:
        entry = (sig, cond)
        anchor = _anchor(cond) if cond.op == "pattern" else None
        tail = _tail(cond) if cond.op == "regex" and len(cond.values) == 1 else None
        if anchor is not None:
            at, byte = anchor
            self.byte_at.setdefault(at, {}).setdefault(byte, []).append(entry)
        elif tail is not None:
            self.tail.setdefault(len(tail), {}).setdefault(tail, []).append(entry)
        elif cond.op == "equals":
            for v in cond.values:
                self.exact.setdefault(v, []).append(entry)
        elif cond.op == "suffix":
            for v in cond.values:
                self.suffix.setdefault(v, []).append(entry)
        elif cond.op == "prefix":
            for v in cond.values:
                self.prefix.setdefault(len(v), {}).setdefault(v, []).append(entry)
        elif cond.op == "in" and all(hi - lo < MAX_PORT_SPAN for lo, hi in cond.values):
            for lo, hi in cond.values:
                for port in range(lo, hi + 1):
                    self.exact.setdefault(port, []).append(entry)
        else:
            self.scan.append(entry)

    def candidates(self, values: tuple[Any, ...], field: str) -> list[tuple[Signature, Condition]]:
        # A list, not a generator: most flows find nothing, and an empty list costs least.
        # Each table is asked only when it holds something: a lookup hashes its key first, and
        # a payload value is a flow's first bytes (hundreds of them, for every flow).
        found: list[tuple[Signature, Condition]] = []
        exact = self.exact
        suffix = self.suffix
        for v in values:
            if exact:
                found.extend(exact.get(v, ()))
            if isinstance(v, str):
                if suffix:
                    # The name, then what follows each of its dots: "a.b.com", "b.com", "com".
                    found.extend(suffix.get(v, ()))
                    dot = v.find(".")
                    while dot >= 0:
                        found.extend(suffix.get(v[dot + 1 :], ()))
                        dot = v.find(".", dot + 1)
                if self.prefix:
                    for length, table in self.prefix.items():
                        found.extend(table.get(v[:length], ()))
                if self.tail:
                    # "$" also matches before a final newline
                    end = v[:-1] if v.endswith("\n") else v
                    for length, tails in self.tail.items():
                        found.extend(tails.get(end[-length:], ()))
            elif isinstance(v, bytes) and self.byte_at:
                for at, by_byte in self.byte_at.items():
                    if at < len(v):
                        found.extend(by_byte.get(v[at], ()))
        if self.scan:
            found.extend(self.scan)
        return found


def _part(field: str) -> str:
    """The record attribute a field is read from ("" for the flow itself)."""
    if field == "dns.query":
        return "dns"
    head = field.split(".", 1)[0]
    return head if head in ("tls", "http") else ""


def _anchor(cond: Condition) -> tuple[int, int] | None:
    """(position, byte) of the first byte a pattern fixes when it may start at one place only."""
    if cond.depth:
        return None
    for i, byte in enumerate(pattern_tokens(cond.values[0])):
        if byte is not None:
            return cond.offset + i, byte
    return None  # wildcards only


_TAIL_CHAR: Final = re.compile(r"[A-Za-z0-9_/ -]")
MIN_TAIL: Final = 3  # a shorter literal tail would select too little to be worth a lookup


def _tail(cond: Condition) -> str | None:
    """The literal text every match of an ``...literal$`` regex ends with, if it has one.

    Read backwards from the final ``$`` over plain characters and escaped punctuation; a
    regex with ``|`` outside parentheses or with inline flags other than a leading ``(?i)`` on
    a name (names are compared lower-cased) is left to the scan list.
    """
    regex: str = cond.values[0]
    name = cond.field in NAME_FIELDS
    if regex.startswith("(?i)") and name:
        regex = regex[4:]
    if "(?" in regex.replace("(?:", "") or _top_level_bar(regex):
        return None
    if not regex.endswith("$") or _escaped(regex, len(regex) - 1):
        return None
    out: list[str] = []
    i = len(regex) - 2
    while i >= 0:
        ch = regex[i]
        if _escaped(regex, i):
            if ch.isalnum():
                break  # \d, \w ...: a class, not a literal
            out.append(ch)
            i -= 2
        elif _TAIL_CHAR.fullmatch(ch):  # (a quantifier after it would have stopped the walk)
            out.append(ch)
            i -= 1
        else:
            break
    tail = "".join(reversed(out))
    if len(tail) < MIN_TAIL:
        return None
    return tail.lower() if name else tail


def _escaped(text: str, i: int) -> bool:
    """Whether text[i] is preceded by an odd number of backslashes."""
    n = 0
    while i - n - 1 >= 0 and text[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _top_level_bar(regex: str) -> bool:
    depth, in_class, i = 0, False, 0
    while i < len(regex):
        ch = regex[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
        i += 1
    return False


class SignatureIndex:
    """All loaded signatures, compiled."""

    def __init__(self, files: Iterable[ToolFile], decoders: Mapping[str, Decoder]) -> None:
        self.files = tuple(files)
        self.decoders = decoders
        self.signatures: tuple[Signature, ...] = ()
        self._fields: dict[str, _FieldIndex] = {}
        self._regex: dict[str, re.Pattern[str]] = {}
        self._patterns: dict[bytes, tuple[re.Pattern[bytes], int]] = {}  # regex, bytes matched
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
        # Indexed fields by the part of a record they read: a flow without TLS, HTTP or DNS
        # skips those fields without computing their (empty) values.
        groups: dict[str, list[tuple[str, _FieldIndex]]] = {
            "": [],
            "dns": [],
            "tls": [],
            "http": [],
        }
        for field, index in self._fields.items():
            groups[_part(field)].append((field, index))
        self._plain, self._dns, self._tls, self._http = (tuple(groups[k]) for k in groups)

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
                regex = cond.values[0]
                size = len(pattern_tokens(regex))
                self._patterns[regex] = (re.compile(regex, re.DOTALL), size)
            elif cond.field == "decoder" and cond.values[0] not in self.decoders:
                raise SourceError(
                    sig.path, sig.line,
                    f"signature {sig.id!r}: unknown decoder {cond.values[0]!r} "
                    f"(known: {', '.join(sorted(self.decoders))})",
                )  # fmt: skip
        self._fields.setdefault(primary.field, _FieldIndex()).add(sig, primary)

    def match(self, record: FlowRecord, boundary: Boundary | None = None) -> list[Match]:
        """Every signature whose conditions all hold for the record, in file order.

        ``boundary`` tells where the flow runs relative to the internal networks (see
        :func:`sensor.fingerprints.detector.Detector`); asked only when a candidate needs it.
        """
        values = _FieldValues(record, boundary)
        found: dict[str, Match] = {}
        for group in (
            self._plain,
            self._dns if record.dns is not None else (),
            self._tls if record.tls is not None else (),
            self._http if record.http is not None else (),
        ):
            for field, index in group:
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
                rx, size = self._patterns[cond.values[0]]
                # One search over the window the match may start in: a pattern has a fixed
                # length, so ending by offset + depth + size means starting by offset + depth.
                m = rx.search(v, cond.offset, min(len(v), cond.offset + cond.depth + size))
                if m is not None:
                    return bytes(v[m.start() : m.start() + 16]).hex()
        return None


class _FieldValues:
    """Per-record field values, computed on first use (once per flow, not per packet)."""

    def __init__(self, record: FlowRecord, boundary: Boundary | None = None) -> None:
        self.record = record
        self.boundary = boundary
        self.cache: dict[str, tuple[Any, ...]] = {}

    def get(self, field: str) -> tuple[Any, ...]:
        vals = self.cache.get(field)
        if vals is None:
            if field == "boundary":
                vals = (self.boundary(self.record),) if self.boundary is not None else ()
            else:
                vals = _extract(self.record, field)
            self.cache[field] = vals
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
        if t.client_hello is None:
            return ()
        return ((t.server_name or "").lower(),)
    if field == "tls.alpn":
        return t.alpn_offered
    if field == "tls.ja4":
        return (t.client_hello.ja4,) if t.client_hello is not None else ()
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


picklable(Decoded, Match)
