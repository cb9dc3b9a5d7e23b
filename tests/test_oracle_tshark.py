"""Independent oracle: what `rmm-sensor analyze --flows` reports per flow agrees with tshark.

For every capture in the shared corpus the CLI runs once and tshark runs once: a JSON dissection
of the frames that carry TLS hellos and certificates, DNS and HTTP heads, followed by its TCP/UDP
conversation tables (over every frame). Facts are compared per 5-tuple (orientation-free, so a
flow we orient differently from tshark still matches), and per direction where it matters.

What the engine looks at is narrower than what tshark dissects, and each check names the scope:
only the first ``STREAM_BYTES`` of each TCP direction, only protocols that start their
connection (no in-band upgrades), at most ``MAX_DNS_MESSAGES`` DNS messages per flow, and only
the first HTTP request and response of a connection.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dpkt
import pytest

from sensor.flows.table import FlowSettings
from sensor.inspect import MAX_DNS_MESSAGES

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / ".." / "shared" / "captures"
FILES = sorted(p.name for p in CAPTURES.glob("*.pcap*")) if CAPTURES.is_dir() else []

STREAM_BYTES = FlowSettings().stream_bytes

# Reassemble TLS records and TCP segments; report HTTP heads without waiting for whole bodies
# (the corpus has truncated downloads whose response would otherwise never be dissected).
TSHARK_PREFS = (
    "-o", "tls.desegment_ssl_records:TRUE",
    "-o", "tcp.desegment_tcp_streams:TRUE",
    "-o", "http.desegment_body:FALSE",
    # The RFB dissector decodes framebuffers: 75 s for the 1.8 MB VNC capture, 0.5 s without.
    "--disable-protocol", "vnc",
)  # fmt: skip
TSHARK_FILTER = (
    "tls.handshake.type == 1 || tls.handshake.type == 11 || dns || mdns || llmnr"
    " || http.request || http.response || (tcp.seq == 1 && tcp.len > 0)"
)
DNS_LAYERS = ("dns", "mdns", "llmnr")
HS_CLIENT_HELLO, HS_CERTIFICATE = "1", "11"
TLS_HANDSHAKE_RECORD = 0x16

# X.500 attribute types as OpenSSL and Suricata abbreviate them; others print dotted.
ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.5": "serialNumber",
    "2.5.4.4": "SN",
    "2.5.4.42": "GN",
    "2.5.4.12": "title",
    "2.5.4.17": "postalCode",
    "2.5.4.15": "businessCategory",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "2.5.4.97": "organizationIdentifier",
}
DNS_TYPES = {"1": "A", "28": "AAAA", "5": "CNAME"}
DNS_ANSWER_FIELDS = {"A": "dns.a", "AAAA": "dns.aaaa", "CNAME": "dns.cname"}

Endpoint = tuple[str, int]
FlowKey = tuple[str, Endpoint, Endpoint]  # proto, lower endpoint, higher endpoint


class Node(list[tuple[str, Any]]):
    """A tshark JSON object as its (key, value) pairs, in order: tshark repeats keys."""


def flow_key(proto: str, a: Endpoint, b: Endpoint) -> FlowKey:
    low, high = sorted((a, b))
    return proto, low, high


def show(key: FlowKey) -> str:
    proto, (a, pa), (b, pb) = key
    return f"{proto} {a}:{pa} <-> {b}:{pb}"


def norm_ip(text: str) -> str:
    return ipaddress.ip_address(text).compressed


# --------------------------------------------------------------------------------------------
# Facts, as both sides report them


@dataclass(frozen=True, slots=True)
class Cert:
    subject: str | None
    issuer: str | None
    serial: str | None  # uppercase, ":"-separated
    not_before: str | None
    not_after: str | None
    sha1: str


@dataclass(frozen=True, slots=True)
class OurFlow:
    key: FlowKey
    client: Endpoint
    server: Endpoint
    start_us: int
    end_us: int
    pkts_toserver: int
    pkts_toclient: int
    server_name: str | None
    client_certs: tuple[Cert, ...]
    server_certs: tuple[Cert, ...]
    dns_queries: frozenset[str]
    dns_answers: frozenset[tuple[str, str, str]]  # rrname, rrtype, rdata
    http_hosts: tuple[str | None, ...]  # Host of the first request, if a request was parsed
    http_servers: tuple[str | None, ...]  # Server of the first response, if one was parsed


@dataclass(frozen=True, slots=True)
class DnsMessage:
    queries: tuple[str, ...]
    answers: tuple[tuple[str, str, str], ...]  # A/AAAA/CNAME answer-section records only


@dataclass(frozen=True, slots=True)
class Frame:
    """The facts tshark dissected from one frame (after reassembly, on its last segment)."""

    number: int
    ts_us: int
    key: FlowKey
    src: Endpoint
    stream: int  # tcp.stream, or -1 for UDP
    nxtseq: int  # relative: 1 + the stream offset after this segment (0 for UDP)
    first_byte: int | None  # first payload byte when this segment starts its direction
    snis: tuple[str, ...]  # one entry per ClientHello ("" when it has no SNI)
    chains: tuple[tuple[Cert, ...], ...]  # one entry per Certificate message
    dns: tuple[DnsMessage, ...]
    http_hosts: tuple[str | None, ...]  # one entry per request head
    http_servers: tuple[str | None, ...]  # one entry per response head


@dataclass(frozen=True, slots=True)
class Conversation:
    key: FlowKey
    a: Endpoint
    b: Endpoint
    frames_a_to_b: int
    frames_b_to_a: int


# --------------------------------------------------------------------------------------------
# Running both sides (each at most once per capture)


def tshark_binary() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is not installed: the oracle tests cannot run (apt-get install tshark)")
    return path


def run(cmd: list[str], ok_codes: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode not in ok_codes:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def our_flows(path: Path) -> tuple[OurFlow, ...]:
    cli = [sys.executable, "-m", "sensor.cli", "analyze", "--format", "json", "--flows"]
    # Exit status 1 only says an unsanctioned session was found; 2 is an error.
    out = run([*cli, str(path)], ok_codes=(0, 1))
    flows = []
    for line in out.splitlines():
        event = json.loads(line)
        if event["event_type"] == "flow":
            flows.append(our_flow(event))
    return tuple(flows)


def our_flow(event: Mapping[str, Any]) -> OurFlow:
    client = (norm_ip(event["src_ip"]), event["src_port"])
    server = (norm_ip(event["dest_ip"]), event["dest_port"])
    tls = event.get("tls") or {}
    dns = event.get("dns") or {}
    http = event.get("http") or {}
    return OurFlow(
        key=flow_key(event["proto"], client, server),
        client=client,
        server=server,
        start_us=iso_us(event["flow"]["start"]),
        end_us=iso_us(event["flow"]["end"]),
        pkts_toserver=event["flow"]["pkts_toserver"],
        pkts_toclient=event["flow"]["pkts_toclient"],
        server_name=event.get("server_name"),
        client_certs=tuple(our_cert(c) for c in tls.get("client_certificates", ())),
        server_certs=tuple(our_cert(c) for c in tls.get("server_certificates", ())),
        dns_queries=frozenset(q["rrname"] for q in dns.get("queries", ())),
        dns_answers=frozenset(
            (a["rrname"], a["rrtype"], a["rdata"])
            for a in dns.get("answers", ())
            if a["rrtype"] in DNS_ANSWER_FIELDS
        ),
        http_hosts=(http.get("hostname"),) if "http_method" in http else (),
        http_servers=(http.get("server"),) if "status" in http else (),
    )


def our_cert(c: Mapping[str, Any]) -> Cert:
    serial = c.get("serial")
    return Cert(
        subject=c.get("subject"),
        issuer=c.get("issuerdn"),
        serial=None if serial is None else serial.upper(),
        not_before=c.get("notbefore"),
        not_after=c.get("notafter"),
        sha1=c["fingerprint"],
    )


def iso_us(text: str) -> int:
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _MICROSECOND


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TsharkView:
    frames: tuple[Frame, ...]  # the frames TSHARK_FILTER selects
    conversations: tuple[Conversation, ...]  # over every frame: taps ignore the display filter


def tshark_view(path: Path) -> TsharkView:
    """One tshark pass: the JSON of the selected frames, then the conversation tables."""
    cmd = [tshark_binary(), "-r", str(path), "-n", *TSHARK_PREFS]
    cmd += ["-Y", TSHARK_FILTER, "-T", "json"]
    cmd += ["-J", "frame ip ipv6 tcp udp tls http " + " ".join(DNS_LAYERS)]
    cmd += ["-z", "conv,tcp", "-z", "conv,udp"]
    out = run(cmd)
    stats = STATS_RULE.search(out)
    assert stats is not None, f"{path}: no conversation tables in tshark's output"
    # tshark repeats keys inside one JSON object; keep every pair, in order.
    docs = json.loads(out[: stats.start()].strip() or "[]", object_pairs_hook=Node)
    frames = []
    for doc in docs:
        frame = tshark_frame(first(first(doc, "_source"), "layers"))
        if frame is not None:
            frames.append(frame)
    return TsharkView(tuple(frames), tuple(parse_conversations(out[stats.start() :])))


STATS_RULE = re.compile(r"^=+$", re.MULTILINE)


class Runs:
    """Both sides of every selected capture, started at once on a thread pool: each run is a
    subprocess, and the machine's cores overlap their start-up time."""

    def __init__(self, names: list[str], workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._ours: dict[str, Future[tuple[OurFlow, ...]]] = {}
        self._tshark: dict[str, Future[TsharkView]] = {}
        for name in names:
            self._submit(name)

    def _submit(self, name: str) -> None:
        if name not in self._ours:
            self._ours[name] = self._pool.submit(our_flows, CAPTURES / name)
            self._tshark[name] = self._pool.submit(tshark_view, CAPTURES / name)

    def ours(self, name: str) -> tuple[OurFlow, ...]:
        self._submit(name)
        return self._ours[name].result()

    def tshark(self, name: str) -> TsharkView:
        self._submit(name)
        return self._tshark[name].result()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> Iterator[Runs]:
    tshark_binary()  # fail every test at once, and loudly, when tshark is missing
    selected = [
        str(item.callspec.params["name"])
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and hasattr(item, "callspec")
    ]
    runner = Runs(list(dict.fromkeys(selected)), workers=(os.cpu_count() or 2) + 1)
    yield runner
    runner.close()


CONV_TITLE = re.compile(r"^(TCP|UDP) Conversations$")
# "A:port <-> B:port   <-frames bytes unit   ->frames bytes unit   total ..."
CONV_ROW = re.compile(r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+\S+\s+\S+\s+(\d+)\s+\S+\s+\S+")


def parse_conversations(text: str) -> Iterator[Conversation]:
    proto = ""
    for line in text.splitlines():
        title = CONV_TITLE.match(line)
        if title:
            proto = title.group(1)
            continue
        row = CONV_ROW.match(line)
        if row is None:
            continue
        assert proto, f"conversation row before a table title: {line!r}"
        a = (norm_ip(row.group(1)), int(row.group(2)))
        b = (norm_ip(row.group(3)), int(row.group(4)))
        # The "<-" column counts frames B -> A, the "->" column frames A -> B.
        yield Conversation(flow_key(proto, a, b), a, b, int(row.group(6)), int(row.group(5)))


# --------------------------------------------------------------------------------------------
# tshark JSON, kept as ordered (key, value) pairs


def items(node: Node) -> Iterator[tuple[str, Any]]:
    """The pairs of ``node``, with a JSON array value spread into one pair per element."""
    if not isinstance(node, Node):
        return  # a layer tshark gave as plain text has no fields
    for k, v in node:
        if type(v) is list:
            for element in v:
                yield k, element
        else:
            yield k, v


def pairs(node: Node, key: str) -> Iterator[Any]:
    """Values of ``key`` directly under ``node``, in order."""
    for k, v in items(node):
        if k == key:
            yield v


def first(node: Node, key: str) -> Any:
    return next(pairs(node, key), None)


def walk(node: Node) -> Iterator[tuple[str, Any]]:
    """Every (key, value) under ``node``, depth first, in document order."""
    for k, v in items(node):
        yield k, v
        if isinstance(v, Node):
            yield from walk(v)


def find(node: Node, key: str) -> Iterator[Any]:
    for k, v in walk(node):
        if k == key:
            yield v


def tshark_frame(layers: Node) -> Frame | None:
    frame = first(layers, "frame")
    ip = first(layers, "ip") or first(layers, "ipv6")
    tcp, udp = first(layers, "tcp"), first(layers, "udp")
    if ip is None or (tcp is None and udp is None):
        return None
    v = "ip" if first(layers, "ip") is not None else "ipv6"
    l4, proto = (tcp, "TCP") if tcp is not None else (udp, "UDP")
    p = proto.lower()
    src = (norm_ip(first(ip, f"{v}.src")), int(first(l4, f"{p}.srcport")))
    dst = (norm_ip(first(ip, f"{v}.dst")), int(first(l4, f"{p}.dstport")))
    seconds, _, fraction = first(frame, "frame.time_epoch").partition(".")
    ts_us = int(seconds) * 1_000_000 + int((fraction + "000000")[:6])
    is_tcp = tcp is not None
    seq = int(first(tcp, "tcp.seq") or 0) if is_tcp else 0
    payload = first(tcp, "tcp.payload") if is_tcp else None
    tls_layers = list(pairs(layers, "tls")) if is_tcp else []
    http_layers = list(pairs(layers, "http")) if is_tcp else []
    return Frame(
        number=int(first(frame, "frame.number")),
        ts_us=ts_us,
        key=flow_key(proto, src, dst),
        src=src,
        stream=int(first(tcp, "tcp.stream")) if is_tcp else -1,
        nxtseq=int(first(tcp, "tcp.nxtseq") or seq) if is_tcp else 0,
        first_byte=int(payload[:2], 16) if seq == 1 and payload else None,
        snis=tuple(client_hello_snis(tls_layers)),
        chains=tuple(certificate_chains(tls_layers)),
        dns=tuple(dns_message(m) for layer in DNS_LAYERS for m in pairs(layers, layer)),
        http_hosts=tuple(first(h, "http.host") for h in http_layers if has(h, "http.request")),
        http_servers=tuple(first(h, "http.server") for h in http_layers if has(h, "http.response")),
    )


def has(node: Node, key: str) -> bool:
    return first(node, key) is not None


def handshakes(tls_layers: list[Node], msg_type: str) -> Iterator[Node]:
    for layer in tls_layers:
        for record in find(layer, "tls.record"):
            if not isinstance(record, Node) or has(record, "tls.record.opaque_type"):
                # Encrypted on the wire (TLS 1.3): tshark decrypted it with the keys a pcapng
                # can embed; a passive sensor has no keys.
                continue
            for hs in find(record, "tls.handshake"):
                if isinstance(hs, Node) and first(hs, "tls.handshake.type") == msg_type:
                    yield hs


def client_hello_snis(tls_layers: list[Node]) -> Iterator[str]:
    for hello in handshakes(tls_layers, HS_CLIENT_HELLO):
        yield next(find(hello, "tls.handshake.extensions_server_name"), "")


def certificate_chains(tls_layers: list[Node]) -> Iterator[tuple[Cert, ...]]:
    for msg in handshakes(tls_layers, HS_CERTIFICATE):
        chain: list[Cert] = []
        for certificates in pairs(msg, "tls.handshake.certificates"):
            # Each DER blob is followed by its dissection, if tshark could dissect it.
            for k, v in items(certificates):
                if k == "tls.handshake.certificate":
                    chain.append(tshark_cert(bytes.fromhex(v.replace(":", "")), None))
                elif k == "tls.handshake.certificate_tree" and chain:
                    chain[-1] = tshark_cert(b"", v, chain[-1].sha1)
        yield tuple(chain)


def tshark_cert(der: bytes, tree: Node | None, sha1: str = "") -> Cert:
    if not sha1:
        digest = hashlib.sha1(der).hexdigest()
        sha1 = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    signed = None if tree is None else first(tree, "x509af.signedCertificate_element")
    if signed is None:
        return Cert(None, None, None, None, None, sha1)
    serial = first(signed, "x509af.serialNumber")
    validity = first(signed, "x509af.validity_element") or Node()
    return Cert(
        subject=dn_text(first(signed, "x509af.subject_tree")),
        issuer=dn_text(first(signed, "x509af.issuer_tree")),
        serial=None if serial is None else serial.upper(),
        not_before=x509_time(first(validity, "x509af.notBefore_tree")),
        not_after=x509_time(first(validity, "x509af.notAfter_tree")),
        sha1=sha1,
    )


def dn_text(name: Node | None) -> str | None:
    """A Name as "C=DE, O=Org, CN=host": RDNs in DER order, multi-valued RDNs joined by "+"."""
    if name is None:
        return None
    rdns = []
    for rdn in find(name, "x509if.RDNSequence_item_tree"):
        attrs = []
        for ava in pairs(rdn, "x509if.RelativeDistinguishedName_item_element"):
            oid = first(ava, "x509if.oid")
            attrs.append(f"{ATTRIBUTE_NAMES.get(oid, oid)}={ava_value(ava)}")
        rdns.append("+".join(attrs))
    return ", ".join(rdns)


def ava_value(ava: Node) -> str:
    """The decoded string of an AttributeTypeAndValue (the leaf under its CHOICE wrapper)."""
    leaves = [
        v
        for k, v in walk(ava)
        if isinstance(v, str) and k.startswith("x509sat.") and k != "x509sat.DirectoryString"
    ]
    return leaves[-1] if leaves else ""


UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # "2018-11-18 02:14:23 (UTC)"
GENERALIZED_TIME = re.compile(r"^\w{3} +\d+, \d{4} \d\d:\d\d:\d\d")  # "Jul 21, 2068 12:33:34.0 UTC"


def x509_time(node: Node | None) -> str | None:
    """tshark's UTCTime or GeneralizedTime text as "2018-11-18T02:14:23Z"."""
    if node is None:
        return None
    text = first(node, "x509af.utcTime") or first(node, "x509af.generalizedTime") or ""
    for pattern, fmt in ((UTC_TIME, "%Y-%m-%d %H:%M:%S"), (GENERALIZED_TIME, "%b %d, %Y %H:%M:%S")):
        m = pattern.match(text)
        if m:
            return datetime.strptime(m.group(0), fmt).strftime("%Y-%m-%dT%H:%M:%SZ")
    pytest.fail(f"unexpected time format from tshark: {text!r}")


def dns_message(layer: Node) -> DnsMessage:
    queries = [
        first(q, "dns.qry.name") for section in pairs(layer, "Queries") for _, q in items(section)
    ]
    answers = []
    for section in pairs(layer, "Answers"):
        for _, rr in items(section):
            rrtype = DNS_TYPES.get(first(rr, "dns.resp.type") or "")
            if rrtype is not None:
                rdata = first(rr, DNS_ANSWER_FIELDS[rrtype])
                if rrtype == "AAAA":
                    rdata = norm_ip(rdata)
                answers.append((first(rr, "dns.resp.name"), rrtype, rdata))
    return DnsMessage(tuple(q for q in queries if q is not None), tuple(answers))


# --------------------------------------------------------------------------------------------
# Grouping


def flows_by_key(flows: tuple[OurFlow, ...]) -> dict[FlowKey, list[OurFlow]]:
    out: dict[FlowKey, list[OurFlow]] = defaultdict(list)
    for flow in flows:
        out[flow.key].append(flow)
    return out


def stream_starts(frames: tuple[Frame, ...]) -> dict[tuple[int, Endpoint], int]:
    """First payload byte of each TCP direction, keyed by (tcp.stream, sender)."""
    return {(f.stream, f.src): f.first_byte for f in frames if f.first_byte is not None}


def in_window(f: Frame) -> bool:
    """The reassembled message ends within the bytes the engine parses (relative seq 1 is the
    direction's first byte, with or without a captured SYN)."""
    return f.nxtseq - 1 <= STREAM_BYTES


def diff(title: str, expected: Mapping[str, object], actual: Mapping[str, object]) -> str:
    """Only the keys whose values differ, one block each."""
    lines = [title]
    for k in sorted(set(expected) | set(actual)):
        e, a = expected.get(k), actual.get(k)
        if e == a:
            continue
        lines.append(f"  {k}")
        if isinstance(e, set) and isinstance(a, set):
            lines.append(f"    only tshark: {sorted(e - a, key=repr)}")
            lines.append(f"    only ours:   {sorted(a - e, key=repr)}")
        else:
            lines += [f"    tshark: {e!r}", f"    ours:   {a!r}"]
    return "\n".join(lines)


def assert_same(
    name: str, what: str, expected: Mapping[str, object], actual: Mapping[str, object]
) -> None:
    __tracebackhide__ = True
    if expected != actual:
        pytest.fail(diff(f"{name}: {what} differ (tshark vs analyze --flows)", expected, actual))


def sender_label(key: FlowKey, sender: Endpoint) -> str:
    return f"{show(key)}, sent by {sender[0]}:{sender[1]}"


# --------------------------------------------------------------------------------------------
# The checks


def test_corpus_and_tshark_are_present() -> None:
    """Without these every parametrized test below would vanish instead of failing."""
    tshark_binary()
    assert len(FILES) >= 30, f"expected the shared capture corpus in {CAPTURES.resolve()}"


@pytest.mark.parametrize("name", FILES)
def test_tls_server_names(runs: Runs, name: str) -> None:
    """Every SNI of a ClientHello in the first bytes of a TLS connection is the flow's
    server_name, and we report no server_name tshark did not see.

    Out of scope, by design of the engine: ClientHellos in QUIC or DTLS (UDP), ClientHellos that
    end past the first STREAM_BYTES of the client direction, and TLS that does not start its TCP
    connection (an upgrade after a cleartext preamble)."""
    frames = runs.tshark(name).frames
    starts = stream_starts(frames)
    expected: dict[str, set[str]] = defaultdict(set)
    for f in frames:
        if f.snis and in_window(f) and starts.get((f.stream, f.src)) == TLS_HANDSHAKE_RECORD:
            expected[show(f.key)].update(s for s in f.snis if s)
    actual: dict[str, set[str]] = defaultdict(set)
    for key, flows in flows_by_key(runs.ours(name)).items():
        actual[show(key)].update(f.server_name for f in flows if f.server_name is not None)
    assert_same(name, "TLS server names", nonempty(expected), nonempty(actual))


@pytest.mark.parametrize("name", FILES)
def test_tls_certificates(runs: Runs, name: str) -> None:
    """The first Certificate message of each direction: subject and issuer DNs, serial,
    validity and SHA-1 of every certificate, in chain order."""
    frames = runs.tshark(name).frames
    starts = stream_starts(frames)
    expected: dict[str, set[tuple[Cert, ...]]] = defaultdict(set)
    seen: set[tuple[int, Endpoint]] = set()
    for f in frames:
        for chain in f.chains:
            if (f.stream, f.src) in seen:
                continue  # the engine keeps the first Certificate message of a direction
            seen.add((f.stream, f.src))
            if in_window(f) and starts.get((f.stream, f.src)) == TLS_HANDSHAKE_RECORD:
                expected[sender_label(f.key, f.src)].add(chain)
    actual: dict[str, set[tuple[Cert, ...]]] = defaultdict(set)
    for key, flows in flows_by_key(runs.ours(name)).items():
        for flow in flows:
            for sender, chain in (
                (flow.client, flow.client_certs),
                (flow.server, flow.server_certs),
            ):
                if chain:
                    actual[sender_label(key, sender)].add(chain)
    assert_same(name, "certificate chains", nonempty(expected), nonempty(actual))


@pytest.mark.parametrize("name", FILES)
def test_dns_names_and_addresses(runs: Runs, name: str) -> None:
    """Query names and A/AAAA/CNAME answers of the first MAX_DNS_MESSAGES DNS messages of each
    flow (DNS, mDNS and LLMNR)."""
    expected, actual = dns_facts(name, runs.tshark(name).frames, runs.ours(name))
    assert_same(name, "DNS queries/answers", expected, actual)


def dns_facts(
    name: str, frames: tuple[Frame, ...], ours: tuple[OurFlow, ...]
) -> tuple[dict[str, set[tuple[str, ...]]], dict[str, set[tuple[str, ...]]]]:
    """Per flow of ours, the facts of tshark's DNS messages in that flow (the flow of the same
    5-tuple whose time span holds the frame) and the facts we report."""
    flows = flows_by_key(ours)
    per_flow: dict[OurFlow, list[DnsMessage]] = defaultdict(list)
    orphans = []
    for f in frames:
        if not f.dns:
            continue
        owner = next((o for o in flows.get(f.key, ()) if o.start_us <= f.ts_us <= o.end_us), None)
        if owner is None:
            orphans.append(f"frame {f.number} {show(f.key)}")
        else:
            per_flow[owner].extend(f.dns)
    assert not orphans, f"{name}: DNS frames in no flow of ours: {orphans}"
    expected: dict[str, set[tuple[str, ...]]] = {}
    actual: dict[str, set[tuple[str, ...]]] = {}
    for flow in ours:
        label = f"{show(flow.key)} flow starting at {flow.start_us} us"
        messages = per_flow.get(flow, [])[:MAX_DNS_MESSAGES]
        expected[label] = {("query", q) for m in messages for q in m.queries}
        expected[label].update(("answer", *a) for m in messages for a in m.answers)
        actual[label] = {("query", q) for q in flow.dns_queries}
        actual[label].update(("answer", *a) for a in flow.dns_answers)
    return nonempty(expected), nonempty(actual)


@pytest.mark.parametrize("name", FILES)
def test_http_host_and_server(runs: Runs, name: str) -> None:
    """Host of the first request and Server of the first response of each TCP connection whose
    client side starts with a request line (server side: with "HTTP")."""
    frames = runs.tshark(name).frames
    starts = stream_starts(frames)
    expected: dict[str, set[str | None]] = defaultdict(set)
    done: set[tuple[int, Endpoint]] = set()
    for f in frames:
        for values, starts_ok in (
            (f.http_hosts, is_request_start),
            (f.http_servers, is_response_start),
        ):
            if values and (f.stream, f.src) not in done:
                done.add((f.stream, f.src))
                if starts_ok(starts.get((f.stream, f.src))):
                    expected[sender_label(f.key, f.src)].add(values[0])
    actual: dict[str, set[str | None]] = defaultdict(set)
    for key, flows in flows_by_key(runs.ours(name)).items():
        for flow in flows:
            if flow.http_hosts:
                actual[sender_label(key, flow.client)].add(flow.http_hosts[0])
            if flow.http_servers:
                actual[sender_label(key, flow.server)].add(flow.http_servers[0])
    assert_same(name, "HTTP Host/Server headers", nonempty(expected), nonempty(actual))


def is_request_start(byte: int | None) -> bool:
    return byte is not None and ord("A") <= byte <= ord("Z")  # methods are uppercase tokens


def is_response_start(byte: int | None) -> bool:
    return byte == ord("H")


@pytest.mark.parametrize("name", FILES)
def test_packet_counts(runs: Runs, name: str) -> None:
    """Packets per 5-tuple and direction equal tshark's TCP/UDP conversation tables (summed
    over the conversations and flows of one 5-tuple, so a flow split differently on either side
    still counts the same packets), and there is no flow tshark has no conversation for."""
    expected: dict[str, int] = defaultdict(int)
    for c in runs.tshark(name).conversations:
        expected[f"{show(c.key)}, sent by {c.a[0]}:{c.a[1]}"] += c.frames_a_to_b
        expected[f"{show(c.key)}, sent by {c.b[0]}:{c.b[1]}"] += c.frames_b_to_a
    actual: dict[str, int] = defaultdict(int)
    for flow in runs.ours(name):
        actual[sender_label(flow.key, flow.client)] += flow.pkts_toserver
        actual[sender_label(flow.key, flow.server)] += flow.pkts_toclient
    assert sum(expected.values()) > 0, f"{name}: tshark found no TCP/UDP conversation"
    assert_same(name, "packet counts", nonempty(expected), nonempty(actual))


def nonempty(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v}


# Where our table ends a flow and a later packet of the same 5-tuple starts another, while
# tshark keeps one TCP stream. Each is intended: a flow ends FlowSettings.tcp_closed_s (10 s)
# after its first FIN or RST, and a SYN after a FIN/RST starts a new flow. Value: our flow count.
SPLITS: dict[tuple[str, str], tuple[int, str]] = {
    ("bg-ndpi-1kxun.pcap", "TCP 192.168.5.16:53605 <-> 68.233.253.133:80"): (
        2,
        "a lone FIN (frame 6), then a lone RST 22.9 s later (frame 681): the FIN's flow had "
        "ended 10 s after it",
    ),
    ("bg-ndpi-1kxun.pcap", "TCP 192.168.5.16:53613 <-> 68.233.253.133:80"): (
        3,
        "three lone FIN retransmissions 18 s apart (frames 624, 779, 988), each after the "
        "previous flow's close timeout",
    ),
    ("bg-ndpi-1kxun.pcap", "TCP 192.168.115.75:443 <-> 192.168.5.16:53623"): (
        2,
        "the server's FIN (frame 613) is answered by the client's FIN 15.3 s later (frames "
        "708-709), past the 10 s close timeout",
    ),
}
# bench-background-concat.pcap holds bg-ndpi-1kxun.pcap unchanged, so the same flows split there.
SPLITS.update(
    {
        ("bench-background-concat.pcap", key): split
        for (file, key), split in list(SPLITS.items())
        if file == "bg-ndpi-1kxun.pcap"
    }
)
SPLITS |= {
    ("rdp-suricata-RDP-003.pcap", "TCP 10.226.29.74:3955 <-> 10.226.41.226:2998"): (
        3,
        "three SYNs, each refused by RST/ACK (frames 354/355, 363/364, 380/381): each SYN after "
        "the RST is a new flow; tshark sees SYN retransmissions (same ISN) of one stream",
    ),
}


@pytest.mark.parametrize("name", FILES)
def test_flow_splits(runs: Runs, name: str) -> None:
    """One flow per tshark conversation (TCP stream, UDP address/port pair), except the
    splits SPLITS documents. Where the merged file bench-background-concat.pcap jumps back in
    time between segments, the old segment's flows end (reason time_jump), so its segments
    split exactly as the files they came from."""
    expected: dict[str, int] = defaultdict(int)
    for c in runs.tshark(name).conversations:
        expected[show(c.key)] += 1
    for (file, key), (count, _reason) in SPLITS.items():
        if file == name:
            expected[key] = count
    actual: dict[str, int] = defaultdict(int)
    for flow in runs.ours(name):
        actual[show(flow.key)] += 1
    assert_same(name, "flows per 5-tuple", expected, actual)


# --------------------------------------------------------------------------------------------
# Fragments and non-IP frames: the corpus has no IP fragments, so a small capture is built


def ethernet(ethertype: int, payload: bytes) -> bytes:
    return bytes.fromhex("02000000000a") + bytes.fromhex("02000000000b") + u16(ethertype) + payload


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def ipv4(src: str, dst: str, payload: bytes, ident: int, flags_offset: int) -> bytes:
    """An IPv4 header (protocol UDP) with a valid checksum; ``flags_offset`` is the raw field."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        ident,
        flags_offset,
        64,
        dpkt.ip.IP_PROTO_UDP,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return header[:10] + u16(~total & 0xFFFF) + header[12:] + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def ipv6_fragment(offset: int, more: bool, ident: int, payload: bytes) -> bytes:
    """``offset`` in bytes, a multiple of 8, so it already sits in the field's upper 13 bits."""
    return struct.pack("!BBHI", dpkt.ip.IP_PROTO_UDP, 0, offset | more, ident) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def dns_query(ident: int, name: str) -> bytes:
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


# Who has 10.0.0.53? Tell 10.0.0.1
ARP_REQUEST = bytes.fromhex("0001 0800 06 04 0001 02000000000a 0a000001 000000000000 0a000035")


def test_fragments_and_non_ip_make_no_flows(tmp_path: Path) -> None:
    """tshark reassembles the fragmented DNS queries into UDP datagrams; the engine skips IP
    fragments (it does not reassemble) and non-IP frames, so it reports only the whole query."""
    v4 = udp(40001, 53, dns_query(0x1111, "relay-9b6827f2.net.anydesk.com"))
    v6 = udp(40002, 53, dns_query(0x2222, "relay-3185a847.net.anydesk.com"))
    whole = udp(40003, 53, dns_query(0x3333, "www.example.com"))
    more_fragments = 0x2000
    frames = [
        ethernet(0x0806, ARP_REQUEST),
        ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.53", v4[:24], 7, more_fragments)),
        ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.53", v4[24:], 7, 24 // 8)),
        ethernet(0x86DD, ipv6("fd00::1", "fd00::53", 44, ipv6_fragment(0, True, 9, v6[:24]))),
        ethernet(0x86DD, ipv6("fd00::1", "fd00::53", 44, ipv6_fragment(24, False, 9, v6[24:]))),
        ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.53", whole, 8, 0)),
    ]
    path = tmp_path / "fragments.pcap"
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=dpkt.pcap.DLT_EN10MB)
        for i, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_700_000_000 + i / 100)

    keys = {
        "v4": flow_key("UDP", ("10.0.0.1", 40001), ("10.0.0.53", 53)),
        "v6": flow_key("UDP", ("fd00::1", 40002), ("fd00::53", 53)),
        "whole": flow_key("UDP", ("10.0.0.1", 40003), ("10.0.0.53", 53)),
    }
    view = tshark_view(path)
    # The oracle first: the capture is well formed and tshark sees three datagrams.
    assert {c.key for c in view.conversations} == set(keys.values())
    queries = {q for f in view.frames for m in f.dns for q in m.queries}
    assert queries == {
        "relay-9b6827f2.net.anydesk.com",
        "relay-3185a847.net.anydesk.com",
        "www.example.com",
    }
    flows = our_flows(path)
    assert [(show(f.key), f.pkts_toserver, f.pkts_toclient) for f in flows] == [
        (show(keys["whole"]), 1, 0)
    ]
    assert flows[0].dns_queries == {"www.example.com"}


def test_dns_keeps_the_first_messages_of_a_flow(tmp_path: Path) -> None:
    """No corpus flow has more than MAX_DNS_MESSAGES DNS messages, so one is built: mDNS
    queries for distinct names on one 5-tuple, more than the cap."""
    count = MAX_DNS_MESSAGES + 8
    path = tmp_path / "mdns.pcap"
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=dpkt.pcap.DLT_EN10MB)
        for i in range(count):
            query = udp(5353, 5353, dns_query(0, f"host-{i:02d}.local"))
            writer.writepkt(
                ethernet(0x0800, ipv4("10.0.0.1", "224.0.0.251", query, i, 0)),
                ts=1_700_000_000 + i / 1000,
            )
    view = tshark_view(path)
    assert sum(len(f.dns) for f in view.frames) == count
    flows = our_flows(path)
    expected, actual = dns_facts(path.name, view.frames, flows)
    assert_same(path.name, "DNS queries/answers", expected, actual)
    assert [sorted(q for _, q in facts) for facts in actual.values()] == [
        [f"host-{i:02d}.local" for i in range(MAX_DNS_MESSAGES)]
    ]
