"""Property tests of the tool decoders and enrichers, and of the YAML loaders.

Decoders and enrichers run on records whose fields come from random bytes, decoded the way the
protocol parsers decode wire text: they return a result or ``None``, never raise. The loaders of
configuration and signature files get random, mutated and absurdly nested text: they return a
result or raise ``SourceError`` naming the file, never anything else.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import dpkt
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sensor.config import ENTRY_KEYS, POLICY_KEYS, TOP_KEYS, Settings, load_settings
from sensor.fingerprints import DECODERS, ENRICHERS, anydesk, screenconnect
from sensor.model import DnsSummary, FlowRecord, HttpSummary, TlsSummary
from sensor.protocols.dns import DnsQuestion
from sensor.protocols.errors import ParseError
from sensor.protocols.http import parse_http_request, parse_http_response
from sensor.protocols.x509 import CertSummary
from sensor.signatures.index import Decoded
from sensor.signatures.schema import FIELDS, ToolFile, load_tool_file
from sensor.yamlsource import Located, SourceError, load_yaml

REPO = Path(__file__).resolve().parents[2]
PCAPS = REPO / "pcaps"
CONFIG_EXAMPLE = (REPO / "deploy" / "rmm-sensor.yaml").read_text()
SIGNATURE_FILES = sorted((REPO / "signatures").glob("*.yaml"))
SIGNATURE_TEXTS = [p.read_text() for p in SIGNATURE_FILES]

BYTES = st.binary(max_size=600)
# Wire text as the parsers hand it on: any bytes, decoded with backslashreplace.
WIRE_TEXT = st.binary(max_size=80).map(lambda b: b.decode("utf-8", "backslashreplace"))
HOSTILE = st.sampled_from(
    ["\x1b[2J", "\u202e", "\x00", "\r\n", "\udcff", "\\xff", "\u2028", "%", "=", "&", "?", "/"]
)
TEXTISH = st.lists(WIRE_TEXT | HOSTILE, max_size=4).map("".join)


def client_payloads(name: str, proto: type[dpkt.Packet]) -> list[bytes]:
    """Payloads of one transport, in capture order (dpkt, independent of the sensor)."""
    out = []
    with open(PCAPS / name, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            l4 = dpkt.ethernet.Ethernet(buf).data.data
            if isinstance(l4, proto) and len(l4.data):
                out.append(bytes(l4.data))
    return out


DISCOVERY = next(p for p in client_payloads("ad-discovery.pcap", dpkt.udp.UDP) if p[:2] == b">\xd1")
M3_HELLO = next(
    p for p in client_payloads("sc-relay-m3.pcap", dpkt.tcp.TCP) if p[:2] == b"\x87\x12"
)
LEGACY_HELLO = next(
    p
    for p in client_payloads("sc-relay-legacy.pcap", dpkt.tcp.TCP)
    if screenconnect.LEGACY_TOKEN in p
)


def record(**fields: Any) -> FlowRecord:
    base: dict[str, Any] = dict(
        flow_id=1, proto=6, src_ip="10.0.0.5", src_port=50000, dest_ip="198.51.100.7",
        dest_port=443, start_ns=1, end_ns=2, pkts_toserver=1,
        pkts_toclient=1, bytes_toserver=1, bytes_toclient=1, tcp_flags_ts=0x1B,
        tcp_flags_tc=0x1B, syn_seen=True, end_reason="closed", app_proto="unknown",
        first_speaker="client", client_head=b"", server_head=b"", client_first_size=0,
        server_first_size=0,
    )  # fmt: skip
    base.update(fields)
    return FlowRecord(**base)


def cert(subject: str | None, sha1: str = "aa:bb:cc:dd:ee:ff:00:11") -> CertSummary:
    return CertSummary(subject, None, None, None, None, sha1, "00" * 32, None)


def tls(
    sni: str | None = None,
    alpn: tuple[str, ...] = (),
    client: tuple[CertSummary, ...] = (),
    server: tuple[CertSummary, ...] = (),
) -> TlsSummary:
    return TlsSummary(sni, (0x0303,), 0x0303, alpn, None, None, None, client, server, False)


def assert_decoded(result: Decoded | None) -> None:
    """A decoder's result: None, or attributes and instance that are all plain str."""
    if result is None:
        return
    assert isinstance(result, Decoded)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.attributes)
    assert result.instance is None or isinstance(result.instance, str)


# --- AnyDesk discovery -------------------------------------------------------------------------


