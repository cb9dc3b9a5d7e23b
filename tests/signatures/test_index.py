"""The compiled signature index: each operator, the lookups it is filed under, and matching."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.model import DnsSummary, FlowRecord, HttpSummary, TlsSummary
from sensor.protocols.dns import DnsQuestion
from sensor.protocols.http import HttpRequest, HttpResponse
from sensor.protocols.tls import ClientHello
from sensor.protocols.x509 import CertSummary
from sensor.signatures.index import Decoded, Decoder, SignatureIndex
from sensor.signatures.schema import load_tool_file

HEAD = "tool: demo\nsignatures:\n"


def build(
    signatures: Mapping[str, str], decoders: Mapping[str, Decoder] | None = None
) -> SignatureIndex:
    """An index of one file; ``signatures`` maps id -> the lines under ``match:``."""
    text = HEAD
    for sig_id, match in signatures.items():
        body = "".join(f"      {line.strip()}\n" for line in match.strip().splitlines())
        text += f"  - id: {sig_id}\n    channel: relay\n    confidence: high\n    match:\n{body}"
    return SignatureIndex([load_tool_file("demo.yaml", text)], decoders or {})


def flow(**fields: Any) -> FlowRecord:
    base: dict[str, Any] = dict(
        flow_id=1, proto=6, src_ip="10.20.0.41", src_port=50000, dest_ip="203.0.113.9",
        dest_port=443, start_ns=0, end_ns=1, pkts_toserver=3,
        pkts_toclient=3, bytes_toserver=300, bytes_toclient=300, tcp_flags_ts=0x1B,
        tcp_flags_tc=0x1B, syn_seen=True, end_reason="closed", app_proto="unknown",
        first_speaker="", client_head=b"", server_head=b"", client_first_size=0,
        server_first_size=0,
    )  # fmt: skip
    base.update(fields)
    return FlowRecord(**base)


def cert(subject: str, issuer: str | None = None) -> CertSummary:
    return CertSummary(subject, issuer or subject, "01", None, None, "aa:bb", "aabb", None)


def hello(*ciphers: int) -> ClientHello:
    """A TLS 1.2 ClientHello offering ``ciphers`` (its JA4 differs with them)."""
    return ClientHello(0x0301, 0x0303, (), None, (), ciphers, (0, 10, 11, 13, 16), (0x0401,),
                       (23,), ())  # fmt: skip


HELLO = hello(0xC02C, 0xC030)
OTHER_HELLO = hello(0x1301)


def tls(
    sni: str | None = None,
    *,
    alpn: tuple[str, ...] = (),
    client_hello: ClientHello | None = HELLO,
    server: tuple[CertSummary, ...] = (),
    client: tuple[CertSummary, ...] = (),
) -> TlsSummary:
    return TlsSummary(sni, (0x0303,), 0x0303, alpn, None, client_hello, 0xC02C, client, server,
                      bool(client))  # fmt: skip


def dns(*names: str) -> DnsSummary:
    return DnsSummary(tuple(DnsQuestion(n, 1) for n in names), (), (0,))


def request(target: str = "/", host: str | None = None, agent: str | None = None) -> HttpRequest:
    return HttpRequest("GET", target, "HTTP/1.1", host, agent, None, None, 64)


def http(*requests: HttpRequest, server: str | None = None) -> HttpSummary:
    response = HttpResponse("HTTP/1.1", 200, "OK", server, None, 0, None, 64) if server else None
    return HttpSummary(tuple(requests), response)


def ids(index: SignatureIndex, record: FlowRecord) -> list[str]:
    return [m.signature.id for m in index.match(record)]


# --------------------------------------------------------------------------------------------
# Names: suffix on label boundaries, equals, regex; for DNS, SNI and HTTP Host alike

NAMES = build(
    {
        "demo-suffix": "dns.query: {suffix: anydesk.com}",
        "demo-deep": "dns.query: {suffix: net.anydesk.com}",
        "demo-equals": "dns.query: {equals: control.connectwise.com}",
        "demo-regex": r"dns.query: {regex: '^instance-[a-z0-9]+-relay\.screenconnect\.com$'}",
    }
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("anydesk.com", ["demo-suffix"]),
        ("www.anydesk.com", ["demo-suffix"]),
        ("relay-1.net.anydesk.com", ["demo-suffix", "demo-deep"]),
        ("net.anydesk.com", ["demo-suffix", "demo-deep"]),
        ("NET.AnyDesk.com.", ["demo-suffix", "demo-deep"]),  # case and the root dot
        ("notanydesk.com", []),
        ("anydesk.com.example.net", []),
        ("anydesk.co", []),
        ("xnet.anydesk.com", ["demo-suffix"]),
        ("anydesk", []),
        ("com", []),
        ("control.connectwise.com", ["demo-equals"]),
        ("x.control.connectwise.com", []),
        ("instance-ab12cd-relay.screenconnect.com", ["demo-regex"]),
        ("Instance-AB12CD-relay.ScreenConnect.com", ["demo-regex"]),
        ("instance-ab12cd-relay.screenconnect.com.evil.test", []),
        ("instance--relay.screenconnect.com", []),
        ("", []),
    ],
)
def test_dns_names(name: str, expected: list[str]) -> None:
    assert ids(NAMES, flow(proto=17, dns=dns(name))) == expected


def test_any_query_of_a_message_can_match() -> None:
    record = flow(proto=17, dns=dns("example.org", "relay-1.net.anydesk.com"))
    (m, _) = NAMES.match(record)
    assert (m.signature.id, m.field, m.value) == (
        "demo-suffix", "dns.query", "relay-1.net.anydesk.com",
    )  # fmt: skip


SNI_HOST = build(
    {
        "demo-sni": "tls.sni: {suffix: screenconnect.com}",
        "demo-sni-rx": "tls.sni: {regex: '^ACME\\.'}",  # names compare case-insensitively
        "demo-host": "http.host: {suffix: anydesk.com}",
    }
)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (flow(tls=tls("acme.screenconnect.com")), ["demo-sni", "demo-sni-rx"]),
        (flow(tls=tls("ACME.example")), ["demo-sni-rx"]),
        (flow(tls=tls("screenconnect.com.evil.test")), []),
        (flow(tls=tls("myscreenconnect.com")), []),
        (flow(tls=tls(None)), []),
        (flow(tls=tls("acme.screenconnect.com", client_hello=None)), []),  # no ClientHello seen
        (flow(http=http(request(host="download.anydesk.com:8080"))), ["demo-host"]),
        (flow(http=http(request(host="Download.AnyDesk.com"))), ["demo-host"]),
        (flow(http=http(request(host="notanydesk.com"))), []),
        (flow(http=http(request(host=None))), []),
        (flow(http=http(request(host="x.example"), request(host="anydesk.com"))), ["demo-host"]),
    ],
)
def test_sni_and_http_host(record: FlowRecord, expected: list[str]) -> None:
    assert ids(SNI_HOST, record) == expected


# --------------------------------------------------------------------------------------------
# Prefixes of several lengths, equals, contains, regex on text fields

TEXT = build(
    {
        "demo-any": "http.user_agent: {prefix: Any}",
        "demo-anydesk": "http.user_agent: {prefix: AnyDesk/}",
        "demo-anydesk7": "http.user_agent: {prefix: [AnyDesk/7., AnyDesk/8.]}",
        "demo-server": "http.server: {prefix: ScreenConnect/}",
        "demo-ua-rx": "http.user_agent: {regex: '^Mozilla/.*AnyDesk'}",
        "demo-alpn": "tls.alpn: {prefix: anydesk/}",
        "demo-alpn-eq": "tls.alpn: {equals: h2}",
        "demo-ja4": f"tls.ja4: {{equals: {HELLO.ja4}}}",
    }
)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (flow(http=http(request(agent="AnyDesk/7.1.0"))),
         ["demo-any", "demo-anydesk", "demo-anydesk7"]),
        (flow(http=http(request(agent="AnyDesk/6.2.0"))), ["demo-any", "demo-anydesk"]),
        (flow(http=http(request(agent="AnyDesk"))), ["demo-any"]),
        (flow(http=http(request(agent="Anything"))), ["demo-any"]),
        (flow(http=http(request(agent="anydesk/7.1.0"))), []),  # not a name: case matters
        (flow(http=http(request(agent="An"))), []),
        (flow(http=http(request(agent="Mozilla/5.0 AnyDesk"))), ["demo-ua-rx"]),
        (flow(http=http(request(agent="Mozilla/5.0 anydesk"))), []),
        (flow(http=http(request(), server="ScreenConnect/23.9.8.8811")), ["demo-server"]),
        (flow(http=http(request(), server="Microsoft-IIS/10.0 ScreenConnect/1")), []),
        (flow(tls=tls(alpn=("h2", "anydesk/7.1.0/windows"), client_hello=None)),
         ["demo-alpn", "demo-alpn-eq"]),
        (flow(tls=tls(alpn=("anydesk/7.1.0/windows",))), ["demo-alpn", "demo-ja4"]),
        (flow(tls=tls(alpn=("h2", "http/1.1"))), ["demo-alpn-eq", "demo-ja4"]),
        (flow(tls=tls(alpn=("h2c",), client_hello=OTHER_HELLO)), []),
    ],
)  # fmt: skip
def test_text_fields(record: FlowRecord, expected: list[str]) -> None:
    assert ids(TEXT, record) == expected


def test_alpn_is_read_from_the_offer_even_without_ja4() -> None:
    """ALPN values come from the offer even when the summary holds no ClientHello object."""
    index = build({"demo-alpn": "tls.alpn: {prefix: anydesk/}"})
    got = index.match(flow(tls=tls(alpn=("h2", "anydesk/7.1.0/windows"), client_hello=None)))
    assert [(m.field, m.value) for m in got] == [("tls.alpn", "anydesk/7.1.0/windows")]


CERTS = build(
    {
        "demo-relay": "tls.server_cert.subject: {contains: CN=AnyNet Relay}",
        "demo-root": "tls.server_cert.issuer: {contains: [CN=AnyNet Root CA, CN=Other Root]}",
        "demo-client": "tls.client_cert.subject: {equals: CN=AnyDesk Client}",
        "demo-client-rx": "tls.client_cert.issuer: {regex: '^CN=AnyDesk Client$'}",
    }
)
RELAY_SUBJECT = "C=DE, O=philandro Software GmbH, CN=AnyNet Relay"
ROOT_SUBJECT = "C=DE, O=philandro Software GmbH, CN=AnyNet Root CA"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (flow(tls=tls(server=(cert(RELAY_SUBJECT, ROOT_SUBJECT), cert(ROOT_SUBJECT)))),
         ["demo-relay", "demo-root"]),
        (flow(tls=tls(server=(cert("CN=intranet.example", "CN=Intranet CA"),))), []),
        (flow(tls=tls(server=(cert("CN=anynet relay"),))), []),  # contains is case-sensitive
        (flow(tls=tls(client=(cert("CN=AnyDesk Client"),))), ["demo-client", "demo-client-rx"]),
        (flow(tls=tls(client=(cert("CN=AnyDesk Client, O=x"),))), []),
        (flow(tls=tls(client=(cert(RELAY_SUBJECT),))), []),  # the client side is separate
        (flow(tls=tls(server=(cert("CN=AnyDesk Client"),))), []),
    ],
)  # fmt: skip
def test_certificate_fields(record: FlowRecord, expected: list[str]) -> None:
    assert ids(CERTS, record) == expected


def test_certificate_evidence_value_is_the_whole_field() -> None:
    (m,) = CERTS.match(flow(tls=tls(server=(cert(RELAY_SUBJECT, "CN=x"),))))
    assert (m.signature.id, m.field, m.value) == (
        "demo-relay", "tls.server_cert.subject", RELAY_SUBJECT,
    )  # fmt: skip


def test_certificate_without_a_subject_is_skipped() -> None:
    broken = dataclasses.replace(cert("x"), subject=None, issuer=None, error="bad DER")
    assert ids(CERTS, flow(tls=tls(server=(broken, cert(RELAY_SUBJECT))))) == ["demo-relay"]


# --------------------------------------------------------------------------------------------
# HTTP path and query keys

HTTP = build(
    {
        "demo-installer": r"""
            http.path: {regex: '(?i)^/Bin/[^/]*\.ClientSetup\.exe$'}
            http.query: {has: [h, p, k]}
        """,
        "demo-path": "http.path: {prefix: /Host}",
        "demo-exact": "http.path: {equals: /AnyDesk.exe}",
    }
)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (["/Bin/ScreenConnect.ClientSetup.exe?e=Access&h=a.example&p=8041&k=BgIAAA"],
         ["demo-installer"]),
        (["/bin/x.clientsetup.EXE?k=1&p=2&h=3&c=&c="], ["demo-installer"]),
        (["/Bin/ScreenConnect.ClientSetup.exe?h=a&p=8041"], []),
        (["/Bin/ScreenConnect.ClientSetup.exe?h=a&p=8041", "/Bin/x.ClientSetup.exe?k=z"], []),
        (["/Bin/ScreenConnect.ClientSetup.exe"], []),
        (["/Bin/sub/ScreenConnect.ClientSetup.exe?h=a&p=1&k=z"], []),
        (["/Host", "/Host#x"], ["demo-path"]),
        (["/Hostile?x=1"], ["demo-path"]),
        (["/AnyDesk.exe?x=1"], ["demo-exact"]),
        (["/AnyDesk.exe.sig"], []),
    ],
)  # fmt: skip
def test_http_path_and_query(targets: list[str], expected: list[str]) -> None:
    record = flow(http=http(*(request(t, host="h.example") for t in targets)))
    assert ids(HTTP, record) == expected


def test_query_evidence_names_the_keys() -> None:
    index = build({"demo-q": "http.query: {has: [h, k]}\nhttp.path: {prefix: /}"})
    (m,) = index.match(flow(http=http(request("/x?k=1&h=2"))))
    assert (m.field, m.value) == ("http.path", "/x")


# --------------------------------------------------------------------------------------------
# Ports, port ranges, protocol, first speaker, first sizes

PORTS = build(
    {
        "demo-7070": "dest_port: {in: [7070]}",
        "demo-disc": "dest_port: {in: ['50001-50003']}\nproto: {equals: udp}",
        "demo-wide": "dest_port: {in: ['1024-65535']}\nfirst_speaker: {equals: server}",
        "demo-size": """
            dest_port: {in: [8041, 443]}
            first_size.client: {range: {min: 16, max: 599}}
            first_speaker: {equals: client}
        """,
    }
)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"dest_port": 7070}, ["demo-7070"]),
        ({"dest_port": 7071}, []),
        ({"dest_port": 50000, "proto": 17}, []),
        ({"dest_port": 50001, "proto": 17}, ["demo-disc"]),
        ({"dest_port": 50003, "proto": 17}, ["demo-disc"]),
        ({"dest_port": 50004, "proto": 17}, []),
        ({"dest_port": 50002, "proto": 6}, []),
        ({"dest_port": 1023, "first_speaker": "server"}, []),
        ({"dest_port": 1024, "first_speaker": "server"}, ["demo-wide"]),
        ({"dest_port": 65535, "first_speaker": "server"}, ["demo-wide"]),
        ({"dest_port": 7070, "first_speaker": "server"}, ["demo-7070", "demo-wide"]),
        ({"dest_port": 8041, "first_speaker": "client", "client_first_size": 16}, ["demo-size"]),
        ({"dest_port": 443, "first_speaker": "client", "client_first_size": 599}, ["demo-size"]),
        ({"dest_port": 443, "first_speaker": "client", "client_first_size": 600}, []),
        ({"dest_port": 443, "first_speaker": "client", "client_first_size": 15}, []),
        ({"dest_port": 443, "first_speaker": "client", "client_first_size": 0}, []),
        ({"dest_port": 443, "first_speaker": "", "client_first_size": 100}, []),
    ],
)
def test_ports_ranges_and_flow_facts(fields: dict[str, Any], expected: list[str]) -> None:
    assert ids(PORTS, flow(**fields)) == expected


# --------------------------------------------------------------------------------------------
# Payload patterns: ?? wildcards, XX*N repeats, escaping, offset and depth

M1 = bytes.fromhex("87151000") + bytes(12)
PATTERNS = build(
    {
        "demo-87": "payload.client: {pattern: '87 ?? 10 00 00*12'}",
        "demo-legacy": "payload.client: {pattern: '73 10 00*16', depth: 10}",
        "demo-magic": "payload.client: {pattern: '?? d1 01'}",
        "demo-meta": "payload.server: {pattern: '2e 2a 5c 0a'}",  # . * \\ newline, literally
        "demo-window": "payload.server: {pattern: 'aa bb', offset: 2, depth: 3}",
    }
)


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        (M1 + b"rest", b"", ["demo-87"]),
        (bytes.fromhex("871c1000") + bytes(12), b"", ["demo-87"]),
        (bytes.fromhex("870a1000") + bytes(12), b"", ["demo-87"]),  # a newline under ??
        (bytes.fromhex("87151000") + bytes(11), b"", []),  # one zero short
        (bytes.fromhex("87151000") + bytes(11) + b"\x01", b"", []),
        (b"\x00" + M1, b"", []),  # patterns without depth are anchored at the offset
        (b"\x73\x10" + bytes(16), b"", ["demo-legacy"]),
        (b"x" * 10 + b"\x73\x10" + bytes(16), b"", ["demo-legacy"]),  # at the depth limit
        (b"x" * 11 + b"\x73\x10" + bytes(16), b"", []),  # one past it
        (b"\x3e\xd1\x01", b"", ["demo-magic"]),
        (b"\x00\xd1\x01", b"", ["demo-magic"]),
        (b"\xd1\x01", b"", []),
        (b"", b".*\\\n", ["demo-meta"]),
        (b"", b"x*\\\n", []),
        (b"", b".\x00\\\n", []),
        (b"", b"--\xaa\xbb", ["demo-window"]),
        (b"", b"-----\xaa\xbb", ["demo-window"]),  # offset 2 + depth 3
        (b"", b"------\xaa\xbb", []),
        (b"", b"-\xaa\xbb", []),
        (b"", b"\xaa\xbb", []),
        (b"", b"--\xaa", []),
    ],
)
def test_payload_patterns(client: bytes, server: bytes, expected: list[str]) -> None:
    record = flow(client_head=client, server_head=server)
    assert ids(PATTERNS, record) == expected


def test_pattern_evidence_is_hex_of_the_match_start() -> None:
    (m,) = PATTERNS.match(flow(client_head=b"xyz" + b"\x73\x10" + bytes(16) + b"\x04host"))
    assert (m.field, m.value) == ("payload.client", (b"\x73\x10" + bytes(14)).hex())


@pytest.mark.parametrize(
    ("offset", "payload"),
    [
        pytest.param(0, b"\xaa\xbb", id="offset-0"),
        pytest.param(4, b"\x00\x00\x00\x00\xaa\xbb", id="offset-4"),
        pytest.param(4, b"\xaa\x00\x00\x00\xaa\xbb", id="offset-4-first-byte-equal"),
    ],
)
def test_pattern_with_an_offset_and_no_depth(offset: int, payload: bytes) -> None:
    index = build({"demo-off": f"payload.client: {{pattern: 'aa bb', offset: {offset}}}"})
    assert ids(index, flow(client_head=payload)) == ["demo-off"]


# --------------------------------------------------------------------------------------------
# absent, decoders, order, one match per signature

ABSENT = build(
    {
        "demo-client-cert": """
            tls.client_cert.subject: {contains: CN=AnyDesk Client}
            tls.sni: {absent: true}
        """
    }
)
CLIENT = (cert("CN=AnyDesk Client"),)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (flow(tls=tls(None, client=CLIENT)), ["demo-client-cert"]),
        (flow(tls=tls("relay.example", client=CLIENT)), []),
        (flow(tls=tls(None, client=CLIENT, client_hello=None)), []),  # unknown, not absent
        (flow(tls=tls(None)), []),
        (flow(), []),
    ],
)
def test_sni_absent(record: FlowRecord, expected: list[str]) -> None:
    assert ids(ABSENT, record) == expected


def test_decoder_gates_the_match_and_its_result_is_kept() -> None:
    seen: list[bytes] = []

    def decode(record: FlowRecord) -> Decoded | None:
        seen.append(record.client_head)
        if len(record.client_head) < 4:
            return None
        return Decoded(attributes=(("n", str(record.client_head[3])),), instance="i")

    index = build(
        {"demo-dec": "payload.client: {pattern: '3e d1'}\ndecoder: {equals: demo}"},
        {"demo": decode},
    )
    assert ids(index, flow(client_head=b"\x3e\xd1\x01")) == []
    (m,) = index.match(flow(client_head=b"\x3e\xd1\x01\x07"))
    assert m.decoded == Decoded(attributes=(("n", "7"),), instance="i")
    assert ids(index, flow(client_head=b"\x00\xd1\x01\x07")) == []
    assert seen == [b"\x3e\xd1\x01", b"\x3e\xd1\x01\x07"]  # never called without the pattern


def test_matches_come_in_file_order_once_each() -> None:
    index = build(
        {
            "demo-c": "dest_port: {in: [443, '440-450']}",
            "demo-a": "tls.sni: {suffix: example.com}",
            "demo-b": "tls.sni: {suffix: [a.example.com, example.com]}",
        }
    )
    got = index.match(flow(dest_port=443, tls=tls("a.example.com")))
    assert [m.signature.id for m in got] == ["demo-c", "demo-a", "demo-b"]
    assert [(m.field, m.value) for m in got] == [
        ("dest_port", "443"), ("tls.sni", "a.example.com"), ("tls.sni", "a.example.com"),
    ]  # fmt: skip


def test_all_conditions_must_hold() -> None:
    index = build(
        {
            "demo-and": """
                tls.alpn: {prefix: anydesk/}
                tls.server_cert.subject: {contains: AnyNet}
                dest_port: {in: [6568, 443]}
            """
        }
    )
    relay = (cert("CN=AnyNet Relay"),)
    assert ids(index, flow(dest_port=6568, tls=tls(alpn=("anydesk/7",), server=relay))) == [
        "demo-and"
    ]
    assert ids(index, flow(dest_port=6569, tls=tls(alpn=("anydesk/7",), server=relay))) == []
    assert ids(index, flow(dest_port=443, tls=tls(alpn=("h2",), server=relay))) == []
    assert ids(index, flow(dest_port=443, tls=tls(alpn=("anydesk/7",)))) == []


# --------------------------------------------------------------------------------------------
# Property: the indexed lookup finds exactly what checking every signature would

PROPERTY = build(
    {
        "demo-p-suffix": "dns.query: {suffix: anydesk.com}",
        "demo-p-equals": "dns.query: {equals: [a.example, b.example]}",
        "demo-p-regex": "dns.query: {regex: '^r[0-9]+\\.'}",
        "demo-p-sni": "tls.sni: {suffix: example}\ndest_port: {in: ['400-500']}",
        "demo-p-ua": "http.user_agent: {prefix: [Any, AnyDesk/7]}",
        "demo-p-host": "http.host: {suffix: example}\nhttp.path: {prefix: /B}",
        "demo-p-87": "payload.client: {pattern: '87 ?? 10'}\nfirst_speaker: {equals: client}",
        "demo-p-depth": "payload.client: {pattern: '73 10', depth: 3}",
        "demo-p-wild": "payload.client: {pattern: '?? 10'}\nproto: {equals: udp}",
        "demo-p-port": "dest_port: {in: [7070, '50001-50003']}",
        "demo-p-wide": "dest_port: {in: ['2000-60000']}\nfirst_size.client: {range: {max: 3}}",
    }
)
NAME_PARTS = st.sampled_from(["anydesk", "com", "a", "b", "example", "r1", "rx", "net", "x"])
NAME = st.lists(NAME_PARTS, min_size=1, max_size=4).map(".".join)
BYTES = st.lists(st.sampled_from([0x87, 0x10, 0x73, 0x00, 0x15]), max_size=6).map(bytes)


@st.composite
def records(draw: st.DrawFn) -> FlowRecord:
    client = draw(BYTES)
    return flow(
        proto=draw(st.sampled_from([6, 17])),
        dest_port=draw(st.sampled_from([0, 443, 499, 501, 1999, 2000, 7070, 50003, 60001])),
        first_speaker=draw(st.sampled_from(["", "client", "server"])),
        client_head=client,
        client_first_size=len(client),
        dns=dns(*draw(st.lists(NAME, max_size=2))),
        tls=draw(st.none() | NAME.map(tls)),
        http=http(
            request(
                draw(st.sampled_from(["/", "/B", "/Bin/x"])),
                host=draw(st.none() | NAME),
                agent=draw(st.sampled_from([None, "Any", "AnyDesk/7.1", "An", "Mozilla"])),
            )
        ),
    )


def brute_force(index: SignatureIndex, record: FlowRecord) -> list[str]:
    from sensor.signatures.index import _FieldValues

    values = _FieldValues(record)
    return [
        s.id
        for s in index.signatures
        if all(index.check(c, values.get(c.field)) is not None for c in s.conditions)
    ]


@settings(max_examples=400, deadline=None)
@given(records())
def test_index_lookup_agrees_with_checking_every_signature(record: FlowRecord) -> None:
    assert ids(PROPERTY, record) == brute_force(PROPERTY, record)


# --------------------------------------------------------------------------------------------
# Regexes filed under their literal tail, patterns under the byte they fix at a position


@pytest.mark.parametrize(
    ("field", "regex", "tail"),
    [
        ("dns.query", r"^router[0-9]+\.teamviewer\.com$", ".teamviewer.com"),
        ("dns.query", r"^chromoting-(client|host)\.talkgadget\.google\.com$",
         ".talkgadget.google.com"),
        ("dns.query", r"(?i)^X\.Example\.COM$", "x.example.com"),  # names compare lower-cased
        ("http.path", r"^/(?:[^/?]+/)?meshrelay\.ashx$", "meshrelay.ashx"),
        ("http.path", r"-version\.txt$", "-version.txt"),
        ("http.path", r"(?i)anydesk[^/]*\.(exe|msi)$", None),  # ends in a group
        ("http.path", r"(?i)/Bin/x\.exe$", None),  # case-insensitive on a case-kept field
        ("dns.query", r"^a\.example\.com$|^b\.example\.org$", None),  # top-level alternation
        ("dns.query", r"^r[0-9]+\.", None),  # no $
        ("dns.query", r"example\.com\$", None),  # an escaped $ is a literal
        ("dns.query", r"^x\d$", None),  # \d is a class
        ("dns.query", r"^xy$", None),  # too short
        ("dns.query", r"^[a-z]+\.com+$", None),  # the last character is repeated
        ("dns.query", r"(?=x)abc\.com$", None),  # lookaround
        ("http.path", r"\\/a\\b\.cgi$", r"\/a\b.cgi"),  # \\ is a literal backslash, \b not a class
    ],
)  # fmt: skip
def test_regex_literal_tail(field: str, regex: str, tail: str | None) -> None:
    from sensor.signatures.index import _tail

    cond = next(
        c for c in build({"demo-t": f"{field}: {{regex: '{regex}'}}"}).signatures[0].conditions
    )
    assert _tail(cond) == tail


TAILS = build(
    {
        "demo-t-router": r"dns.query: {regex: '^router[0-9]+\.tv\.com$'}",
        "demo-t-any": r"dns.query: {regex: 'v\.com$'}",
        "demo-t-path": r"http.path: {regex: '^/(?:[^/?]+/)?relay\.ashx$'}",
        "demo-t-at2": "payload.server: {pattern: '31 00', offset: 2}",
        "demo-t-lead": "payload.server: {pattern: '?? ?? 31'}",
        "demo-t-zero": "payload.client: {pattern: '00 ??*2 17'}",
    }
)
LABELS = st.sampled_from(["router1", "router", "tv", "com", "v", "x", "router9\n", "com\n"])
PATHS = st.sampled_from(["/relay.ashx", "/t/relay.ashx", "/a/b/relay.ashx", "/relay.ashx\n",
                         "/relay.ashxx", "/xrelay.ashx", "/"])  # fmt: skip
HEAD_BYTES = st.lists(st.sampled_from([0x00, 0x17, 0x31, 0x02]), max_size=6).map(bytes)


@settings(max_examples=400, deadline=None)
@given(
    names=st.lists(st.lists(LABELS, min_size=1, max_size=4).map(".".join), max_size=2),
    path=PATHS,
    client=HEAD_BYTES,
    server=HEAD_BYTES,
)
def test_tail_and_position_lookups_agree_with_checking_every_signature(
    names: list[str], path: str, client: bytes, server: bytes
) -> None:
    record = flow(dns=dns(*names), http=http(request(path)), client_head=client, server_head=server)
    assert ids(TAILS, record) == brute_force(TAILS, record)


def test_tail_and_position_lookups_find_what_they_file() -> None:
    record = flow(
        dns=dns("router7.tv.com"), http=http(request("/tenant/relay.ashx?id=1")),
        client_head=b"\x00\x01\x02\x17", server_head=b"\x02\x00\x31\x00",
    )  # fmt: skip
    assert ids(TAILS, record) == [
        "demo-t-router", "demo-t-any", "demo-t-path", "demo-t-at2", "demo-t-lead", "demo-t-zero",
    ]  # fmt: skip
