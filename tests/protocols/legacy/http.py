"""HTTP/1.x message-head parser (RFC 9112), for requests and responses.

Reference copy of ``sensor/protocols/http.py`` as it was before that module was rewritten
for speed (only this paragraph and imports of sibling reference modules differ).
``tests/protocols/test_equivalence.py`` checks that the rewritten parser gives the same
result (or the same ParseError) on every input.

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

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION: Final = re.compile(rb"HTTP/1\.[0-9]")
_STATUS_LINE: Final = re.compile(rb"(HTTP/1\.[0-9]) ([0-9]{3})(?: (.*))?")
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_CTL: Final = re.compile(rb"[\x00-\x1f\x7f]")
_DIGITS: Final = re.compile(rb"[0-9]+")
# Content-Length beyond this many digits (an exabyte) is not a real body size.
_MAX_LENGTH_DIGITS: Final = 18
_OWS: Final = b" \t"


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
    lines, head_length = head
    method, target, version = _request_line(lines[0])
    fields = _header_fields(lines[1:])
    return HttpRequest(
        method=method,
        target=target,
        version=version,
        host=fields.get("host"),
        user_agent=fields.get("user-agent"),
        content_type=fields.get("content-type"),
        content_length=_content_length(fields),
        head_length=head_length,
        transfer_encoding=fields.get("transfer-encoding"),
    )


def parse_http_response(data: bytes, *, max_head: int = 8192) -> HttpResponse | None:
    """Parse the response head at the start of ``data``; ``None`` if it is not complete yet."""
    head = _find_head(data, max_head, _check_response_prefix)
    if head is None:
        return None
    lines, head_length = head
    version, status, reason = _status_line(lines[0])
    fields = _header_fields(lines[1:])
    return HttpResponse(
        version=version,
        status=status,
        reason=reason,
        server=fields.get("server"),
        content_type=fields.get("content-type"),
        content_length=_content_length(fields),
        location=fields.get("location"),
        head_length=head_length,
        transfer_encoding=fields.get("transfer-encoding"),
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
) -> tuple[list[bytes], int] | None:
    """Split the head into lines (without line ends) and return them with the head length."""
    match = _HEAD_END.search(data, 0, max_head)
    if match is None:
        if len(data) >= max_head:
            raise ParseError("HTTP head longer than the limit")
        check_prefix(data)  # reject non-HTTP bytes now instead of waiting for max_head
        return None
    head = data[: match.start()]
    lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
    return lines, match.end()


def _check_request_prefix(data: bytes) -> None:
    newline = data.find(b"\n")
    if newline >= 0:
        _request_line(data[:newline].removesuffix(b"\r"))
        return
    space = data.find(b" ")
    method = data if space < 0 else data[:space]
    if method and _TOKEN.fullmatch(method) is None:
        raise ParseError("HTTP request does not start with a method token")


def _check_response_prefix(data: bytes) -> None:
    newline = data.find(b"\n")
    if newline >= 0:
        _status_line(data[:newline].removesuffix(b"\r"))
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
    if _TOKEN.fullmatch(method) is None:
        raise ParseError("HTTP method is not a token")
    if not target or _CTL.search(target) is not None:
        raise ParseError("HTTP request-target is empty or has control bytes")
    if _VERSION.fullmatch(version) is None:
        raise ParseError("not an HTTP/1.x request")
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii")


def _status_line(line: bytes) -> tuple[str, int, str]:
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise ParseError("HTTP status line is not 'HTTP/1.x code reason'")
    reason = match.group(3) or b""
    return match.group(1).decode("ascii"), int(match.group(2)), reason.decode("latin-1")


def _header_fields(lines: list[bytes]) -> dict[str, str]:
    """Field name (lowercase) -> value of its first occurrence.

    Content-Length copies are joined with "," so ``_content_length`` can check they agree.
    """
    fields: dict[str, str] = {}
    seen_field = False
    fold_into: str | None = None  # the field a continuation line extends (None: ignored copy)
    for line in lines:  # bounded by the head size
        if line[:1] in (b" ", b"\t"):
            if not seen_field:
                raise ParseError("HTTP header continuation before any header")
            if fold_into is not None:
                folded = line.strip(_OWS).decode("latin-1")
                fields[fold_into] = f"{fields[fold_into]} {folded}".strip(" ")
            continue
        raw_name, colon, raw_value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(raw_name) is None:
            raise ParseError("malformed HTTP header line")
        seen_field = True
        name = raw_name.decode("ascii").lower()
        value = raw_value.strip(_OWS).decode("latin-1")
        if name not in fields:
            fields[name] = value
            fold_into = name
        elif name == "content-length":
            fields[name] = f"{fields[name]},{value}"
            fold_into = name
        else:
            fold_into = None  # first copy wins; ignore this one and its continuation lines
    return fields


def _content_length(fields: dict[str, str]) -> int | None:
    raw = fields.get("content-length")
    if raw is None:
        return None
    # "42, 42" (or two headers saying 42) is allowed; differing values are a smuggling attempt.
    values = {part.strip(" \t") for part in raw.split(",")}
    if len(values) != 1:
        raise ParseError("conflicting HTTP Content-Length values")
    value = values.pop().encode("latin-1")
    if _DIGITS.fullmatch(value) is None or len(value) > _MAX_LENGTH_DIGITS:
        raise ParseError("HTTP Content-Length is not a plausible number")
    return int(value)


def _skip_empty_line(data: bytes, pos: int) -> int:
    # RFC 9112 §2.2: a server should ignore an empty line before a request-line (some clients
    # send an extra CRLF after a body).
    for line_end in (b"\r\n", b"\n"):
        if data.startswith(line_end, pos):
            return pos + len(line_end)
    return pos
