"""Tests for the DNS parser: real captures, built messages, hostile compression, properties."""

from __future__ import annotations

import struct
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.protocols.dns import (
    MAX_ANSWERS,
    MAX_QUESTIONS,
    RRTYPE_NAMES,
    DnsAnswer,
    DnsMessage,
    DnsQuestion,
    parse_dns,
    parse_dns_tcp,
    rrtype_name,
)
from sensor.protocols.errors import ParseError

CAPTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "captures"
DNS_PORTS = frozenset({53, 5353, 5355})

A, NS, CNAME, PTR, TXT, AAAA, SRV, NULL = 1, 2, 5, 12, 16, 28, 33, 10


# --- reading real captures -------------------------------------------------------------------


def _udp_payloads(name: str, ports: frozenset[int] = DNS_PORTS) -> Iterator[tuple[bool, bytes]]:
    """(was it encapsulated in VLAN/PPPoE, UDP payload) for every UDP packet on ``ports``."""
    with (CAPTURES / name).open("rb") as handle:
        for _ts, frame in dpkt.pcap.UniversalReader(handle):
            eth = dpkt.ethernet.Ethernet(frame)
            layer = eth.data
            encapsulated = bool(getattr(eth, "vlan_tags", None))
            # Ethernet -> (PPPoE -> PPP ->) IP -> UDP; dpkt has already stripped VLAN tags.
            for _ in range(3):
                if isinstance(layer, dpkt.pppoe.PPPoE | dpkt.ppp.PPP):
                    encapsulated = True
                    layer = layer.data
            if not isinstance(layer, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            udp = layer.data
            if isinstance(udp, dpkt.udp.UDP) and {udp.sport, udp.dport} & ports:
                yield encapsulated, bytes(udp.data)


def _messages(name: str) -> list[DnsMessage]:
    return [parse_dns(payload) for _enc, payload in _udp_payloads(name)]


# --- building messages -----------------------------------------------------------------------


def wire_name(name: str) -> bytes:
    """Uncompressed wire form of a dotted ASCII name ("" is the root)."""
    labels = [label.encode() for label in name.split(".")] if name else []
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def question(name: bytes, rrtype: int = A, rrclass: int = 1) -> bytes:
    return name + struct.pack("!HH", rrtype, rrclass)


def record(name: bytes, rrtype: int, rdata: bytes, ttl: int = 300, rrclass: int = 1) -> bytes:
    return name + struct.pack("!HHIH", rrtype, rrclass, ttl, len(rdata)) + rdata


def message(
    questions: list[bytes],
    answers: list[bytes] = [],  # noqa: B006 - never mutated
    *,
    msg_id: int = 0x1234,
    flags: int = 0x8180,
    qdcount: int | None = None,
    ancount: int | None = None,
    extra: bytes = b"",
) -> bytes:
    header = struct.pack(
        "!HHHHHH",
        msg_id,
        flags,
        len(questions) if qdcount is None else qdcount,
        len(answers) if ancount is None else ancount,
        0,
        0,
    )
    return header + b"".join(questions) + b"".join(answers) + extra


QNAME_OFFSET = 12  # the first question's name always starts right after the header

CNAME_CHAIN = message(
    [question(wire_name("www.Example.com"))],
    [
        # www.Example.com CNAME edge.example.net ; edge.example.net CNAME e1.cdn.example.net ;
        # e1.cdn.example.net A 192.0.2.10 -- names compressed the way real servers do.
        record(pointer(QNAME_OFFSET), CNAME, b"\x04edge\x07example\x03net\x00", ttl=60),
        record(pointer(45), CNAME, b"\x02e1\x03cdn" + pointer(50), ttl=30),
        record(pointer(75), A, bytes([192, 0, 2, 10]), ttl=20),
    ],
)


def test_cname_chain_with_compression() -> None:
    msg = parse_dns(CNAME_CHAIN)
    assert msg.questions == (DnsQuestion("www.Example.com", A),)
    assert msg.answers == (
        DnsAnswer("www.Example.com", CNAME, 60, "edge.example.net"),
        DnsAnswer("edge.example.net", CNAME, 30, "e1.cdn.example.net"),
        DnsAnswer("e1.cdn.example.net", A, 20, "192.0.2.10"),
    )


# --- real captures ---------------------------------------------------------------------------


def test_ndpi_dns_capture_including_vlan_pppoe() -> None:
    payloads = list(_udp_payloads("bg-ndpi-dns.pcap"))
    assert len(payloads) == 5
    assert sum(encapsulated for encapsulated, _ in payloads) == 2
    messages = [parse_dns(payload) for _enc, payload in payloads]
    queried = {q.name for m in messages if not m.is_response for q in m.questions}
    assert queried == {"www.example.com", "e7.whatsapp.net"}
    # The two PPPoE-in-QinQ packets are the e7.whatsapp.net query and its answer.
    tunnelled = [parse_dns(p) for enc, p in payloads if enc]
    assert [m.questions for m in tunnelled] == [(DnsQuestion("e7.whatsapp.net", A),)] * 2
    answer = tunnelled[1]
    assert answer.is_response and answer.rcode == 0 and answer.opcode == 0
    assert answer.id == tunnelled[0].id
    assert [a.data for a in answer.answers] == [
        "169.45.219.235",
        "169.47.40.142",
        "169.45.248.121",
        "108.168.176.234",
        "169.45.248.189",
        "169.45.248.180",
        "169.53.81.79",
        "169.45.219.232",
    ]
    assert {(a.name, a.rrtype, a.ttl) for a in answer.answers} == {("e7.whatsapp.net", A, 491)}
    aaaa = [m for m in messages if m.questions and m.questions[0].name == "www.example.com"]
    assert [m.questions[0].rrtype for m in aaaa] == [AAAA, AAAA]


def test_anydesk_relay_answers() -> None:
    messages = _messages("anydesk-2022-ndpi.pcapng")
    assert len(messages) == 4
    resolved = {a.name: a.data for m in messages for a in m.answers if a.rrtype == A}
    assert resolved == {
        "relay-9b6827f2.net.anydesk.com": "138.199.36.115",
        "relay-3185a847.net.anydesk.com": "37.61.223.15",
    }
    queries = [m for m in messages if not m.is_response]
    assert all(m.answers == () for m in queries)
    assert {q.name for m in queries for q in m.questions} == set(resolved)


def test_wikipedia_mdns_llmnr_and_cname_chains() -> None:
    payloads = [p for _enc, p in _udp_payloads("bg-zeek-wikipedia.pcap")]
    assert len(payloads) == 40
    # ParseError would be acceptable for LAN chatter, but every message here is well formed
    # (mDNS answers without questions, NSEC and SRV records, LLMNR queries).
    messages = [parse_dns(payload) for payload in payloads]
    chains = {
        tuple((a.name, a.rrtype, a.data) for a in m.answers)
        for m in messages
        if m.questions and m.questions[0].name == "meta.wikimedia.org" and m.answers
    }
    assert (
        ("meta.wikimedia.org", CNAME, "text.wikimedia.org"),
        ("text.wikimedia.org", CNAME, "text.pmtpa.wikimedia.org"),
        ("text.pmtpa.wikimedia.org", A, "208.80.152.2"),
    ) in chains
    llmnr = {q.name for m in messages for q in m.questions if q.name.startswith("BRW")}
    assert llmnr == {"BRWC0CB383D1F42"}  # case kept as sent
    srv = [a for m in messages for a in m.answers if a.rrtype == SRV]
    assert srv and all(a.data is None for a in srv)
    assert srv[0].name == "gemini._sftp-ssh._tcp.local"


@pytest.mark.parametrize(
    "capture", ["bg-zeek-wikipedia.pcap", "bg-ndpi-dns.pcap", "anydesk-2022-ndpi.pcapng"]
)
def test_agrees_with_dpkt(capture: str) -> None:
    compared = 0
    for _enc, payload in _udp_payloads(capture):
        ours = parse_dns(payload)
        try:
            theirs = dpkt.dns.DNS(payload)
        except dpkt.UnpackError:
            continue  # dpkt rejects some record types (e.g. NSEC in mDNS); nothing to compare
        assert ours.id == theirs.id
        assert [q.name for q in ours.questions] == [q.name for q in theirs.qd]
        assert [(a.name, a.rrtype, a.ttl) for a in ours.answers] == [
            (a.name, a.type, a.ttl) for a in theirs.an
        ]
        assert [a.data for a in ours.answers if a.rrtype == A] == [
            ".".join(str(b) for b in a.ip) for a in theirs.an if a.type == A
        ]
        compared += 1
    assert compared >= 4


# --- built messages --------------------------------------------------------------------------


def test_header_fields() -> None:
    msg = parse_dns(message([question(wire_name("x.test"))], msg_id=0xBEEF, flags=0x2803))
    assert (msg.id, msg.is_response, msg.opcode, msg.rcode) == (0xBEEF, False, 5, 3)


def test_aaaa_and_other_types() -> None:
    v6 = bytes.fromhex("20010db8000000000000000000000001")
    msg = parse_dns(
        message(
            [question(wire_name("v6.example"), AAAA)],
            [
                record(pointer(QNAME_OFFSET), AAAA, v6),
                record(pointer(QNAME_OFFSET), TXT, b"\x05hello"),
                record(pointer(QNAME_OFFSET), NS, wire_name("ns1.example")),
                record(wire_name("1.2.0.192.in-addr.arpa"), PTR, pointer(QNAME_OFFSET)),
                record(wire_name(""), 65534, b"\xff" * 7, ttl=0xFFFFFFFF),
            ],
        )
    )
    assert [(a.rrtype, a.data) for a in msg.answers] == [
        (AAAA, "2001:db8::1"),
        (TXT, None),
        (NS, "ns1.example"),
        (PTR, "v6.example"),
        (65534, None),
    ]
    assert msg.answers[4].name == "" and msg.answers[4].ttl == 0xFFFFFFFF


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (b"plain", "plain"),
        (b"MiXeD", "MiXeD"),
        (b"a.b", "a\\.b"),
        (b"back\\slash", "back\\\\slash"),
        ("bücher".encode(), "bücher"),
        (b"\xff\xfe", "\\xff\\xfe"),
        (b"esc\x1bseq", "esc\x1bseq"),  # valid str; escaping for display is sensor.text's job
        (b"", None),  # an empty label is the root: the name ends there
    ],
)
def test_label_decoding(label: bytes, expected: str | None) -> None:
    name = bytes([len(label)]) + label + b"\x03com\x00"
    msg = parse_dns(message([question(name)]))
    if expected is None:
        # The root label ends the name early, so "\x03com\x00" is read as type and class.
        assert msg.questions[0].name == ""
    else:
        assert msg.questions[0].name == f"{expected}.com"


