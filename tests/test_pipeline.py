"""The engine end to end on crafted frames: orientation, reassembly, parsers, counters."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from sensor.capture.files import Frame, Records, frame, read_frames
from sensor.flows.table import NS, FlowSettings
from sensor.model import FlowRecord
from sensor.pipeline import Engine
from sensor.protocols.dns import DnsMessage
from tests.capbuild import CAPTURES
from tests.protocols.tlsbuild import client_hello_body, handshake, record, sni_ext

C, S = "10.1.0.5", "203.0.113.9"


def client_hello_record(server_name: str) -> bytes:
    body = client_hello_body(extensions=[sni_ext(server_name.encode())])
    return record(22, handshake(1, body), version=0x0301)


def frames(packets: Iterable[Packet], start: int = 1_700_000_000 * NS) -> list[Frame]:
    out = []
    for i, p in enumerate(packets):
        data = bytes(p)
        out.append(frame(start + i * 1_000_000, 1, data, len(data)))
    return out


def run(packets: Iterable[Packet], **kw: int) -> tuple[Engine, list[FlowRecord]]:
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(**kw), records.append)
    engine.run(frames(packets))
    engine.flush()
    return engine, records


def tcp(
    src: str, dst: str, sport: int, dport: int, flags: str, seq: int, payload: bytes = b""
) -> Packet:
    return (
        Ether()
        / IP(src=src, dst=dst)
        / TCP(sport=sport, dport=dport, flags=flags, seq=seq)
        / payload
    )


def session(
    payload_c: list[tuple[int, bytes]], payload_s: list[tuple[int, bytes]] = ()
) -> list[Packet]:  # type: ignore[assignment]
    pkts = [
        tcp(C, S, 40000, 443, "S", 999),
        tcp(S, C, 443, 40000, "SA", 4999),
        tcp(C, S, 40000, 443, "A", 1000),
    ]
    pkts += [tcp(C, S, 40000, 443, "PA", 1000 + off, data) for off, data in payload_c]
    pkts += [tcp(S, C, 443, 40000, "PA", 5000 + off, data) for off, data in payload_s]
    return pkts


def test_handshake_orients_and_counts() -> None:
    engine, records = run(session([(0, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")]))
    (r,) = records
    assert (r.src_ip, r.src_port, r.dest_ip, r.dest_port) == (C, 40000, S, 443)
    assert r.syn_seen and r.pkts_toserver == 3 and r.pkts_toclient == 1
    assert r.app_proto == "http" and r.http is not None
    assert r.http.requests[0].host == "a.example"
    assert engine.stats.packets == 4 and engine.table.created == 1


def test_client_hello_split_over_segments_retransmitted_and_reordered() -> None:
    hello = client_hello_record(server_name="split.example")
    a, b, c = hello[:10], hello[10:50], hello[50:]
    pkts = session([(0, a), (len(a) + len(b), c), (0, a), (len(a), b)])
    _, (r,) = run(pkts)
    assert r.tls is not None and r.tls.server_name == "split.example"
    assert r.client_head.startswith(hello[:16])
    assert r.client_first_size == len(a)


def test_first_speaker_and_heads_for_unknown_protocols() -> None:
    pkts = session([], [(0, b"SSH-2.0-OpenSSH_9.6\r\n")])
    _, (r,) = run(pkts)
    assert r.first_speaker == "server" and r.server_head.startswith(b"SSH-2.0")
    assert r.app_proto == "unknown"


def test_mid_stream_flow_oriented_by_port() -> None:
    pkts = [
        tcp(S, C, 443, 40000, "PA", 77, b"\x17\x03\x03\x00\x01x"),
        tcp(C, S, 40000, 443, "A", 5),
    ]
    _, (r,) = run(pkts)
    assert (r.src_ip, r.dest_port, r.syn_seen) == (C, 443, False)


def test_new_syn_after_close_starts_a_new_flow() -> None:
    pkts = [*session([]), tcp(C, S, 40000, 443, "R", 1000), tcp(C, S, 40000, 443, "S", 50)]
    _engine, records = run(pkts)
    assert [r.end_reason for r in records] == ["reused", "end"]


def test_dns_answers_reach_the_hook_and_the_record() -> None:
    query = (
        Ether()
        / IP(src=C, dst="10.1.0.53")
        / UDP(sport=5555, dport=53)
        / DNS(id=7, rd=1, qd=DNSQR(qname="relay-0a1b2c3d.net.anydesk.com"))
    )
    answer = Ether() / IP(src="10.1.0.53", dst=C) / UDP(sport=53, dport=5555) / DNS(
        id=7, qr=1, qd=DNSQR(qname="relay-0a1b2c3d.net.anydesk.com"),
        an=DNSRR(rrname="relay-0a1b2c3d.net.anydesk.com", rdata="203.0.113.40", ttl=60),
    )  # fmt: skip
    seen: list[DnsMessage] = []
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(), records.append, lambda ts, flow, msg: seen.append(msg))
    engine.run(frames([query, answer]))
    assert len(seen) == 1 and seen[0].answers[0].data == "203.0.113.40"
    engine.flush()
    (r,) = records
    assert r.app_proto == "dns" and r.dns is not None and r.dns.queries[0].rrtype == 1


def test_snap_length_cut_stops_inspection_without_corrupting() -> None:
    hello = client_hello_record(server_name="cut.example")
    pkt = tcp(C, S, 40000, 443, "PA", 1000, hello)
    data = bytes(pkt)
    cut = data[: len(data) - 20]
    rows = frames(session([]))
    rows.append(frame(rows[-1][0] + 1, 1, cut, len(data)))
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(), records.append)
    engine.run(rows)
    engine.flush()
    (r,) = records
    assert r.pkts_toserver == 2 + 1 and r.bytes_toserver >= len(data)
    assert r.tls is None or r.tls.server_name is None


def test_counters_for_non_ip_fragments_and_garbage() -> None:
    pkts = [
        Ether() / ARP(),
        Ether() / IP(src=C, dst=S, flags="MF", frag=0) / UDP(sport=1, dport=2) / (b"x" * 20),
        Ether() / IP(src=C, dst=S, proto=1) / b"\x08\x00icmp",
    ]
    rows = [
        *frames(pkts),
        frame(0, 1, b"\x00" * 13, 13),
        frame(0, 1, bytes(Ether(type=2048)) + b"E\x00", 16),
        frame(0, 9999, b"xx", 2),
    ]
    engine, _records = run([])
    engine.run(rows)
    s = engine.stats
    assert s.packets == 6 and s.non_ip == 1
    assert s.decode_errors == {
        "ip_fragment": 1, "truncated_link": 1, "truncated_ip": 1, "unsupported_linktype": 1,
    }  # fmt: skip
    assert s.other_protocols == {1: 1}
    assert engine.table.created == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 101, 113, 276, 228, 229]), st.binary(max_size=120)),
        max_size=30,
    )
)
def test_random_frames_never_escape_and_are_all_counted(rows: list[tuple[int, bytes]]) -> None:
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(), records.append)
    engine.run([frame(i * NS, lt, data, len(data)) for i, (lt, data) in enumerate(rows)])
    engine.flush()
    assert engine.stats.packets == len(rows)
    assert "internal_error" not in engine.stats.decode_errors


def outcome(rows: list[Frame] | Records) -> tuple[object, ...]:
    """Everything an engine made of ``rows``: its counters and its flow records."""
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(), records.append)
    engine.run(rows)
    engine.flush()
    s = engine.stats
    return s.packets, s.bytes, s.non_ip, s.decode_errors, s.other_protocols, records


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 1, 1, 101, 113, 228]),
            st.integers(0, 7),  # which packet of the session, then cut to...
            st.integers(0, 200),  # ...at most this many bytes
            st.binary(max_size=40),  # bytes before it in the buffer
            st.binary(max_size=40),  # and after it
        ),
        max_size=20,
    )
)
def test_a_packet_read_inside_a_larger_buffer_is_the_packet_alone(
    rows: list[tuple[int, int, int, bytes, bytes]],
) -> None:
    """A reader hands out each packet as a slice of its read buffer: nothing before or after the
    slice may show, whether the packet takes the inline decode or the decoders (other link
    types, cut headers)."""
    request = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
    packets = [bytes(p) for p in session([(0, request)], [(0, b"HTTP/1.1 200 OK\r\n\r\n")])]
    alone, inside = [], []
    for i, (lt, which, cut, before, after) in enumerate(rows):
        data = packets[which % len(packets)]
        if lt != 1:
            data = data[14:] if lt in (101, 228) else bytes(2) + data
        data = data[:cut]
        alone.append(frame(i * NS, lt, data, len(data)))
        inside.append((i * NS, lt, before + data + after, len(before), len(data), len(data)))
    assert outcome(inside) == outcome(alone)


def test_time_going_back_ends_the_old_timeline() -> None:
    """A second, older capture after a newer one: the first file's flows end, they don't linger."""
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(), records.append)
    engine.run(frames(session([]), start=1_800_000_000 * NS))
    assert engine.table.active == 1
    engine.run(frames([tcp(C, S, 40001, 443, "S", 1)], start=1_700_000_000 * NS))
    assert [r.end_reason for r in records] == ["time_jump"]
    assert engine.table.active == 1


def test_http_requests_after_large_bodies_are_still_seen() -> None:
    """A keep-alive client: heads are kept, bodies are passed over, whatever their size."""
    body = b"x" * 20_000
    stream = (
        b"POST /Services/ExtensionService.ashx/InstallExtension HTTP/1.1\r\nHost: h\r\n"
        b"Content-Length: 20000\r\n\r\n" + body + b"POST /SetupWizard.aspx/x HTTP/1.1\r\n"
        b"Host: h\r\nContent-Length: 20000\r\n\r\n"
        + body
        + b"GET /App_Extensions/x.ashx HTTP/1.1\r\n"
        b"Host: h\r\n\r\n"
    )
    segments = [(off, stream[off : off + 1400]) for off in range(0, len(stream), 1400)]
    _, (r,) = run(session(segments))
    assert r.http is not None
    assert [q.target for q in r.http.requests] == [
        "/Services/ExtensionService.ashx/InstallExtension",
        "/SetupWizard.aspx/x",
        "/App_Extensions/x.ashx",
    ]
    assert r.client_head.startswith(b"POST /Services/")


def _via_both_paths(
    ip_packets: list[bytes],
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Run IPv4 packets once behind Ethernet (the inline fast path) and once as raw IPv4
    (link type 228, always decode_transport); return comparable views of both runs."""
    views = []
    for linktype, prefix in ((1, bytes(Ether(type=0x0800))), (228, b"")):
        records: list[FlowRecord] = []
        engine = Engine(FlowSettings(), records.append)
        engine.run([frame(i * NS, linktype, prefix + p, len(p)) for i, p in enumerate(ip_packets)])
        engine.flush()
        views.append(
            [
                (
                    r.proto,
                    r.src_ip,
                    r.src_port,
                    r.dest_ip,
                    r.dest_port,
                    r.pkts_toserver,
                    r.pkts_toclient,
                    r.client_head,
                    r.server_head,
                    r.app_proto,
                )
                for r in records
            ]
            + [tuple(sorted(engine.stats.decode_errors.items()))]
        )
    return views[0], views[1]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([6, 17, 1]),
            st.integers(0, 0xFFFF),  # IP total length, often wrong
            st.integers(0, 0x3FFF),  # flags and fragment offset
            st.integers(0, 15),  # TCP data offset
            st.binary(max_size=40),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_inline_ipv4_path_agrees_with_the_general_decoder(
    rows: list[tuple[int, int, int, int, bytes]],
) -> None:
    packets = []
    for proto, total, frag, doff, payload in rows:
        ip = IP(src=C, dst=S, proto=proto, len=total, frag=frag & 0x1FFF, flags=frag >> 13)
        if proto == 6:
            pkt = ip / TCP(sport=40000, dport=443, dataofs=doff, flags="PA") / payload
        elif proto == 17:
            pkt = ip / UDP(sport=5353, dport=53) / payload
        else:
            pkt = ip / payload
        packets.append(bytes(pkt))
    fast, general = _via_both_paths(packets)
    assert fast == general


@pytest.mark.parametrize(
    "name", ["bg-ndpi-1kxun.pcap", "bg-zeek-bro.org.pcap", "teamviewer-ndpi.pcap", "vnc-ndpi.pcap"]
)
def test_records_read_in_place_and_as_tuples_give_the_same_flows(name: str) -> None:
    """The engine reads a capture's records field by field, other sources' frames as tuples:
    the same frames give the same counters and flow records either way."""
    path = str(CAPTURES / name)
    assert outcome(read_frames(path)) == outcome(list(read_frames(path)))
