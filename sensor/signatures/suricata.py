"""The signatures as Suricata 7 rules, for what Suricata can express.

Each signature becomes one rule (two for ``boundary: crossing``: inbound and outbound), with
``msg``, ``metadata`` (tool, channel, confidence, signature id), ``reference`` for its web
references and a ``sid`` in a local range taken from a hash of the signature id, so a rule keeps
its sid from one export to the next. A signature Suricata cannot express (a tool decoder, an
offered ALPN, a client certificate, conditions on both directions ...) is left out with a
comment saying why; a condition is never dropped, since that would widen the rule.

Field by field: ``dns.query``, ``tls.sni``, ``http.host`` name operators use the sticky
buffers with ``dotprefix ... endswith`` for label suffixes, ``startswith; endswith`` for exact
names and ``pcre`` for lists and regexes; certificates use ``tls.cert_subject`` and
``tls.cert_issuer``; ``http.path`` is matched in ``http.uri`` up to the query string; payload
patterns become hex ``content`` with ``offset``/``depth``, each ``??`` run splitting them into
contents placed with ``distance``/``within``; first sizes become ``dsize``, the first speaker a
``stream_size`` of the other side below 5 bytes (as Emerging Threats rules do).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sensor.signatures.schema import Condition, Signature, ToolFile, pattern_tokens

SID_BASE = 9_000_000
SID_SPAN = 1_000_000
CLASSTYPE = "policy-violation"

_CLIENT_FIELDS = frozenset(("tls.sni", "tls.alpn", "tls.ja4", "tls.client_cert.subject",
                            "tls.client_cert.issuer", "http.host", "http.path", "http.query",
                            "http.user_agent", "payload.client", "first_size.client"))  # fmt: skip
_SERVER_FIELDS = frozenset(("tls.server_cert.subject", "tls.server_cert.issuer", "http.server",
                            "payload.server", "first_size.server"))  # fmt: skip
_BUFFERS = {
    "dns.query": "dns.query",
    "tls.sni": "tls.sni",
    "tls.server_cert.subject": "tls.cert_subject",
    "tls.server_cert.issuer": "tls.cert_issuer",
    "http.host": "http.host",
    "http.user_agent": "http.user_agent",
    "http.server": "http.server",
}
_STICKY = frozenset(f"{b};" for b in (*_BUFFERS.values(), "http.uri"))
_NAME_FIELDS = frozenset(("dns.query", "tls.sni", "http.host"))
_UNSUPPORTED = {
    "tls.alpn": "Suricata 7 has no buffer for the ALPN protocols a client offers",
    "tls.ja4": "Suricata 7 has no JA4 buffer",
    "tls.client_cert.subject": "Suricata has no buffer for the client certificate",
    "tls.client_cert.issuer": "Suricata has no buffer for the client certificate",
}
_INLINE_FLAGS = re.compile(r"^\(\?([imsx]+)\)")
_PLAIN = frozenset(range(0x20, 0x7F)) - frozenset(b'"\\;|')


@dataclass(frozen=True, slots=True)
class SuricataRule:
    signature: str
    sid: int
    text: str


@dataclass(frozen=True, slots=True)
class SkippedSignature:
    signature: str
    reason: str


@dataclass(frozen=True, slots=True)
class SuricataExport:
    rules: tuple[SuricataRule, ...]
    skipped: tuple[SkippedSignature, ...]

    def text(self) -> str:
        """The rules file: a header, each rule on one line, a comment for each skipped one."""
        exported = len({r.signature for r in self.rules})
        lines = [
            "# rmm-sensor signatures as Suricata 7 rules "
            f"({len(self.rules)} rules from {exported} signatures, {len(self.skipped)} left out).",
            f"# sid = {SID_BASE} + a hash of the signature id, the same in every export.",
        ]
        lines += [r.text for r in self.rules]
        lines += [f"# skipped {s.signature}: {s.reason}" for s in self.skipped]
        return "\n".join(lines) + "\n"


class _Unsupported(Exception):
    """A signature, or one of its conditions, that Suricata cannot express."""


@dataclass(frozen=True, slots=True)
class _Header:
    proto: str
    to_server: bool
    ports: str
    udp: bool


def export_suricata(files: Iterable[ToolFile]) -> SuricataExport:
    rules: list[SuricataRule] = []
    skipped: list[SkippedSignature] = []
    taken: set[int] = set()
    for tool in files:
        for sig in tool.signatures:
            try:
                texts = _rules(sig, tool.name, tool.references)
            except _Unsupported as exc:
                skipped.append(SkippedSignature(sig.id, str(exc)))
                continue
            if len(taken) + len(texts) > SID_SPAN:
                raise ValueError(f"more than {SID_SPAN} rules: the sid range is full")
            for variant, body in texts:
                sid = _sid(sig.id + variant, taken)
                text = f"{body} sid:{sid}; rev:1;)"
                rules.append(SuricataRule(sig.id, sid, text))
    return SuricataExport(tuple(rules), tuple(skipped))


def _sid(key: str, taken: set[int]) -> int:
    """SID_BASE + a hash of ``key``, or the next free sid after it on a collision.

    ``export_suricata`` makes sure a free sid is left, so the probing finds one.
    """
    start = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    for step in range(SID_SPAN):
        sid = SID_BASE + (start + step) % SID_SPAN
        if sid not in taken:
            taken.add(sid)
            return sid
    raise ValueError("the sid range is full")


# --------------------------------------------------------------------------------------------
# One signature


def _rules(sig: Signature, tool_name: str, tool_refs: Sequence[str]) -> list[tuple[str, str]]:
    """(sid key suffix, rule text without sid and rev) for each rule of the signature."""
    fields = {c.field: c for c in sig.conditions}
    for field, reason in _UNSUPPORTED.items():
        if field in fields:
            raise _Unsupported(reason)
    if "decoder" in fields:
        raise _Unsupported(f"needs the {fields['decoder'].values[0]} decoder")
    header = _header(sig, fields)
    options = _sticky_once([o for c in sig.conditions for o in _options(c, header)])
    flow = "flow:established," if not header.udp else "flow:"
    flow += "to_server;" if header.to_server else "to_client;"
    if header.proto == "dns":
        flow = ""
    meta = (f"metadata:rmm_tool {sig.tool}, rmm_channel {sig.channel}, "
            f"rmm_confidence {sig.confidence}, rmm_signature {sig.id}")  # fmt: skip
    urls = dict.fromkeys(_urls((*sig.references, *tool_refs)))
    refs = [f"reference:url,{_escape(u)};" for u in urls]
    msg = f"RMM {tool_name} {sig.channel} {sig.id}"

    def rule(src: str, dst: str, extra_meta: str, extra_msg: str) -> str:
        if header.to_server:
            addresses = f"{src} any -> {dst} {header.ports}"
        else:
            addresses = f"{src} {header.ports} -> {dst} any"
        parts = [f'msg:"{_escape(msg + extra_msg)}";', flow, *options,
                 f"{meta}{extra_meta};", *refs, f"classtype:{CLASSTYPE};"]  # fmt: skip
        return f"alert {header.proto} {addresses} (" + " ".join(p for p in parts if p)

    if "boundary" not in fields:
        return [("", rule("any", "any", "", ""))]
    # Exactly one end inside $HOME_NET: one rule each way. On a to_client rule the source
    # address is the server's.
    inbound = ("$EXTERNAL_NET", "$HOME_NET") if header.to_server else ("$HOME_NET", "$EXTERNAL_NET")
    outbound = (inbound[1], inbound[0])
    return [
        ("#inbound", rule(*inbound, ", rmm_boundary inbound", " (inbound)")),
        ("#outbound", rule(*outbound, ", rmm_boundary outbound", " (outbound)")),
    ]


def _sticky_once(options: list[str]) -> list[str]:
    """Drop a sticky buffer that is already the current one (path and query share http.uri)."""
    out: list[str] = []
    current = ""
    for option in options:
        if option in _STICKY:
            if option == current:
                continue
            current = option
        out.append(option)
    return out


def _header(sig: Signature, fields: dict[str, Condition]) -> _Header:
    client = any(f in _CLIENT_FIELDS for f in fields)
    server = any(f in _SERVER_FIELDS for f in fields)
    if client and server:
        raise _Unsupported("its conditions are on both directions of the flow")
    apps = {f.split(".")[0] for f in fields if f.split(".")[0] in ("dns", "tls", "http")}
    payload = any(f.startswith(("payload.", "first_size.")) for f in fields)
    if len(apps) > 1 or (apps and payload):
        raise _Unsupported("its conditions need more than one protocol")
    transport = fields["proto"].values[0] if "proto" in fields else "tcp"
    proto = apps.pop() if apps else transport
    ports = _ports(fields["dest_port"].values) if "dest_port" in fields else "any"
    return _Header(proto, not server, ports, proto == "udp")


def _ports(ranges: Sequence[tuple[int, int]]) -> str:
    items = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in ranges]
    return items[0] if len(items) == 1 else "[" + ",".join(items) + "]"


def _options(c: Condition, header: _Header) -> list[str]:
    if c.field in ("dest_port", "proto", "boundary"):
        return []  # in the rule header
    if c.field.startswith("payload."):
        return _pattern_options(c)
    if c.field.startswith("first_size."):
        return [_dsize(*c.values)]
    if c.field == "first_speaker":
        return [_speaker(c.values[0], header)]
    if c.field == "http.path":
        return ["http.uri;", _path_option(c)]
    if c.field == "http.query":
        return ["http.uri;", *(f'pcre:"/[?&]{_pcre_escape(k)}(?:[=&]|$)/";' for k in c.values)]
    if c.field == "tls.sni" and c.op == "absent":
        raise _Unsupported("Suricata cannot ask for a ClientHello without SNI")
    buffer = _BUFFERS.get(c.field)
    if buffer is None:
        raise _Unsupported(f"no Suricata buffer for {c.field}")
    return [f"{buffer};", *_text_options(c)]


def _text_options(c: Condition) -> list[str]:
    name = c.field in _NAME_FIELDS
    nocase = " nocase;" if name and c.field != "http.host" else ""  # http.host is lower-cased
    values: tuple[str, ...] = c.values
    if c.op == "regex":
        return [f'pcre:"{_pcre(v, "i" if name else "")}";' for v in values]
    if len(values) > 1:  # one of several: an alternation
        alternatives = "|".join(_pcre_escape(v) for v in values)
        if c.op == "suffix":
            body = f"(?:^|\\.)(?:{alternatives})$"
        elif c.op == "equals":
            body = f"^(?:{alternatives})$"
        elif c.op == "prefix":
            body = f"^(?:{alternatives})"
        else:
            body = f"(?:{alternatives})"
        return [f'pcre:"/{body}/{"i" if name else ""}";']
    value = values[0]
    if c.op == "suffix":
        return ["dotprefix;", f'content:"{_content("." + value)}"; endswith;{nocase}']
    if c.op == "equals":
        return [f'content:"{_content(value)}"; startswith; endswith;{nocase}']
    if c.op == "prefix":
        return [f'content:"{_content(value)}"; startswith;{nocase}']
    if c.op == "contains":
        return [f'content:"{_content(value)}";{nocase}']
    raise _Unsupported(f"no Suricata form for {c.field} {c.op}")


def _path_option(c: Condition) -> str:
    """``http.uri`` holds path and query: a path condition must end where the query starts."""
    values: tuple[str, ...] = c.values
    if c.op == "prefix" and len(values) == 1:
        return f'content:"{_content(values[0])}"; startswith;'
    if c.op in ("prefix", "equals"):
        alternatives = "|".join(_pcre_escape(v) for v in values)
        end = "" if c.op == "prefix" else "(?:\\?|$)"
        return f'pcre:"/^(?:{alternatives}){end}/";'
    if len(values) != 1:
        raise _Unsupported("several path regexes in one condition")
    flags, body = _split_flags(values[0])
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1] + "(?:\\?|$)"
    if not body.startswith("^"):
        body = "^[^?]*?(?:" + body + ")"  # the match starts inside the path
    return f'pcre:"/{_slashes(body)}/{flags}";'


def _pcre(regex: str, flags: str) -> str:
    inline, body = _split_flags(regex)
    return f"/{_slashes(body)}/{''.join(sorted(set(flags + inline)))}"


def _split_flags(regex: str) -> tuple[str, str]:
    """Leading inline flags (``(?i)``) become PCRE modifiers."""
    m = _INLINE_FLAGS.match(regex)
    return (m.group(1), regex[m.end() :]) if m else ("", regex)


def _slashes(body: str) -> str:
    """Escape what ends a pcre option (/ ; ") in a regex body, once."""
    out = []
    escaped = False
    for ch in body:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch in '/;"':
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _pcre_escape(text: str) -> str:
    return "".join("\\" + ch if not ch.isalnum() and ch not in "-_ " else ch for ch in text)


def _pattern_options(c: Condition) -> list[str]:
    """Hex content: the first piece placed by offset/depth, the others by distance/within."""
    tokens = pattern_tokens(c.values[0])
    pieces: list[tuple[int, bytes]] = []  # (wildcards before the piece, the piece)
    gap, current = 0, bytearray()
    for byte in tokens:
        if byte is None:
            if current:
                pieces.append((gap, bytes(current)))
                gap, current = 0, bytearray()
            gap += 1
        else:
            current.append(byte)
    if current:
        pieces.append((gap, bytes(current)))
        gap = 0
    if not pieces:
        raise _Unsupported("a pattern of wildcards only")
    lead, first = pieces[0]
    out = [f'content:"{_content_bytes(first)}"; offset:{c.offset + lead}; '
           f"depth:{c.depth + len(first)};"]  # fmt: skip
    for skip, piece in pieces[1:]:
        out.append(
            f'content:"{_content_bytes(piece)}"; distance:{skip}; within:{skip + len(piece)};'
        )
    if gap:
        out.append(f"isdataat:{gap},relative;")
    return out


def _dsize(lo: int, hi: int) -> str:
    if lo == hi:
        return f"dsize:{lo};"
    if hi >= 1 << 31:
        return f"dsize:>{lo - 1};" if lo > 0 else ""
    if lo == 0:
        return f"dsize:<{hi + 1};"
    return f"dsize:{lo - 1}<>{hi + 1};"


def _speaker(speaker: str, header: _Header) -> str:
    """The other side has sent (almost) nothing yet; only on the speaker's own packets."""
    if header.udp or header.proto != "tcp":
        raise _Unsupported("the first speaker can only be asked of TCP streams")
    if (speaker == "client") != header.to_server:
        raise _Unsupported("the first speaker is asked of the other direction")
    other = "server" if speaker == "client" else "client"
    return f"stream_size:{other},<,5;"


def _content(text: str) -> str:
    return _content_bytes(text.encode("utf-8"))


def _content_bytes(data: bytes) -> str:
    """Printable bytes as text, the rest (and ; \" \\ |) as |hex|."""
    out: list[str] = []
    hex_run: list[str] = []
    for byte in data:
        if byte in _PLAIN:
            if hex_run:
                out.append("|" + " ".join(hex_run) + "|")
                hex_run = []
            out.append(chr(byte))
        else:
            hex_run.append(f"{byte:02X}")
    if hex_run:
        out.append("|" + " ".join(hex_run) + "|")
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace(";", "\\;")


def _urls(references: Iterable[str]) -> list[str]:
    """The web references, without scheme, up to the first space."""
    urls = []
    for ref in references:
        if ref.startswith(("https://", "http://")):
            urls.append(ref.split("://", 1)[1].split()[0])
    return urls