def test_name_of_exactly_255_bytes_is_accepted() -> None:
    labels = ["a" * 63, "b" * 63, "c" * 63, "d" * 61]
    name = ".".join(labels)
    assert len(wire_name(name)) == 255
    assert parse_dns(message([question(wire_name(name))])).questions[0].name == name


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: message([question(wire_name(".".join(["x" * 63] * 4)))]), id="256"),
        pytest.param(lambda: message([question(wire_name(".".join(["y" * 63] * 8)))]), id="512"),
        pytest.param(
            # 201-byte name reached through a pointer, behind a 62-byte label: 263 bytes.
            lambda: message(
                [
                    question(wire_name(".".join(["s" * 49] * 4))),
                    question(b"\x3d" + b"p" * 61 + pointer(QNAME_OFFSET)),
                ]
            ),
            id="compressed-263",
        ),
    ],
)
def test_names_longer_than_255_bytes(build: Callable[[], bytes]) -> None:
    with pytest.raises(ParseError, match="255"):
        parse_dns(build())


def _loop_message(entry: int) -> bytes:
    # question at 12 (root name, 5 bytes); a NULL record at 17 whose rdata at 28..31 holds two
    # pointers aimed at each other; a second record named by a pointer into that loop.
    loop = pointer(30) + pointer(28)
    data = message(
        [question(wire_name(""))],
        [record(wire_name(""), NULL, loop), record(pointer(entry), A, b"\x7f\x00\x00\x01")],
    )
    assert data[28:32] == loop
    return data