def discovery(anydesk_id: int, os_code: int, host: bytes, user: bytes, tail: bytes = b"") -> bytes:
    """A discovery datagram laid out as protocols.md §2.5 describes it."""
    head = b"\x3e\xd1\x01" + struct.pack("!I", anydesk_id) + bytes(4) + bytes((2, os_code))
    return head + struct.pack("!I", len(host)) + host + struct.pack("!I", len(user)) + user + tail


@settings(max_examples=2000, deadline=None)
@given(BYTES)
def test_discovery_decoder_on_random_bytes(payload: bytes) -> None:
    result = anydesk.decode_discovery(payload)
    assert_decoded(result)
    if result is not None:
        assert payload[:3] == b"\x3e\xd1\x01"
        assert result.instance == dict(result.attributes)["anydesk_id"]


@settings(max_examples=2000, deadline=None)
@given(
    st.binary(min_size=21, max_size=300).map(lambda b: b"\x3e\xd1\x01" + b[3:]),
)
def test_discovery_decoder_on_random_bytes_behind_the_magic(payload: bytes) -> None:
    assert_decoded(anydesk.decode_discovery(payload))


@settings(max_examples=500, deadline=None)
@given(
    anydesk_id=st.integers(0, 2**32 - 1),
    os_code=st.integers(0, 255),
    host=st.binary(max_size=anydesk.MAX_NAME),
    user=st.binary(max_size=anydesk.MAX_NAME),
    tail=st.binary(max_size=40),
)
def test_discovery_round_trip_keeps_any_name_bytes(
    anydesk_id: int, os_code: int, host: bytes, user: bytes, tail: bytes
) -> None:
    result = anydesk.decode_discovery(discovery(anydesk_id, os_code, host, user, tail))
    assert result is not None
    attrs = dict(result.attributes)
    assert attrs["anydesk_id"] == str(anydesk_id) == result.instance
    assert attrs["hostname"] == host.decode("utf-8", "backslashreplace")
    assert attrs["user"] == user.decode("utf-8", "backslashreplace")
    assert attrs["os_code"] == str(os_code)
    # The names are valid str whatever the bytes: they encode back as UTF-8.
    attrs["hostname"].encode()
    attrs["user"].encode()


@pytest.mark.parametrize(
    ("host_len", "user_len"),
    [(anydesk.MAX_NAME + 1, 0), (0, anydesk.MAX_NAME + 1), (2**32 - 1, 0), (0, 2**32 - 1)],
)
def test_discovery_name_lengths_beyond_the_bound_are_refused(host_len: int, user_len: int) -> None:
    payload = discovery(1, 2, b"h" * min(host_len, 300), b"u" * min(user_len, 300))
    fields = bytearray(payload)
    fields[13:17] = struct.pack("!I", host_len)
    pos = 17 + min(host_len, 300)
    fields[pos : pos + 4] = struct.pack("!I", user_len)
    assert anydesk.decode_discovery(bytes(fields)) is None


def test_discovery_every_truncation_of_a_real_datagram() -> None:
    full = anydesk.decode_discovery(DISCOVERY)
    assert full is not None
    assert dict(full.attributes)["hostname"] == "FRONTDESK-PC"
    needed = 17 + 12 + 4 + 5  # through the user name "alice"
    for cut in range(len(DISCOVERY)):
        result = anydesk.decode_discovery(DISCOVERY[:cut])
        assert (result is None) == (cut < needed), cut
        if result is not None:
            assert result == full


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, len(DISCOVERY) - 1), st.integers(0, 255))
def test_discovery_real_datagram_with_one_byte_changed(at: int, value: int) -> None:
    payload = DISCOVERY[:at] + bytes((value,)) + DISCOVERY[at + 1 :]
    assert_decoded(anydesk.decode_discovery(payload))


# --- ScreenConnect relay handshakes ------------------------------------------------------------

SC_DECODERS = [DECODERS["screenconnect-relay-m3"], DECODERS["screenconnect-relay-legacy"]]


@settings(max_examples=2000, deadline=None)
@given(
    head=BYTES
    | st.binary(max_size=80).map(lambda b: M3_HELLO[:24] + b)
    | st.tuples(st.binary(max_size=10), st.binary(max_size=300)).map(
        lambda t: t[0] + screenconnect.LEGACY_TOKEN + t[1]
    )
)
def test_relay_decoders_on_random_heads(head: bytes) -> None:
    for decode in SC_DECODERS:
        assert_decoded(decode(record(client_head=head)))


