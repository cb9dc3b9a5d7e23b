"""Tests for the HTTP/1.x head parser: real captures, RMM-like requests, pipelines, properties."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.protocols import http
from sensor.protocols.errors import ParseError
from sensor.protocols.http import (
    HttpRequest,
    HttpResponse,
    looks_like_http_request,
    looks_like_http_response,
    parse_http_request,
    parse_http_requests,
    parse_http_response,
    split_query,
)

CAPTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "captures"

Direction = tuple[bytes, int, bytes, int]  # src ip, src port, dst ip, dst port


def _tcp_streams(name: str) -> dict[Direction, bytes]:
    """Payload of each TCP direction in sequence order, up to its first gap (capture loss)."""
    segments: defaultdict[Direction, dict[int, bytes]] = defaultdict(dict)
    with (CAPTURES / name).open("rb") as handle:
        for _ts, frame in dpkt.pcap.UniversalReader(handle):
            ip = dpkt.ethernet.Ethernet(frame).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP) and ip.data.data:
                tcp = ip.data
                segments[(ip.src, tcp.sport, ip.dst, tcp.dport)].setdefault(tcp.seq, tcp.data)
    streams: dict[Direction, bytes] = {}
    for direction, by_seq in segments.items():
        parts: list[bytes] = []
        expected: int | None = None
        for seq in sorted(by_seq):
            if expected is not None and seq != expected:
                if seq > expected:
                    break  # a hole: later bytes would be misaligned
                continue  # an overlapping retransmission
            parts.append(by_seq[seq])
            expected = seq + len(by_seq[seq])
        streams[direction] = b"".join(parts)
    return streams


def _walk_responses(stream: bytes) -> list[HttpResponse]:
    responses: list[HttpResponse] = []
    pos = 0
    while pos < len(stream):
        response = parse_http_response(stream[pos:])
        if response is None:
            break
        responses.append(response)
        pos += response.head_length + (response.content_length or 0)
    return responses


# --- real captures ---------------------------------------------------------------------------


def test_bro_org_requests_and_responses() -> None:
    streams = _tcp_streams("bg-zeek-bro.org.pcap")
    requests = [
        r for d, s in streams.items() if d[3] == 80 for r in parse_http_requests(s, limit=64)
    ]
    assert len(requests) == 31  # tshark counts 31 requests in this capture
    assert {r.host for r in requests} == {"bro.org", "www.bro.org"}
    assert {(r.method, r.version, r.content_length) for r in requests} == {
        ("GET", "HTTP/1.1", None)
    }
    targets = {r.target for r in requests}
    assert {"/", "/css/pygments.css", "/downloads/release/binpac-0.41.tar.gz.asc"} <= targets
    assert all(r.user_agent and r.user_agent.startswith("Mozilla/5.0") for r in requests)

    responses = [r for d, s in streams.items() if d[1] == 80 for r in _walk_responses(s)]
    # One server direction has a capture hole; the 26 heads before it all line up by length.
    assert len(responses) == 26
    assert {(r.version, r.status, r.reason) for r in responses} == {("HTTP/1.1", 200, "OK")}
    assert {r.server for r in responses} == {"Apache/2.4.6 (Fedora)"}
    assert "text/html; charset=UTF-8" in {r.content_type for r in responses}
    assert all(r.content_length is not None and r.transfer_encoding is None for r in responses)


def test_windows_update_request_and_response() -> None:
    streams = _tcp_streams("bg-ndpi-windowsupdate_over_http.pcap")
    (client,) = [s for d, s in streams.items() if d[3] == 80]
    (server,) = [s for d, s in streams.items() if d[1] == 80]
    request = parse_http_request(client)
    assert request == HttpRequest(
        method="GET",
        target=(
            "/data/0783dedfb62fa709/msedge.b.tlu.dl.delivery.mp.microsoft.com/filestreamingservice"
            "/files/d1d060c0-7ece-4b96-9558-4bd0f2326040?P1=1652084683&P2=404&P3=2"
            "&P4=GtXnDMvssaTVZE%2bliGRNZPdTCGZcdK3lsfQhBycGI5on2dyQK7mRzg%2fAP%2fOuVTebtfWU%2b"
            "fL%2bVpkQ9bwhNwUDPA%3d%3d"
        ),
        version="HTTP/1.1",
        host="151.99.72.125",
        user_agent="Microsoft-Delivery-Optimization/10.0",
        content_type=None,
        content_length=0,
        head_length=len(client),
    )
    path, query = split_query(request.target)
    assert path.endswith("/files/d1d060c0-7ece-4b96-9558-4bd0f2326040")
    assert query["P2"] == ["404"]
    assert query["P4"] == [
        "GtXnDMvssaTVZE+liGRNZPdTCGZcdK3lsfQhBycGI5on2dyQK7mRzg/AP/OuVTebtfWU+fL+VpkQ9bwhNwUDPA=="
    ]
    response = parse_http_response(server)
    assert response is not None
    assert (response.status, response.reason, response.server) == (206, "Partial Content", "nginx")
    assert response.content_type == "application/octet-stream"
    assert response.content_length == 1048576
    assert server[response.head_length - 4 : response.head_length] == b"\r\n\r\n"


# --- RMM-like traffic built here -------------------------------------------------------------

SC_TARGET = (
    "/Bin/ScreenConnect.ClientSetup.exe?e=Access&y=Guest"
    "&h=instance-ab12cd-relay.screenconnect.com&p=443&k=BgIAAACkAABSU0ExAAgAAAEAAQ%2b"
)
SC_REQUEST = (
    f"GET {SC_TARGET} HTTP/1.1\r\n"
    "Host: acme.screenconnect.com\r\n"
    "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)\r\n"
    "Accept: */*\r\n"
    "\r\n"
).encode()
SC_RESPONSE = (
    b"HTTP/1.1 302 Found\r\n"
    b"Cache-Control: private\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Location: /Bin/ScreenConnect.ClientSetup.msi?e=Access&y=Guest\r\n"
    b"Server: ScreenConnect/19.2.24707.7131\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"moved"
)


def test_screenconnect_installer_request() -> None:
    request = parse_http_request(SC_REQUEST)
    assert request == HttpRequest(
        method="GET",
        target=SC_TARGET,
        version="HTTP/1.1",
        host="acme.screenconnect.com",
        user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        content_type=None,
        content_length=None,
        head_length=len(SC_REQUEST),
    )
    path, query = split_query(request.target)
    assert path == "/Bin/ScreenConnect.ClientSetup.exe"
    assert query == {
        "e": ["Access"],
        "y": ["Guest"],
        "h": ["instance-ab12cd-relay.screenconnect.com"],
        "p": ["443"],
        "k": ["BgIAAACkAABSU0ExAAgAAAEAAQ+"],
    }


def test_screenconnect_server_header() -> None:
    response = parse_http_response(SC_RESPONSE)
    assert response == HttpResponse(
        version="HTTP/1.1",
        status=302,
        reason="Found",
        server="ScreenConnect/19.2.24707.7131",
        content_type="text/html; charset=utf-8",
        content_length=5,
        location="/Bin/ScreenConnect.ClientSetup.msi?e=Access&y=Guest",
        head_length=len(SC_RESPONSE) - 5,
    )


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/", "/", {}),
        ("/a?", "/a", {}),
        ("/a?x", "/a", {"x": [""]}),
        ("/a?x=&y=2&x=3", "/a", {"x": ["", "3"], "y": ["2"]}),
        ("/a?q=hello+world%21", "/a", {"q": ["hello world!"]}),
        ("/a?q=%ff", "/a", {"q": ["\ufffd"]}),
        ("/a?q=1#frag", "/a", {"q": ["1"]}),
        ("/a?u=http://x/?y=1", "/a", {"u": ["http://x/?y=1"]}),
        ("*", "*", {}),
    ],
)
def test_split_query(target: str, path: str, query: dict[str, list[str]]) -> None:
    assert split_query(target) == (path, query)


# --- head parsing details --------------------------------------------------------------------


def test_bare_lf_line_ends() -> None:
    data = b"POST /api HTTP/1.0\nHost: h.example\nContent-Length: 3\n\nabc"
    request = parse_http_request(data)
    assert request is not None
    assert (request.method, request.version, request.content_length) == ("POST", "HTTP/1.0", 3)
    assert request.head_length == len(data) - 3


def test_header_names_case_insensitive_and_first_host_wins() -> None:
    data = (
        b"GET / HTTP/1.1\r\nhOsT:   first.example  \r\nHOST: second.example\r\n"
        b"user-AGENT:\tcurl/8.5.0\r\ncontent-type: application/json\r\n\r\n"
    )
    request = parse_http_request(data)
    assert request is not None
    assert request.host == "first.example"
    assert request.user_agent == "curl/8.5.0"
    assert request.content_type == "application/json"


def test_header_values_with_control_characters_are_valid_str() -> None:
    data = b"GET / HTTP/1.1\r\nUser-Agent: a\x1b[31mb\x00c\x7f\xff\xfe\rd\r\nHost: h\r\n\r\n"
    request = parse_http_request(data)
    assert request is not None
    assert request.user_agent == "a\x1b[31mb\x00c\x7f\xff\xfe\rd"
    assert request.user_agent.encode("utf-8")  # a valid str all the way


def test_latin1_target_and_values() -> None:
    data = b"GET /caf\xe9?q=\xff HTTP/1.1\r\nServer-Ish: \xe9t\xe9\r\n\r\n"
    request = parse_http_request(data)
    assert request is not None and request.target == "/caf\xe9?q=\xff"


def test_raw_space_in_target_is_kept() -> None:
    request = parse_http_request(b"GET /a b.txt HTTP/1.1\r\n\r\n")
    assert request is not None and request.target == "/a b.txt"


def test_obsolete_line_folding() -> None:
    data = b"GET / HTTP/1.1\r\nUser-Agent: part one\r\n\tpart two\r\nHost: h\r\n \r\n\r\n"
    request = parse_http_request(data)
    assert request is not None
    assert request.user_agent == "part one part two"
    assert request.host == "h"


@pytest.mark.parametrize(
    ("headers", "length"),
    [
        (b"Content-Length: 0\r\n", 0),
        (b"Content-Length: 42\r\n", 42),
        (b"Content-Length:42\r\n", 42),
        (b"Content-Length: 42, 42\r\n", 42),
        (b"Content-Length: 42\r\nContent-Length: 42\r\n", 42),
        (b"Content-Length: 000000000000000007\r\n", 7),
        (b"", None),
    ],
)
def test_content_length(headers: bytes, length: int | None) -> None:
    response = parse_http_response(b"HTTP/1.1 200 OK\r\n" + headers + b"\r\n")
    assert response is not None and response.content_length == length


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"HTTP/1.1 200 OK", ("HTTP/1.1", 200, "OK")),
        (b"HTTP/1.0 404 Not Found", ("HTTP/1.0", 404, "Not Found")),
        (b"HTTP/1.1 204 ", ("HTTP/1.1", 204, "")),
        (b"HTTP/1.1 204", ("HTTP/1.1", 204, "")),
        (b"HTTP/1.1 500 Fehler \xfc", ("HTTP/1.1", 500, "Fehler \xfc")),
    ],
)
def test_status_lines(line: bytes, expected: tuple[str, int, str]) -> None:
    response = parse_http_response(line + b"\r\n\r\n")
    assert response is not None
    assert (response.version, response.status, response.reason) == expected


BAD_REQUESTS = {
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "http-0.9": b"GET /\r\n\r\n",
    "no-version": b"GET / \r\n\r\n",
    "lowercase-version": b"GET / http/1.1\r\n\r\n",
    "http-2-version": b"GET / HTTP/2\r\n\r\n",
    "empty-target": b"GET  HTTP/1.1\r\n\r\n",
    "method-not-token": b"G(T / HTTP/1.1\r\n\r\n",
    "ctl-in-target": b"GET /\x01 HTTP/1.1\r\n\r\n",
    "leading-blank-line": b"\r\nGET / HTTP/1.1\r\n\r\n",
    "header-without-colon": b"GET / HTTP/1.1\r\nHost h\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "empty-header-name": b"GET / HTTP/1.1\r\n: h\r\n\r\n",
    "fold-before-any-header": b"GET / HTTP/1.1\r\n folded\r\n\r\n",
    "content-length-letters": b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
    "content-length-negative": b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "content-length-empty": b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
    "content-length-huge": b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    "content-length-conflict": b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "content-length-list-conflict": b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
    "bad-first-line-head-incomplete": b"GET / FTP/1.0\r\nHost: still-coming",
}


@pytest.mark.parametrize("data", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_requests(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_http_request(data, max_head=16384)


BAD_RESPONSES = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
    "http2": b"HTTP/2 200\r\n\r\n",
    "two-digit-status": b"HTTP/1.1 20 OK\r\n\r\n",
    "letters-in-status": b"HTTP/1.1 2OO OK\r\n\r\n",
    "no-space": b"HTTP/1.1200 OK\r\n\r\n",
    "bad-header": b"HTTP/1.1 200 OK\r\nServer nginx\r\n\r\n",
    "partial-prefix-mismatch": b"HTTP/2",
}


@pytest.mark.parametrize("data", list(BAD_RESPONSES.values()), ids=list(BAD_RESPONSES))
def test_bad_responses(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_http_response(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"G",
        b"GET",
        b"GET /index.html HTTP/1.",
        b"GET / HTTP/1.1\r",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: a",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        b"GET / HTTP/1.1\nHost: a\n",
    ],
)
def test_incomplete_requests(data: bytes) -> None:
    assert parse_http_request(data) is None


@pytest.mark.parametrize("data", [b"", b"H", b"HTTP/1.", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 2"])
def test_incomplete_responses(data: bytes) -> None:
    assert parse_http_response(data) is None


def test_max_head() -> None:
    head = b"GET / HTTP/1.1\r\nCookie: " + b"c" * 100 + b"\r\n\r\n"
    assert parse_http_request(head, max_head=len(head)) is not None
    with pytest.raises(ParseError, match="longer"):
        parse_http_request(head, max_head=len(head) - 1)
    assert parse_http_request(head[:50], max_head=len(head) - 1) is None
    with pytest.raises(ParseError, match="longer"):
        parse_http_request(head[:-2] + b"x" * 9000)  # default limit 8192, never terminated


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.1", True),
        (b"POST /x", True),
        (b"PROPFIND / ", True),
        (b"OPTIONS * HTTP/1.1", True),
        (b"GET", False),
        (b"get / HTTP/1.1", False),
        (b"GETX / HTTP/1.1", False),
        (b" GET /", False),
        (b"\x16\x03\x01", False),
        (b"HTTP/1.1 200 OK", False),
    ],
)
def test_looks_like_http_request(data: bytes, expected: bool) -> None:
    assert looks_like_http_request(data) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"HTTP/1.1 200 OK", True),
        (b"HTTP/1.0 404", True),
        (b"HTTP/2 200", False),
        (b"HTTP/1", False),
        (b"GET / HTTP/1.1", False),
        (b"", False),
    ],
)
def test_looks_like_http_response(data: bytes, expected: bool) -> None:
    assert looks_like_http_response(data) is expected


# --- keep-alive pipelines --------------------------------------------------------------------


def _req(method: str, target: str, body: bytes = b"", extra: str = "") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {target} HTTP/1.1\r\nHost: p.example\r\n{extra}{length}\r\n".encode() + body


def test_pipeline_with_bodies() -> None:
    stream = (
        _req("POST", "/Services/PageService.ashx", b'{"a":"GET / HTTP/1.1\\r\\n\\r\\n"}')
        + _req("GET", "/Host")
        + b"\r\n"  # a stray CRLF after a request is ignored
        + _req("POST", "/form", b"x=1&y=2", "Content-Type: application/x-www-form-urlencoded\r\n")
        + _req("GET", "/last")
    )
    requests = parse_http_requests(stream)
    assert [(r.method, r.target) for r in requests] == [
        ("POST", "/Services/PageService.ashx"),
        ("GET", "/Host"),
        ("POST", "/form"),
        ("GET", "/last"),
    ]
    assert requests[2].content_type == "application/x-www-form-urlencoded"
    assert requests[2].content_length == 7


@pytest.mark.parametrize(
    ("stream", "targets"),
    [
        pytest.param(b"", [], id="empty"),
        pytest.param(_req("GET", "/a")[:-1], [], id="first-incomplete"),
        pytest.param(_req("GET", "/a") + _req("GET", "/b")[:10], ["/a"], id="second-incomplete"),
        pytest.param(
            # The claimed length runs 4 bytes into the next request, which then starts at "/b".
            b"POST /a HTTP/1.1\r\nContent-Length: 8\r\n\r\nbody" + _req("GET", "/b"),
            ["/a"],
            id="misframed",
        ),
        pytest.param(
            _req("POST", "/a", b"0123456789")[:-3], ["/a"], id="body-incomplete-stops-quietly"
        ),
        pytest.param(
            _req("POST", "/up", extra="Transfer-Encoding: chunked\r\n")
            + b"5\r\nhello\r\n0\r\n\r\n"
            + _req("GET", "/never"),
            ["/up"],
            id="chunked-stops",
        ),
        pytest.param(_req("GET", "/a") + b"\x16\x03\x01garbage\r\n\r\n", ["/a"], id="junk-after"),
        pytest.param(_req("GET", "/a") * 20, ["/a"] * 16, id="limit"),
    ],
)
def test_pipeline_stops(stream: bytes, targets: list[str]) -> None:
    assert [r.target for r in parse_http_requests(stream)] == targets


def test_pipeline_chunked_transfer_encoding_is_reported() -> None:
    (request,) = parse_http_requests(
        _req("POST", "/up", extra="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n"
    )
    assert request.transfer_encoding == "chunked"
    assert request.content_length is None


def test_pipeline_limit_argument() -> None:
    assert len(parse_http_requests(_req("GET", "/a") * 5, limit=3)) == 3


def test_pipeline_bad_first_request_raises() -> None:
    with pytest.raises(ParseError):
        parse_http_requests(b"\x16\x03\x01\x00\x05hello")


# --- properties ------------------------------------------------------------------------------

_WU_STREAMS = _tcp_streams("bg-ndpi-windowsupdate_over_http.pcap")
_BRO_STREAMS = _tcp_streams("bg-zeek-bro.org.pcap")
REAL_REQUESTS = [*[s for d, s in _WU_STREAMS.items() if d[3] == 80], SC_REQUEST]
REAL_RESPONSES = [*[s[:2000] for d, s in _BRO_STREAMS.items() if d[1] == 80][:3], SC_RESPONSE]


def _request_outcome(data: bytes, max_head: int = 8192) -> HttpRequest | None:
    try:
        result = parse_http_request(data, max_head=max_head)
    except ParseError:
        return None
    if result is not None:
        assert isinstance(result, HttpRequest)
        assert 0 < result.head_length <= min(len(data), max_head)
    return result


def _response_outcome(data: bytes, max_head: int = 8192) -> HttpResponse | None:
    try:
        result = parse_http_response(data, max_head=max_head)
    except ParseError:
        return None
    if result is not None:
        assert isinstance(result, HttpResponse)
        assert 0 < result.head_length <= min(len(data), max_head)
    return result


@pytest.mark.parametrize("data", REAL_REQUESTS, ids=["windowsupdate", "screenconnect"])
def test_every_truncation_of_a_real_request_needs_more(data: bytes) -> None:
    full = parse_http_request(data)
    assert full is not None
    for cut in range(full.head_length):
        assert parse_http_request(data[:cut]) is None
    for cut in range(full.head_length, len(data) + 1):
        assert parse_http_request(data[:cut]) == full


@pytest.mark.parametrize("data", REAL_RESPONSES, ids=lambda d: repr(d[:12]))
def test_every_truncation_of_a_real_response_needs_more(data: bytes) -> None:
    full = parse_http_response(data)
    assert full is not None
    for cut in range(full.head_length):
        assert parse_http_response(data[:cut]) is None
    assert parse_http_response(data[: full.head_length]) == full


@given(st.binary(max_size=400), st.integers(1, 512))
def test_random_bytes(data: bytes, max_head: int) -> None:
    _request_outcome(data, max_head)
    _response_outcome(data, max_head)
    try:
        requests = parse_http_requests(data, max_head=max_head)
    except ParseError:
        return
    assert all(isinstance(r, HttpRequest) for r in requests)


@given(
    st.sampled_from(["GET", "POST", "HEAD"]),
    st.binary(max_size=60),
    st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=5),
)
def test_random_heads_behind_a_plausible_request_line(
    method: str, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    head = method.encode() + b" /" + target + b" HTTP/1.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    result = _request_outcome(head + b"\r\n")
    if result is not None:
        assert result.method == method


@settings(max_examples=300)
@given(
    st.sampled_from([*REAL_REQUESTS, *REAL_RESPONSES]), st.lists(st.integers(0, 10**6), max_size=6)
)
def test_bit_flips_of_real_messages(data: bytes, flips: list[int]) -> None:
    mutated = bytearray(data)
    for flip in flips:
        mutated[(flip // 8) % len(mutated)] ^= 1 << (flip % 8)
    _request_outcome(bytes(mutated))
    _response_outcome(bytes(mutated))


@given(st.text(st.characters(codec=None, exclude_categories=())))
def test_split_query_accepts_any_text(target: str) -> None:
    path, query = split_query(target)
    assert target.startswith(path)
    assert all(isinstance(v, list) for v in query.values())


# --- the field-line scan against a plain statement of the rule --------------------------------

_FIELD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\n]*")
_KEPT = (b"host", b"user-agent", b"content-type", b"content-length", b"transfer-encoding",
         b"server", b"location")  # fmt: skip


def fields_by_rule(lines: bytes) -> dict[bytes, bytes]:
    """The rule ``_header_fields`` implements, line by line: when every line is "name:value"
    with a token name, each kept field's first value (Content-Length copies joined); otherwise
    the folding parser decides."""
    split = lines.split(b"\n")[1:]
    if not all(_FIELD_LINE.fullmatch(line) for line in split):
        return http._folded_header_fields(lines)
    fields: dict[bytes, bytes] = {}
    for line in split:
        name, _, value = line.partition(b":")
        name = name.lower()
        value = http._without_cr(value).strip(b" \t")
        if name in _KEPT and name not in fields:
            fields[name] = value
        elif name == b"content-length":
            fields[name] += b"," + value
    return fields


def outcome(parse: Callable[[bytes], dict[bytes, bytes]], lines: bytes) -> object:
    try:
        return parse(lines)
    except ParseError as exc:
        return str(exc)


_PIECES = [b"\n", b"\r", b"\r\n", b":", b": ", b" ", b"\t", b"Host", b"HOST", b"host",
           b"Content-Length", b"content-length", b"Server", b"Location", b"User-Agent",
           b"Transfer-Encoding", b"Content-Type", b"Accept", b"X-Id", b"h", b"s", b"c", b"l",
           b"-", b"@", b"\x00", b"\xff", b"7", b"a.example"]  # fmt: skip


@settings(max_examples=1500)
@given(st.lists(st.sampled_from(_PIECES), max_size=16), st.binary(max_size=8))
def test_field_scan_follows_the_rule(pieces: list[bytes], tail: bytes) -> None:
    lines = b"\n" + b"".join(pieces) + tail
    assert outcome(http._header_fields, lines) == outcome(fields_by_rule, lines)


@pytest.mark.parametrize("data", [*REAL_REQUESTS, *REAL_RESPONSES])
def test_field_scan_follows_the_rule_on_real_heads(data: bytes) -> None:
    end = data.find(b"\r\n\r\n")
    first = data.find(b"\n")
    assert 0 < first < end
    lines = data[first:end]
    assert outcome(http._header_fields, lines) == outcome(fields_by_rule, lines)


@given(st.sampled_from(_KEPT), st.lists(st.booleans(), min_size=17, max_size=17))
def test_each_kept_field_is_read_in_any_case(name: bytes, upper: list[bool]) -> None:
    cases = upper[: len(name)]
    spelled = bytes(
        c - 0x20 if up and 0x61 <= c <= 0x7A else c for c, up in zip(name, cases, strict=True)
    )
    lines = b"\nAccept: */*\r\n" + spelled + b": \tvalue 1 \r\nX-Other: 2"
    assert http._header_fields(lines) == {name: b"value 1"}
    # One byte off (a letter for another, a hyphen for an underscore) is another field.
    for i in range(len(name)):
        other = spelled[:i] + (b"_" if spelled[i] == 0x2D else b"q") + spelled[i + 1 :]
        if other.lower() != name:
            assert http._header_fields(b"\n" + other + b": v") == {}