HOSTILE = {
    "self-pointer": message([question(pointer(QNAME_OFFSET))]),
    "label-then-pointer-to-own-start": message([question(b"\x01a" + pointer(QNAME_OFFSET))]),
    "two-pointer-loop-entered-at-second": _loop_message(30),
    "two-pointer-loop-entered-at-first": _loop_message(28),
    "forward-pointer": message(
        [question(pointer(QNAME_OFFSET + 6)), question(wire_name("later.example"))]
    ),
    "pointer-past-end": message([question(pointer(0x3FFF))]),
    "pointer-into-header": message([question(b"\x01a" + pointer(2))]),
    "extended-label-0x40": message([question(b"\x41" + b"x" * 10 + b"\x00")]),
    "reserved-label-0x80": message([question(b"\x81" + b"x" + b"\x00")]),
    "65535-answers": message([question(wire_name("a.example"))], ancount=0xFFFF),
    "65535-questions": message([question(wire_name("a.example"))], qdcount=0xFFFF),
    "answer-count-one-too-many": message(
        [question(wire_name("a.example"))],
        [record(pointer(QNAME_OFFSET), A, b"\x01\x02\x03\x04")],
        ancount=2,
        extra=b"\x00" * 10,  # 10 spare bytes pass the size check, but not a whole record
    ),
    "a-record-5-bytes": message([], [record(wire_name("a"), A, b"\x01\x02\x03\x04\x05")]),
    "aaaa-record-4-bytes": message([], [record(wire_name("a"), AAAA, b"\x01\x02\x03\x04")]),
    "cname-with-trailing-bytes": message([], [record(wire_name("a"), CNAME, b"\x01b\x00junk")]),
    "cname-running-past-rdlength": message(
        [], [record(wire_name("a"), CNAME, b"\x05bc")], extra=b"def\x00"
    ),
    "rdlength-past-end": message([], [record(wire_name("a"), TXT, b"abc")])[:-1],
    "short-header": b"\x12\x34\x81\x80\x00\x01",
    "empty": b"",
}