@pytest.mark.parametrize("name", ["m3", "legacy"])
def test_relay_decoders_on_every_truncation_of_a_real_hello(name: str) -> None:
    hello = M3_HELLO if name == "m3" else LEGACY_HELLO
    decode = screenconnect.relay_m3 if name == "m3" else screenconnect.relay_legacy
    full = decode(record(client_head=hello))
    assert full is not None
    for cut in range(len(hello) + 1):
        assert_decoded(decode(record(client_head=hello[:cut])))


def test_legacy_relay_host_of_the_real_hello() -> None:
    result = screenconnect.relay_legacy(record(client_head=LEGACY_HELLO))
    assert result is not None
    assert dict(result.attributes)["relay_host"] == result.instance


@settings(max_examples=1000, deadline=None)
@given(
    pad=st.binary(max_size=screenconnect.LEGACY_MAX_OFFSET),
    tag=st.sampled_from([4, 6]),
    host=st.binary(min_size=1, max_size=screenconnect.MAX_HOST).filter(
        lambda h: 1 not in h and 2 not in h
    ),
    end=st.sampled_from([1, 2]),
)
def test_legacy_relay_host_round_trip(pad: bytes, tag: int, host: bytes, end: int) -> None:
    assume(screenconnect.LEGACY_TOKEN not in pad + screenconnect.LEGACY_TOKEN[:-1])
    head = pad + screenconnect.LEGACY_TOKEN + bytes((tag,)) + host + bytes((end,)) + b"tail"
    result = screenconnect.relay_legacy(record(client_head=head))
    assert result is not None
    text = host.decode("ascii", "backslashreplace")
    assert dict(result.attributes)["relay_host"] == text
    assert result.instance == text.lower()


@pytest.mark.parametrize("length", [0, 1, 200, 255])
@pytest.mark.parametrize("closed", [True, False])
def test_m3_inner_length_is_followed(length: int, closed: bool) -> None:
    head = M3_HELLO[:23] + bytes((1, length)) + bytes(length) + (b"\x01" if closed else b"")
    result = screenconnect.relay_m3(record(client_head=head))
    assert (result is not None) == closed


# --- instance keys -----------------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()))
def test_key_hash_is_a_sha256_of_any_text(k: str) -> None:
    digest = screenconnect.key_hash(k)
    assert re.fullmatch("[0-9a-f]{64}", digest)
    assert digest == screenconnect.key_hash(k)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_key_hash_of_base64_hashes_the_decoded_blob(blob: bytes) -> None:
    assert screenconnect.key_hash(base64.b64encode(blob).decode()) == (
        hashlib.sha256(blob).hexdigest()
    )


# --- enrichers on records whose fields come from random bytes ----------------------------------


def http_summary(target: bytes, host: bytes, agent: bytes, server: bytes | None) -> HttpSummary:
    """Request and response heads with the given raw bytes, through the real HTTP parsers."""
    head = b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nUser-Agent: " + agent
    try:
        request = parse_http_request(head + b"\r\n\r\n")
        response = None
        if server is not None:
            response = parse_http_response(b"HTTP/1.1 200 OK\r\nServer: " + server + b"\r\n\r\n")
    except ParseError:
        assume(False)
        raise  # not reached: assume(False) ends the example
    assume(request is not None)
    assert request is not None
    return HttpSummary((request,), response)


