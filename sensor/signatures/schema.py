"""Signature files: schema, validation and the typed form the index is compiled from.

A file holds one tool::

    tool: anydesk                     # lower-case id, used in metrics labels
    name: AnyDesk                     # display name
    references: [https://...]
    signatures:
      - id: anydesk-tls-alpn          # unique across all files
        channel: relay                # relay | web | direct | discovery | download | dns
        confidence: high              # low | medium | high
        description: ...
        match:                        # every condition must hold (AND); one operator per field
          tls.alpn: {prefix: "anydesk/"}
        attribute: relay              # optional, dns signatures only: remember the answered
                                      # addresses and attribute later flows to them as this channel
        references: [...]

The fields and their operators are listed in :data:`FIELDS`. Errors name file, line and the
signature id.

``boundary: {equals: crossing}`` holds when exactly one of client and server is inside the
policy's ``internal_networks`` (the detector is given them). It is for tools that are ordinary
administration inside a network (RDP, VNC) and worth a report only where a session enters or
leaves it. It never selects candidates on its own: a signature needs another, indexed condition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sensor.frozen import picklable
from sensor.yamlsource import Located, SourceError, load_yaml

CHANNELS = ("relay", "web", "direct", "discovery", "download", "dns")
CONFIDENCES = ("low", "medium", "high")
CONFIDENCE_RANK = MappingProxyType({c: i for i, c in enumerate(CONFIDENCES)})

_NAME_OPS = ("suffix", "equals", "regex")
# field -> operators it accepts
FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "dns.query": _NAME_OPS,
        "tls.sni": (*_NAME_OPS, "absent"),
        "tls.alpn": ("prefix", "equals"),
        "tls.ja4": ("equals",),
        "tls.server_cert.subject": ("contains", "equals", "regex"),
        "tls.server_cert.issuer": ("contains", "equals", "regex"),
        "tls.client_cert.subject": ("contains", "equals", "regex"),
        "tls.client_cert.issuer": ("contains", "equals", "regex"),
        "http.host": _NAME_OPS,
        "http.path": ("prefix", "equals", "regex"),
        "http.query": ("has",),
        "http.user_agent": ("prefix", "equals", "regex"),
        "http.server": ("prefix", "equals", "regex"),
        "proto": ("equals",),
        "dest_port": ("in",),
        "payload.client": ("pattern",),
        "payload.server": ("pattern",),
        "first_size.client": ("range",),
        "first_size.server": ("range",),
        "first_speaker": ("equals",),
        "decoder": ("equals",),
        "boundary": ("equals",),
    }
)
BOUNDARIES = ("crossing",)  # values of the boundary field a signature may ask for
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,63}$")
_TOOL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_HEX_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}|\?\?)(?:\*[1-9][0-9]{0,2})?$")


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: str
    values: tuple[Any, ...]  # normalised operands: lower-cased names, (lo, hi) ranges ...
    offset: int = 0  # payload patterns: where the pattern starts
    depth: int = 0  # payload patterns: how far past offset it may start


@dataclass(frozen=True, slots=True)
class Signature:
    id: str
    tool: str
    channel: str
    confidence: str
    description: str
    conditions: tuple[Condition, ...]
    attribute: str | None
    references: tuple[str, ...]
    path: str
    line: int


@dataclass(frozen=True, slots=True)
class ToolFile:
    tool: str
    name: str
    references: tuple[str, ...]
    signatures: tuple[Signature, ...]
    path: str


def load_tool_file(path: str, text: str | None = None) -> ToolFile:
    doc = load_yaml(path, text)
    top = _mapping(doc, path, "the file")
    _only(top, ("tool", "name", "references", "signatures"), path, "the file")
    tool = _string(top, "tool", path, doc.line, required=True)
    if not _TOOL_RE.match(tool):
        raise SourceError(path, top["tool"].line, f"tool {tool!r} must match {_TOOL_RE.pattern}")
    name = _string(top, "name", path, doc.line) or tool
    refs = _strings(top.get("references"), path, "references")
    sigs_loc = top.get("signatures")
    if sigs_loc is None or not isinstance(sigs_loc.value, list) or not sigs_loc.value:
        line = sigs_loc.line if sigs_loc else doc.line
        raise SourceError(path, line, "signatures: a non-empty list is required")
    signatures = tuple(_signature(item, tool, path) for item in sigs_loc.value)
    return ToolFile(tool, name, refs, signatures, path)


def _signature(loc: Located, tool: str, path: str) -> Signature:
    m = _mapping(loc, path, "a signature")
    sig_id = _string(m, "id", path, loc.line, required=True)
    where = f"signature {sig_id!r}"
    if not _ID_RE.match(sig_id):
        raise SourceError(path, m["id"].line, f"{where}: id must match {_ID_RE.pattern}")
    _only(m, ("id", "channel", "confidence", "description", "match", "attribute", "references"),
          path, where)  # fmt: skip
    channel = _choice(m, "channel", CHANNELS, path, loc.line, where)
    confidence = _choice(m, "confidence", CONFIDENCES, path, loc.line, where)
    attribute = None
    if "attribute" in m:
        attribute = _choice(m, "attribute", CHANNELS, path, loc.line, where)
    description = (
        _string(m, "description", path, loc.line, where=where) if "description" in m else ""
    )
    match = m.get("match")
    if match is None or not isinstance(match.value, dict) or not match.value:
        raise SourceError(path, match.line if match else loc.line, f"{where}: match is required")
    conditions = tuple(_condition(f, v, path, where) for f, v in match.value.items())
    if attribute and not any(c.field == "dns.query" for c in conditions):
        raise SourceError(path, m["attribute"].line, f"{where}: attribute needs a dns.query match")
    return Signature(
        id=sig_id,
        tool=tool,
        channel=channel,
        confidence=confidence,
        description=description,
        conditions=conditions,
        attribute=attribute,
        references=_strings(m.get("references"), path, f"{where}: references"),
        path=path,
        line=loc.line,
    )


def _condition(field: str, loc: Located, path: str, where: str) -> Condition:
    if field not in FIELDS:
        known = ", ".join(FIELDS)
        raise SourceError(path, loc.line, f"{where}: unknown field {field!r} (known: {known})")
    spec = _mapping(loc, path, f"{where}: {field}")
    ops = [k for k in spec if k not in ("offset", "depth")]
    if len(ops) != 1 or ops[0] not in FIELDS[field]:
        allowed = ", ".join(FIELDS[field])
        raise SourceError(path, loc.line, f"{where}: {field} takes exactly one of: {allowed}")
    op = ops[0]
    operand = spec[op]
    ctx = f"{where}: {field}.{op}"
    if op == "pattern":
        offset = _int(spec.get("offset"), 0, path, ctx)
        depth = _int(spec.get("depth"), 0, path, ctx)
        return Condition(field, op, (_pattern(operand, path, ctx),), offset, depth)
    if "offset" in spec or "depth" in spec:
        raise SourceError(path, loc.line, f"{where}: offset/depth only go with pattern")
    if op == "range":
        rng = _mapping(operand, path, ctx)
        _only(rng, ("min", "max"), path, ctx)
        lo = _int(rng.get("min"), 0, path, ctx)
        hi = _int(rng.get("max"), 1 << 31, path, ctx)
        return Condition(field, op, (lo, hi))
    if op == "in":
        return Condition(
            field, op, tuple(_port_range(v, path, ctx) for v in _list(operand, path, ctx))
        )
    if op == "absent":
        if operand.value is not True:
            raise SourceError(path, operand.line, f"{ctx}: must be true")
        return Condition(field, op, (True,))
    values = [v.value for v in _list(operand, path, ctx)]
    for v, item in zip(values, _list(operand, path, ctx), strict=True):
        if not isinstance(v, str) or not v:
            raise SourceError(path, item.line, f"{ctx}: values must be non-empty strings")
    if op == "regex":
        for v, item in zip(values, _list(operand, path, ctx), strict=True):
            try:
                re.compile(v)
            except (re.error, OverflowError, RecursionError) as exc:
                # re raises OverflowError for a repeat count of 2**32 or more, and
                # RecursionError for groups nested a few hundred deep.
                raise SourceError(path, item.line, f"{ctx}: bad regex: {exc}") from exc
        return Condition(field, op, tuple(values))
    if field in ("dns.query", "tls.sni", "http.host", "proto", "first_speaker", "boundary"):
        values = [v.lower().strip(".") if op == "suffix" else v.lower() for v in values]
    if field == "boundary":
        for v, item in zip(values, _list(operand, path, ctx), strict=True):
            if v not in BOUNDARIES:
                raise SourceError(path, item.line, f"{ctx}: must be one of {', '.join(BOUNDARIES)}")
    return Condition(field, op, tuple(values))


def _pattern(loc: Located, path: str, ctx: str) -> bytes:
    """Hex bytes with ``??`` wildcards and ``XX*N`` repeats -> a regex over bytes."""
    if not isinstance(loc.value, str):
        raise SourceError(path, loc.line, f"{ctx}: a hex string like '87 ?? 10 00' is required")
    parts: list[bytes] = []
    for token in loc.value.split():
        if not _HEX_TOKEN.match(token):
            raise SourceError(path, loc.line, f"{ctx}: bad pattern token {token!r}")
        byte, _, count = token.partition("*")
        piece = b"." if byte == "??" else re.escape(bytes.fromhex(byte))
        parts.append(piece * int(count or 1))
    if not parts:
        raise SourceError(path, loc.line, f"{ctx}: empty pattern")
    return b"".join(parts)


def pattern_tokens(regex: bytes) -> list[int | None]:
    """A compiled pattern back to its bytes, ``None`` for ``??``.

    :func:`_pattern` writes each byte as itself or, via ``re.escape``, as a backslash and
    itself, and ``??`` as ``.`` (a literal ``.`` is escaped), so this reading is unambiguous.
    """
    out: list[int | None] = []
    i = 0
    while i < len(regex):
        if regex[i] == 0x2E:  # "."
            out.append(None)
        elif regex[i] == 0x5C and i + 1 < len(regex):  # "\" escapes the next byte
            i += 1
            out.append(regex[i])
        else:
            out.append(regex[i])
        i += 1
    return out


def _port_range(loc: Located, path: str, ctx: str) -> tuple[int, int]:
    v = loc.value
    if isinstance(v, int) and not isinstance(v, bool):
        lo = hi = v
    elif isinstance(v, str) and re.fullmatch(r"\d{1,5}-\d{1,5}", v):
        lo, hi = (int(x) for x in v.split("-"))
    else:
        raise SourceError(path, loc.line, f"{ctx}: ports are numbers or 'low-high' ranges")
    if lo > hi:
        raise SourceError(path, loc.line, f"{ctx}: port range {v!r} runs backwards")
    if hi > 65535:
        raise SourceError(path, loc.line, f"{ctx}: port range {v!r} is out of 0-65535")
    return lo, hi


def _mapping(loc: Located, path: str, what: str) -> dict[str, Located]:
    if not isinstance(loc.value, dict):
        raise SourceError(path, loc.line, f"{what}: a mapping is required")
    return loc.value


def _list(loc: Located, path: str, what: str) -> list[Located]:
    if isinstance(loc.value, list):
        if not loc.value:
            raise SourceError(path, loc.line, f"{what}: the list is empty")
        return loc.value
    return [loc]  # a single value stands for a one-item list


def _only(m: dict[str, Located], keys: tuple[str, ...], path: str, what: str) -> None:
    for key, loc in m.items():
        if key not in keys:
            raise SourceError(path, loc.line, f"{what}: unknown key {key!r}")


def _string(
    m: dict[str, Located], key: str, path: str, line: int, required: bool = False, where: str = ""
) -> str:
    prefix = f"{where}: " if where else ""
    loc = m.get(key)
    if loc is None:
        if required:
            raise SourceError(path, line, f"{prefix}{key} is required")
        return ""
    if not isinstance(loc.value, str) or not loc.value.strip():
        raise SourceError(path, loc.line, f"{prefix}{key} must be a non-empty string")
    return loc.value


def _strings(loc: Located | None, path: str, what: str) -> tuple[str, ...]:
    if loc is None:
        return ()
    items = _list(loc, path, what)
    for item in items:
        if not isinstance(item.value, str):
            raise SourceError(path, item.line, f"{what}: strings are required")
    return tuple(item.value for item in items)


def _choice(
    m: dict[str, Located], key: str, allowed: tuple[str, ...], path: str, line: int, where: str
) -> str:
    value = _string(m, key, path, line, required=True, where=where)
    if value not in allowed:
        raise SourceError(path, m[key].line, f"{where}: {key} must be one of {', '.join(allowed)}")
    return value


def _int(loc: Located | None, default: int, path: str, ctx: str) -> int:
    if loc is None:
        return default
    if not isinstance(loc.value, int) or isinstance(loc.value, bool) or loc.value < 0:
        raise SourceError(path, loc.line, f"{ctx}: a non-negative integer is required")
    return loc.value


picklable(Condition, Signature, ToolFile)
