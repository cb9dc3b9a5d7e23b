"""HTTP/1.x message-head parser (RFC 9112), for requests and responses.

Sans-IO: bytes in; a frozen head object out, ``None`` while the head is incomplete, or
``ParseError`` when the bytes are not HTTP/1.x. Only the head is parsed; bodies are skipped by
``parse_http_requests`` using Content-Length.

Leniency, chosen for a passive sensor that must not lose real traffic:

* Lines may end in "\\n" as well as "\\r\\n".
* The request-target is everything between the first and the last space of the request line
  (a client that sends a raw space in the path still yields a request).
* Obsolete line folding (a header line starting with a space or tab) is joined to the previous
  value with one space.
* Header values are decoded as latin-1 (RFC 9110 §5.5), so any control bytes survive as
  characters of a valid ``str``; escape them (``sensor.text.escape``) before display.

Strict where request smuggling lives: the field name must be a token directly followed by ":",
and Content-Length must be digits, with all copies agreeing.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mypy_extensions import i64

from sensor.frozen import picklable
from sensor.protocols.errors import ParseError

__all__ = [
    "HttpRequest",
    "HttpResponse",
    "looks_like_http_request",
    "looks_like_http_response",
    "parse_http_request",
    "parse_http_requests",
    "parse_http_response",
    "split_query",
]

_METHODS: Final = frozenset(
    {
        b"GET",
        b"HEAD",
        b"POST",
        b"PUT",
        b"DELETE",
        b"CONNECT",
        b"OPTIONS",
        b"TRACE",
        b"PATCH",
        # WebDAV (RFC 4918, RFC 3253), seen on file-sharing and update servers.
        b"PROPFIND",
        b"PROPPATCH",
        b"MKCOL",
        b"COPY",
        b"MOVE",
        b"LOCK",
        b"UNLOCK",
        b"SEARCH",
        b"REPORT",
    }
)
_LONGEST_METHOD: Final = max(len(m) for m in _METHODS)

_TOKEN_BYTES: Final = (
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_TOKEN: Final = re.compile(b"[" + re.escape(_TOKEN_BYTES) + b"]+")
# Byte -> 1 if it may appear in a token (a field name), else 0: a table the field scan indexes.
_IS_TOKEN: Final = bytes(1 if c in _TOKEN_BYTES else 0 for c in range(256))
# The end of a head: a line end and an empty line, "\n\r\n" or "\n\n", whichever comes first.
_HEAD_END: Final = re.compile(rb"\n\r?\n")
_VERSION: Final = re.compile(rb"HTTP/1\.[0-9]")
_STATUS_LINE: Final = re.compile(rb"(HTTP/1\.[0-9]) ([0-9]{3})(?: (.*))?")
_CTL: Final = re.compile(rb"[\x00-\x1f\x7f]")
# Content-Length beyond this many digits (an exabyte) is not a real body size.
_MAX_LENGTH_DIGITS: Final = 18
_OWS: Final = b" \t"
_FOLD_STARTS: Final = (b" ", b"\t")  # a header line starting so continues the one before
_COMMON_VERSIONS: Final = frozenset({b"HTTP/1.1", b"HTTP/1.0"})
# The only fields the head objects keep; other fields are checked but not decoded.
_KEPT_FIELDS: Final = frozenset(
    {
        b"host",
        b"user-agent",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
        b"server",
        b"location",
    }
)
# Name length -> the kept field of that length, or b"" (no two kept names share a length), so a
# line's name is compared with one candidate, in place.
_KEPT_BY_LENGTH: Final = tuple(
    next((name for name in _KEPT_FIELDS if len(name) == n), b"")
    for n in range(max(map(len, _KEPT_FIELDS)) + 1)
)


@dataclass(frozen=True, slots=True, init=False)
class HttpRequest:
    method: str
    target: str  # the request-target as sent, e.g. "/Bin/x.exe?h=a&p=1"
    version: str
    host: str | None
    user_agent: str | None
    content_type: str | None
    content_length: int | None
    head_length: int  # bytes up to and including the blank line
    transfer_encoding: str | None = None

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        host: str | None,
        user_agent: str | None,
        content_type: str | None,
        content_length: int | None,
        head_length: int,
        transfer_encoding: str | None = None,
    ) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "user_agent", user_agent)
        object.__setattr__(self, "content_type", content_type)
        object.__setattr__(self, "content_length", content_length)
        object.__setattr__(self, "head_length", head_length)
        object.__setattr__(self, "transfer_encoding", transfer_encoding)


@dataclass(frozen=True, slots=True, init=False)
class HttpResponse:
    version: str
    status: int
    reason: str
    server: str | None
    content_type: str | None
    content_length: int | None
    location: str | None
    head_length: int
    transfer_encoding: str | None = None

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        version: str,
        status: int,
        reason: str,
        server: str | None,
        content_type: str | None,
        content_length: int | None,
        location: str | None,
        head_length: int,
        transfer_encoding: str | None = None,
    ) -> None:
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "server", server)
        object.__setattr__(self, "content_type", content_type)
        object.__setattr__(self, "content_length", content_length)
        object.__setattr__(self, "location", location)
        object.__setattr__(self, "head_length", head_length)
        object.__setattr__(self, "transfer_encoding", transfer_encoding)


def looks_like_http_request(data: bytes) -> bool:
    """Cheap check: ``data`` starts with a known method followed by a space."""
    space = data.find(b" ", 0, _LONGEST_METHOD + 1)
    return space > 0 and data[:space] in _METHODS


def looks_like_http_response(data: bytes) -> bool:
    return data.startswith(b"HTTP/1.")


def parse_http_request(data: bytes, *, max_head: int = 8192) -> HttpRequest | None:
    """Parse the request head at the start of ``data``; ``None`` if it is not complete yet."""
    head = _find_head(data, max_head, _check_request_prefix)
    if head is None:
        return None
    start_line, field_lines, head_length = head
    method, target, version = _request_line(start_line)
    fields = _header_fields(field_lines)
    get = fields.get
    return HttpRequest(
        method=method,
        target=target,
        version=version,
        host=_latin1(get(b"host")),
        user_agent=_latin1(get(b"user-agent")),
        content_type=_latin1(get(b"content-type")),
        content_length=_content_length(get(b"content-length")),
        head_length=head_length,
        transfer_encoding=_latin1(get(b"transfer-encoding")),
    )


def parse_http_response(data: bytes, *, max_head: int = 8192) -> HttpResponse | None:
    """Parse the response head at the start of ``data``; ``None`` if it is not complete yet."""
    head = _find_head(data, max_head, _check_response_prefix)
    if head is None:
        return None
    start_line, field_lines, head_length = head
    version, status, reason = _status_line(start_line)
    fields = _header_fields(field_lines)
    get = fields.get
    return HttpResponse(
        version=version,
        status=status,
        reason=reason,
        server=_latin1(get(b"server")),
        content_type=_latin1(get(b"content-type")),
        content_length=_content_length(get(b"content-length")),
        location=_latin1(get(b"location")),
        head_length=head_length,
        transfer_encoding=_latin1(get(b"transfer-encoding")),
    )


def parse_http_requests(
    data: bytes, *, max_head: int = 8192, limit: int = 16
) -> tuple[HttpRequest, ...]:
    """Every complete request head at the start of a keep-alive (pipelined) stream.

    Bodies are skipped by Content-Length. Stops at ``limit`` requests, at a body framed by
    Transfer-Encoding (chunked), at an incomplete head or body, or at a malformed later request.
    Only a malformed *first* request raises ``ParseError``.
    """
    requests: list[HttpRequest] = []
    pos = 0
    while len(requests) < limit:  # bounded by ``limit``
        if requests:
            pos = _skip_empty_line(data, pos)
        try:
            # A head never extends past max_head bytes, so copy no more than that.
            request = parse_http_request(data[pos : pos + max_head], max_head=max_head)
        except ParseError:
            if not requests:
                raise
            break
        if request is None:
            break
        requests.append(request)
        if request.transfer_encoding is not None:
            break
        pos += request.head_length + (request.content_length or 0)
        if pos >= len(data):
            break
    return tuple(requests)


def split_query(target: str) -> tuple[str, dict[str, list[str]]]:
    """Split a request-target into its path and its query parameters.

    Parameters are decoded like a form (``+`` is a space, ``%xx`` as UTF-8 with replacement);
    blank values are kept. A fragment, which clients should not send, is dropped.
    """
    path, _, query = target.partition("?")
    query = query.partition("#")[0]
    return path, urllib.parse.parse_qs(query, keep_blank_values=True)


def _find_head(
    data: bytes, max_head: int, check_prefix: Callable[[bytes], None]
) -> tuple[bytes, bytes | None, int] | None:
    """The start line, the field lines and the head length of a complete head.

    The head ends at the first line end followed by an empty line: "\r\n\r\n", or the
    same with either CR missing. It must end within the first ``max_head`` bytes. The start line
    loses its line end. The field lines stay in one bytes object, each starting with "\n"
    (``None`` when the head is the start line alone); the CR before each "\n" is left for
    ``_header_fields`` to drop (the last line's is gone already).
    """
    end = _HEAD_END.search(data, 0, max_head)
    if end is None:
        if len(data) >= max_head:
            raise ParseError("HTTP head longer than the limit")
        check_prefix(data)  # reject non-HTTP bytes now instead of waiting for max_head
        return None
    newline = end.start()
    head_length = end.end()
    if newline and data[newline - 1] == 0x0D:  # the CR of the last line's end
        newline -= 1
    first_end = data.find(b"\n", 0, newline)
    if first_end < 0:
        return _without_cr(data[:newline]), None, head_length
    return _without_cr(data[:first_end]), data[first_end:newline], head_length


def _without_cr(line: bytes) -> bytes:
    """The line without the CR of its line end (one at most)."""
    return line[:-1] if line and line[-1] == 0x0D else line


def _check_request_prefix(data: bytes) -> None:
    newline = data.find(b"\n")
    if newline >= 0:
        _request_line(_without_cr(data[:newline]))
        return
    space = data.find(b" ")
    method = data if space < 0 else data[:space]
    if method and _TOKEN.fullmatch(method) is None:
        raise ParseError("HTTP request does not start with a method token")


def _check_response_prefix(data: bytes) -> None:
    newline = data.find(b"\n")
    if newline >= 0:
        _status_line(_without_cr(data[:newline]))
        return
    prefix = data[: len(b"HTTP/1.")]
    if not b"HTTP/1.".startswith(prefix):
        raise ParseError("HTTP response does not start with HTTP/1.")


def _request_line(line: bytes) -> tuple[str, str, str]:
    first = line.find(b" ")
    last = line.rfind(b" ")
    if first <= 0 or last == first:
        raise ParseError("HTTP request line is not 'method target version'")
    method, target, version = line[:first], line[first + 1 : last], line[last + 1 :]
    if method not in _METHODS and _TOKEN.fullmatch(method) is None:
        raise ParseError("HTTP method is not a token")
    if not target or _CTL.search(target) is not None:
        raise ParseError("HTTP request-target is empty or has control bytes")
    if version not in _COMMON_VERSIONS and _VERSION.fullmatch(version) is None:
        raise ParseError("not an HTTP/1.x request")
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii")


def _status_line(line: bytes) -> tuple[str, int, str]:
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise ParseError("HTTP status line is not 'HTTP/1.x code reason'")
    reason = match.group(3) or b""
    return match.group(1).decode("ascii"), int(match.group(2)), reason.decode("latin-1")


def _header_fields(lines: bytes | None) -> dict[bytes, bytes]:
    """Lowercase field name -> raw value of its first occurrence, for the kept fields only.

    ``lines`` are the field lines, each after a "\n" and with the CR of its line end, if any.
    Every line is checked, kept or not: a name of token bytes, then ":". (A CR is no token byte
    and any value byte, so a line passes the check with its CR exactly when it does without.)
    Content-Length copies are joined with "," so ``_content_length`` can check they agree.

    One pass over the bytes, compiled to a machine loop: twice as fast as a regular expression
    to check the lines and another to find the kept ones.
    """
    if lines is None:
        return {}
    fields: dict[bytes, bytes] = {}
    n: i64 = len(lines)
    start: i64 = 1  # the first byte of the current line (after its "\n")
    colon: i64 = -1  # the line's first ":", once its name has been read
    i: i64 = 1
    while i < n:  # bounded by the head size
        c = lines[i]
        if colon >= 0:
            if c == 0x0A:
                _keep_field(fields, lines, start, colon, i)
                start = i + 1
                colon = -1
        elif c == 0x3A and i > start:
            colon = i
        elif not _IS_TOKEN[c]:
            # Some line is not "name:value": a continuation line, or a malformed one.
            return _folded_header_fields(lines)
        i += 1
    if colon < 0:  # the last line has no ":" (or there is no line at all)
        return _folded_header_fields(lines)
    _keep_field(fields, lines, start, colon, n)
    return fields


def _keep_field(fields: dict[bytes, bytes], lines: bytes, start: i64, colon: i64, end: i64) -> None:
    """Add the field line ``lines[start:end]`` (its ":" at ``colon``) if it is a kept field."""
    length = colon - start
    if length >= len(_KEPT_BY_LENGTH):
        return
    name = _KEPT_BY_LENGTH[length]
    if not name:
        return
    i: i64 = 0
    while i < length:
        # ASCII case folding: the kept names are lowercase letters and "-", and the name is
        # token bytes only (so no CR, the one other byte that "| 0x20" turns into "-").
        if lines[start + i] | 0x20 != name[i]:
            return
        i += 1
    value = _without_cr(lines[colon + 1 : end]).strip(_OWS)
    if name not in fields:
        fields[name] = value
    elif name == b"content-length":
        fields[name] = b"%s,%s" % (fields[name], value)


def _folded_header_fields(lines: bytes) -> dict[bytes, bytes]:
    """``_header_fields`` one line at a time (``lines`` as it takes them), with obsolete line
    folding."""
    fields: dict[bytes, bytes] = {}
    fold_into: bytes | None = None  # the kept field a continuation line extends
    for index, raw_line in enumerate(lines.split(b"\n")[1:]):  # bounded by the head size
        line = _without_cr(raw_line)
        if line[:1] in _FOLD_STARTS:
            if index == 0:
                raise ParseError("HTTP header continuation before any header")
            if fold_into is not None:
                folded = b"%s %s" % (fields[fold_into], line.strip(_OWS))
                fields[fold_into] = folded.strip(b" ")
            continue
        raw_name, colon, raw_value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(raw_name) is None:
            raise ParseError("malformed HTTP header line")
        name = raw_name.lower()
        fold_into = None  # an ignored field, or a repeated one (the first copy wins)
        if name in _KEPT_FIELDS:
            if name not in fields:
                fields[name] = raw_value.strip(_OWS)
                fold_into = name
            elif name == b"content-length":
                fields[name] = b"%s,%s" % (fields[name], raw_value.strip(_OWS))
                fold_into = name
    return fields


def _latin1(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("latin-1")


def _content_length(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    if b"," in raw:
        # "42, 42" (or two headers saying 42) is allowed; differing values are smuggling.
        values = {part.strip(_OWS) for part in raw.split(b",")}
        if len(values) != 1:
            raise ParseError("conflicting HTTP Content-Length values")
        raw = values.pop()
    # bytes.isdigit() accepts ASCII digits only.
    if not raw.isdigit() or len(raw) > _MAX_LENGTH_DIGITS:
        raise ParseError("HTTP Content-Length is not a plausible number")
    return int(raw)


def _skip_empty_line(data: bytes, pos: int) -> int:
    # RFC 9112 §2.2: a server should ignore an empty line before a request-line (some clients
    # send an extra CRLF after a body).
    for line_end in (b"\r\n", b"\n"):
        if data.startswith(line_end, pos):
            return pos + len(line_end)
    return pos


picklable(HttpRequest, HttpResponse)