URL_BYTES = st.lists(
    st.sampled_from([b"/Bin/x.exe?", b"h=", b"p=", b"k=", b"e=", b"&", b"%", b"%zz", b"+", b";"])
    | st.binary(max_size=20).map(lambda b: re.sub(rb"[ \r\n]", b"", b)),
    max_size=12,
).map(b"".join)
HEADER_BYTES = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def enrich_records(draw: st.DrawFn) -> FlowRecord:
    alpn = draw(
        st.lists(
            TEXTISH | st.tuples(TEXTISH, TEXTISH).map(lambda t: f"anydesk/{t[0]}/{t[1]}"),
            max_size=3,
        )
    )
    certs = draw(
        st.lists(
            st.builds(
                cert,
                st.none() | TEXTISH | TEXTISH.map(lambda t: f"CN=AnyDesk Client{t}"),
                TEXTISH,
            ),
            max_size=2,
        )
    )
    sni = draw(st.none() | TEXTISH | TEXTISH.map(lambda t: f"{t}.screenconnect.com"))
    names = draw(st.lists(TEXTISH | TEXTISH.map(lambda t: f"instance-{t}-relay.screenconnect.com")))
    http = None
    if draw(st.booleans()):
        target = b"/" + draw(URL_BYTES)
        server = draw(st.none() | HEADER_BYTES | HEADER_BYTES.map(lambda b: b"ScreenConnect/" + b))
        http = http_summary(target, draw(HEADER_BYTES), draw(HEADER_BYTES), server)
    return record(
        dest_port=draw(st.sampled_from([443, 7070, 8040])),
        tls=tls(sni, tuple(alpn), tuple(certs), tuple(reversed(certs))),
        dns=DnsSummary(tuple(DnsQuestion(n, 1) for n in names), (), (0,)),
        http=http,
        client_head=draw(BYTES),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(enrich_records())
def test_enrichers_on_random_records(rec: FlowRecord) -> None:
    for enrich in ENRICHERS.values():
        result = enrich(rec)
        assert_decoded(result)
    sc = dict(screenconnect.enrich(rec).attributes)
    if "key_sha256" in sc:
        assert re.fullmatch("[0-9a-f]{64}", sc["key_sha256"])
    ad = anydesk.enrich(rec)
    assert rec.tls is not None
    offered = [a.split("/") for a in rec.tls.alpn_offered if a.startswith("anydesk/")]
    offered = [parts for parts in offered if len(parts) >= 3]
    if offered:
        assert dict(ad.attributes)["client_version"] == offered[0][1]
    if ad.instance is not None:
        assert ad.instance.startswith("cert:")


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=1, max_size=64), host=HEADER_BYTES.filter(bool))
def test_screenconnect_instance_key_from_an_installer_url(key: bytes, host: bytes) -> None:
    b64 = base64.b64encode(key).replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D")
    rec = record(http=http_summary(b"/Bin/x.exe?h=relay.example&p=443&k=" + b64, host, b"", None))
    result = screenconnect.enrich(rec)
    digest = hashlib.sha256(key).hexdigest()
    assert ("key_sha256", digest) in result.attributes
    assert result.instance == "key:" + digest[:16]


# --- YAML: configuration and signature files ---------------------------------------------------

YAML_ALPHABET = st.sampled_from(list("[]{}:-,&*!|>'\"#%@`?<= \n\t.0123456789abcxyzTFn~\\"))
YAML_TOKENS = st.sampled_from(
    ["!!binary", "!!timestamp", "!!float", "!!int", "!!set", "!!omap", "!!python/object:os.system",
     "<<:", "&a", "*a", "---", "...", "%YAML 1.1", "%TAG ! tag:x:", "\ufeff", "\x00", "\x85",
     "0x1F", "0o17", "1_000", "1:20", ".inf", ".nan", "2024-02-30", "2024-01-01 25:00:00",
     "0001-01-01 00:00:00+01:00", "9999-12-31 23:59:59-01:00", "9" * 5000, "1e99999"]
)  # fmt: skip
YAMLISH = st.lists(YAML_ALPHABET | YAML_TOKENS | st.text(max_size=5), max_size=60).map("".join)


def only_source_error(text: str) -> list[object]:
    """Each loader's result on ``text``; a SourceError is a result, any other exception fails."""
    results: list[object] = []
    for load in (load_yaml, load_settings, load_tool_file):
        try:
            results.append(load("site.yaml", text))
        except SourceError as exc:
            assert exc.path == "site.yaml"
            assert exc.line >= 0
            assert str(exc).startswith(f"site.yaml:{exc.line}: ")
            results.append(exc)
    return results


LOADER_SETTINGS = settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # re's "possible nested set" on odd regexes
@LOADER_SETTINGS
@given(st.text(max_size=400))
def test_loaders_on_random_text(text: str) -> None:
    only_source_error(text)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@LOADER_SETTINGS
@given(YAMLISH)
def test_loaders_on_random_yaml_syntax(text: str) -> None:
    only_source_error(text)


def mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for where, cut, insert in edits:
        at = where % (len(text) + 1)
        text = text[:at] + insert + text[at + cut :]
    return text