@pytest.mark.parametrize("data", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_messages_raise_parse_error_quickly(data: bytes) -> None:
    start = time.perf_counter()
    for _ in range(200):
        with pytest.raises(ParseError):
            parse_dns(data)
    assert time.perf_counter() - start < 2.0


def _compression_bomb(into_the_middle: bool) -> bytes:
    """A 100-label name followed by a 127-pointer chain leading back to it, then 63 A records.

    The records are named either by pointers to the chain's far end (each name takes 128
    jumps) or by pointers to successive labels of the long name.
    """
    long_name = b"\x01a" * 100 + b"\x00"
    rdata_at = 12 + 5 + 11  # after the header, a root question and the NULL record's fixed part
    rdata = bytearray(long_name)
    chain: list[int] = []
    for _ in range(127):
        chain.append(rdata_at + len(rdata))
        rdata += pointer(chain[-2] if len(chain) > 1 else rdata_at)
    if into_the_middle:
        targets = [rdata_at + 2 * i for i in range(63)]
    else:
        targets = [chain[-1 - i] for i in range(63)]
    records = [record(pointer(t), A, b"\x0a\x00\x00\x01") for t in targets]
    return message([question(wire_name(""))], [record(wire_name(""), NULL, bytes(rdata)), *records])


@pytest.mark.parametrize("into_the_middle", [False, True], ids=["pointer-chain", "mid-name"])
def test_compression_bombs_are_decoded_in_linear_time(into_the_middle: bool) -> None:
    bomb = _compression_bomb(into_the_middle)
    msg = parse_dns(bomb)
    names = [a.name for a in msg.answers[1:]]
    if into_the_middle:
        assert names == [".".join(["a"] * (100 - i)) for i in range(63)]
    else:
        assert names == [".".join(["a"] * 100)] * 63
    # Same size and record count, but every name written out: the bomb may cost a few times
    # more, never the ~20x that re-walking the chain or the long name for each record costs.
    plain = message(
        [question(wire_name(""))],
        [record(wire_name(""), NULL, b"\x00" * 455)]
        + [record(wire_name("a.example"), A, b"\x0a\x00\x00\x01")] * 63,
    )
    assert abs(len(plain) - len(bomb)) < 600
    bomb_time = min(timeit.repeat(lambda: parse_dns(bomb), number=20, repeat=5))
    plain_time = min(timeit.repeat(lambda: parse_dns(plain), number=20, repeat=5))
    assert bomb_time < 6 * plain_time


def test_question_and_answer_caps() -> None:
    questions = [question(wire_name(f"q{i}.example")) for i in range(MAX_QUESTIONS + 6)]
    answers = [
        record(wire_name(f"r{i}.example"), A, bytes([10, 0, i // 256, i % 256]))
        for i in range(MAX_ANSWERS + 36)
    ]
    msg = parse_dns(message(questions, answers))
    assert len(msg.questions) == MAX_QUESTIONS
    assert msg.questions[-1].name == f"q{MAX_QUESTIONS - 1}.example"
    # The extra questions are skipped, so the answers after them are still found.
    assert len(msg.answers) == MAX_ANSWERS
    assert msg.answers[0] == DnsAnswer("r0.example", A, 300, "10.0.0.0")
    assert msg.answers[-1].data == f"10.0.0.{MAX_ANSWERS - 1}"


def test_answers_beyond_the_cap_are_not_read() -> None:
    good = [record(wire_name("ok"), A, b"\x01\x01\x01\x01")] * MAX_ANSWERS
    broken = record(wire_name("bad"), A, b"\x01\x01\x01")  # wrong length, but never reached
    msg = parse_dns(message([], [*good, broken]))
    assert len(msg.answers) == MAX_ANSWERS


def test_every_truncation_of_a_real_answer_raises() -> None:
    payload = [p for _enc, p in _udp_payloads("anydesk-2022-ndpi.pcapng")][1]
    assert parse_dns(payload).answers  # the response, which has no authority/additional data
    assert payload[8:12] == b"\x00\x00\x00\x00"
    for cut in range(len(payload)):
        with pytest.raises(ParseError):
            parse_dns(payload[:cut])


# --- TCP -------------------------------------------------------------------------------------


def _tcp(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def test_tcp_stream_messages() -> None:
    query = message([question(wire_name("www.Example.com"))], flags=0x0100)
    stream = _tcp(query, CNAME_CHAIN)
    parsed = parse_dns_tcp(stream + b"\x00")  # plus the first byte of a third length prefix
    assert parsed is not None
    assert [m.is_response for m in parsed] == [False, True]
    assert parsed[1] == parse_dns(CNAME_CHAIN)


def test_tcp_every_prefix() -> None:
    first, second = message([question(wire_name("a.example"))]), CNAME_CHAIN
    stream = _tcp(first, second)
    for cut in range(len(stream) + 1):
        parsed = parse_dns_tcp(stream[:cut])
        if cut < 2 + len(first):
            assert parsed is None
        elif cut < len(stream):
            assert parsed == (parse_dns(first),)
        else:
            assert parsed == (parse_dns(first), parse_dns(second))


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(b"\x00\x00", id="zero-length"),
        pytest.param(b"\x00\x05hello", id="shorter-than-header"),
        pytest.param(_tcp(HOSTILE["self-pointer"]), id="malformed-message"),
        pytest.param(_tcp(CNAME_CHAIN) + b"\x00\x03", id="bad-second-prefix"),
    ],
)
def test_tcp_malformed(stream: bytes) -> None:
    with pytest.raises(ParseError):
        parse_dns_tcp(stream)


# --- type names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rrtype", "name"),
    [
        (1, "A"),
        (2, "NS"),
        (5, "CNAME"),
        (6, "SOA"),
        (12, "PTR"),
        (15, "MX"),
        (16, "TXT"),
        (28, "AAAA"),
        (33, "SRV"),
        (41, "OPT"),
        (64, "SVCB"),
        (65, "HTTPS"),
        (255, "ANY"),
        (65534, "TYPE65534"),
        (0, "TYPE0"),
    ],
)
def test_rrtype_name(rrtype: int, name: str) -> None:
    assert rrtype_name(rrtype) == name


def test_rrtype_names_is_immutable() -> None:
    with pytest.raises(TypeError):
        RRTYPE_NAMES[1] = "B"  # type: ignore[index]
    assert RRTYPE_NAMES[1] == "A"


# --- properties ------------------------------------------------------------------------------

REAL = [p for _enc, p in _udp_payloads("bg-zeek-wikipedia.pcap")][:12] + [
    p for _enc, p in _udp_payloads("bg-ndpi-dns.pcap")
]


def _outcome(data: bytes) -> DnsMessage | None:
    try:
        result = parse_dns(data)
    except ParseError:
        return None
    assert isinstance(result, DnsMessage)
    assert len(result.questions) <= MAX_QUESTIONS and len(result.answers) <= MAX_ANSWERS
    for name in [q.name for q in result.questions] + [a.name for a in result.answers]:
        name.encode("utf-8")  # always a valid str
    return result


@pytest.mark.parametrize("payload", REAL, ids=[f"real{i}" for i in range(len(REAL))])
def test_real_truncations_at_every_length(payload: bytes) -> None:
    assert _outcome(payload) is not None
    for cut in range(len(payload)):
        _outcome(payload[:cut])


@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _outcome(data)


@given(
    st.integers(0, 4),
    st.integers(0, 8),
    st.binary(max_size=300),
)
def test_random_bodies_behind_plausible_headers(qd: int, an: int, body: bytes) -> None:
    _outcome(struct.pack("!HHHHHH", 1, 0x8180, qd, an, 0, 0) + body)


@settings(max_examples=300)
@given(st.sampled_from([*REAL, CNAME_CHAIN]), st.lists(st.integers(0, 10**6), max_size=6))
def test_bit_flips_of_real_messages(payload: bytes, flips: list[int]) -> None:
    mutated = bytearray(payload)
    for flip in flips:
        mutated[(flip // 8) % len(mutated)] ^= 1 << (flip % 8)
    _outcome(bytes(mutated))


@given(st.binary(max_size=400))
def test_tcp_random_bytes(data: bytes) -> None:
    try:
        result = parse_dns_tcp(data)
    except ParseError:
        return
    assert result is None or (result and all(isinstance(m, DnsMessage) for m in result))