EDITS = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 12), st.text(max_size=8) | YAML_TOKENS),
    min_size=1,
    max_size=6,
)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@LOADER_SETTINGS
@given(st.sampled_from([CONFIG_EXAMPLE, *SIGNATURE_TEXTS]), EDITS)
def test_loaders_on_mutated_real_files(text: str, edits: list[tuple[int, int, str]]) -> None:
    only_source_error(mutate(text, edits))


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.dates()
    | st.sampled_from(["10.0.0.0/8", "::/0", "*.example.com", "screenconnect", "anydesk", "relay"])
)
KNOWN_KEYS = st.sampled_from(
    [*TOP_KEYS, *POLICY_KEYS, *ENTRY_KEYS, *FIELDS, "max_flows", "tcp_idle_s", "spool_max",
     "interface", "workers", "tool", "signatures", "match", "id", "channel", "confidence",
     "equals", "suffix", "regex", "pattern", "offset", "depth", "range", "min", "max", "in",
     "absent", "prefix", "contains", "has", "attribute", "references", "name"]
)  # fmt: skip
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KNOWN_KEYS, inner, max_size=5),
    max_leaves=25,
)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@LOADER_SETTINGS
@given(st.dictionaries(KNOWN_KEYS, DOCUMENTS, max_size=6))
def test_loaders_on_random_documents_with_known_keys(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    results = only_source_error(text)
    assert isinstance(results[0], Located)  # safe_dump writes valid YAML
    if isinstance(results[1], Settings):
        assert set(doc) <= set(TOP_KEYS)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_loaders_read_any_file_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "site.yaml")
        with open(path, "wb") as fh:
            fh.write(data)
        for load in (load_settings, load_tool_file):
            try:
                load(path)
            except SourceError as exc:
                assert exc.path == path


DEEP = 1500


@pytest.mark.parametrize(
    ("text", "load"),
    [
        ("[" * DEEP, load_yaml),
        ("{a: " * DEEP + "1" + "}" * DEEP, load_yaml),
        ("".join(" " * i + "a:\n" for i in range(DEEP)), load_settings),
        ("policy: " + "[" * DEEP, load_tool_file),
    ],
    ids=["open-lists", "flow-maps", "block-maps", "under-a-key"],
)
def test_nesting_beyond_the_parser_depth_is_a_source_error(text: str, load: Any) -> None:
    with pytest.raises(SourceError, match=r"^site\.yaml:0: invalid YAML: nested too deeply$"):
        load("site.yaml", text)


def test_nested_aliases_are_refused_before_they_expand() -> None:
    # Nine levels of ten aliases each would be 10**9 values ("billion laughs").
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    for load in (load_yaml, load_settings, load_tool_file):
        with pytest.raises(SourceError, match=r"^site\.yaml:1: a1\[0\]: YAML aliases are not"):
            load("site.yaml", "\n".join(lines))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('owner: "a\\bb"', "a\bb"),
        ('owner: "\\x00\\x1b[2J"', "\x00\x1b[2J"),
        ('owner: "\\u202e"', "\u202e"),
    ],
)
def test_double_quoted_escapes_are_values_not_errors(text: str, value: str) -> None:
    assert load_yaml("site.yaml", text).value["owner"].value == value


@pytest.mark.parametrize(
    "text",
    ["%YAML 1." + "9" * 5000 + "\n--- {}", "x: !!int ''", "x: !!bool maybe", "x: !!timestamp x",
     "x: !!float ''", "x: !!binary 'A'"],
)  # fmt: skip
def test_malformed_directives_and_tagged_scalars_are_source_errors(text: str) -> None:
    for load in (load_yaml, load_settings, load_tool_file):
        with pytest.raises(SourceError, match=r"^site\.yaml:\d+: "):
            load("site.yaml", text)


SIGNATURE_HEAD = "tool: demo\nsignatures:\n  - id: demo-1\n    channel: relay\n"


@pytest.mark.parametrize(
    "regex",
    ["a{4294967296}", "a{99999999999999999999}", "(" * 1000 + ")" * 1000, "[", "(?P<a>)(?P=b)"],
    ids=["repeat-2^32", "repeat-huge", "nested-1000", "open-set", "bad-backref"],
)
def test_signature_regexes_re_cannot_compile_are_source_errors(regex: str) -> None:
    match = f"    confidence: high\n    match:\n      tls.sni: {{regex: '{regex}'}}\n"
    text = SIGNATURE_HEAD + match
    with pytest.raises(SourceError, match=r"bad regex"):
        load_tool_file("demo.yaml", text)


@pytest.mark.parametrize("path", SIGNATURE_FILES, ids=lambda p: p.name)
def test_the_shipped_files_still_load(path: Path) -> None:
    assert isinstance(load_tool_file(str(path)), ToolFile)
