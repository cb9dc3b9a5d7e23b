"""Flow table: orientation, timeouts, bound and eviction."""

from __future__ import annotations

import gc
import socket
import struct
import tracemalloc

import pytest

from sensor.flows.table import (
    COMPACT_SLACK,
    NS,
    Flow,
    FlowSettings,
    FlowTable,
    key_ports,
    reverse_key,
    sender_is_client,
)

SYN, SYNACK, ACK = 0x02, 0x12, 0x10


def key(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def table(**kw: int) -> tuple[FlowTable, list[tuple[Flow, str]]]:
    ended: list[tuple[Flow, str]] = []
    return FlowTable(FlowSettings(**kw), lambda f, r: ended.append((f, r))), ended


def test_reverse_key_ipv4_and_ipv6() -> None:
    k = key("10.0.0.1", "10.0.0.2", 1234, 443)
    assert reverse_key(k) == key("10.0.0.2", "10.0.0.1", 443, 1234)
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(
        socket.AF_INET6, "2001:db8::2"
    )
    k6 = six + struct.pack("!HH", 5000, 53)
    assert reverse_key(reverse_key(k6)) == k6
    assert key_ports(reverse_key(k6)) == (53, 5000)


@pytest.mark.parametrize(
    ("proto", "sport", "dport", "flags", "client"),
    [
        (6, 50000, 443, SYN, True),  # SYN: the sender is the client
        (6, 443, 50000, SYNACK, False),  # SYN/ACK: the sender is the server
        (6, 443, 50000, ACK, False),  # mid-stream: the service port decides
        (6, 50000, 8041, ACK, True),
        (6, 40000, 50000, ACK, False),  # neither known: lower port is the server
        (6, 50000, 40000, ACK, True),
        (17, 53, 40000, 0, False),  # a DNS answer seen first
        (17, 40000, 53, 0, True),
        (17, 50001, 50001, 0, True),  # same port both sides: the sender asked first
        (17, 40001, 40002, 0, True),
    ],
)
def test_orientation(proto: int, sport: int, dport: int, flags: int, client: bool) -> None:
    assert sender_is_client(proto, key("10.0.0.1", "10.0.0.2", sport, dport), flags) is client


def test_both_directions_find_the_same_flow() -> None:
    t, _ = table()
    k = key("10.0.0.1", "10.0.0.2", 50000, 443)
    d = t.create(6, k, 0, SYN)
    assert t.tcp[k] is d and d.is_client
    assert t.tcp[reverse_key(k)] is d.flow.s2c
    assert d.flow.key == k


def test_created_from_the_server_side_is_oriented() -> None:
    t, _ = table()
    k = key("10.0.0.2", "10.0.0.1", 443, 50000)
    d = t.create(6, k, 0, SYNACK)
    assert not d.is_client
    assert d.flow.key == reverse_key(k)


def test_idle_timeout_ends_flows_and_activity_extends_them() -> None:
    t, ended = table(tcp_idle_s=10, udp_idle_s=5)
    a = t.create(6, key("10.0.0.1", "10.0.0.2", 1, 80), 0, SYN)
    b = t.create(17, key("10.0.0.1", "10.0.0.3", 2, 53), 0, 0)
    flow_a, flow_b = a.flow, b.flow
    t.expire(6 * NS)
    assert [(f.id, r) for f, r in ended] == [(flow_b.id, "timeout")]
    a.last = 8 * NS  # a packet at 8 s
    t.expire(12 * NS)
    assert len(ended) == 1
    t.expire(18 * NS)
    assert ended[-1] == (flow_a, "timeout")
    assert t.active == 0 and not t.tcp and not t.udp


def test_closed_flows_go_quickly() -> None:
    t, ended = table(tcp_idle_s=600, tcp_closed_s=10)
    d = t.create(6, key("10.0.0.1", "10.0.0.2", 1, 80), 0, SYN)
    flow = d.flow
    t.close_soon(flow, 1 * NS)
    t.expire(12 * NS)
    assert ended == [(flow, "closed")]


def test_max_age_splits_long_flows() -> None:
    t, ended = table(tcp_idle_s=600, max_age_s=60)
    d = t.create(6, key("10.0.0.1", "10.0.0.2", 1, 80), 0, SYN)
    flow = d.flow
    for s in range(0, 700, 30):
        d.last = s * NS
        t.expire(s * NS)
        if ended:
            break
    assert ended == [(flow, "max_age")]


def test_bound_evicts_and_counts() -> None:
    t, ended = table(max_flows=3)
    for i in range(5):
        t.create(17, key("10.0.0.1", "10.0.0.2", 1000 + i, 53), i, 0)
    assert t.active == 3
    assert t.ended_by == {"evicted": 2}
    assert [f.id for f, _ in ended] == [1, 2]  # the oldest go first


def test_eviction_spares_a_busy_old_flow() -> None:
    """A flood of new flows must not push out a long session that is still talking."""
    t, ended = table(max_flows=3)
    session = t.create(6, key("10.0.0.1", "10.0.0.2", 50000, 443), 0, SYN)
    for i in range(1, 20):
        session.last = i * NS  # a packet every second
        t.create(6, key("10.6.6.6", "10.0.0.2", 1000 + i, 80), i * NS, SYN)  # flood
    assert t.active == 3
    assert session.flow not in [f for f, _ in ended]
    assert {r for _, r in ended} == {"evicted"} and len(ended) == 17


def test_flush_ends_everything_in_start_order() -> None:
    t, ended = table()
    t.create(17, key("10.0.0.1", "10.0.0.2", 2, 53), 5, 0)
    t.create(6, key("10.0.0.1", "10.0.0.2", 1, 80), 3, SYN)
    t.flush()
    assert [f.first for f, _ in ended] == [3, 5]
    assert {r for _, r in ended} == {"end"}


def test_an_ended_flow_is_freed_without_the_cycle_collector() -> None:
    t, ended = table(udp_idle_s=5)
    gc.collect()
    gc.disable()
    try:
        for port in range(100):
            t.create(17, key("10.0.0.1", "10.0.0.3", port, 53), 0, 0)
        t.expire(6 * NS)
        assert len(ended) == 100
        ended.clear()
        # Reference counting freed the flows: the collector finds nothing left in a cycle.
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_running_flow_is_identified_after_the_grace_and_once() -> None:
    # Live, a flow is judged while it runs, but not before a DNS answer seen by another worker
    # had time to name its server.
    seen: list[Flow] = []
    t = FlowTable(FlowSettings(), lambda f, r: None, seen.append)
    early = t.create(6, key("10.0.0.1", "10.0.0.2", 40000, 443), 10 * NS, SYN)
    early.last = 10 * NS + NS // 10
    t.identify_now(early.flow)  # its first bytes told all after 0.1 s: too soon
    t.expire(11 * NS)
    assert seen == []
    t.expire(12 * NS)
    assert seen == [early.flow]
    t.identify_now(early.flow)
    t.expire(20 * NS)
    assert seen == [early.flow]

    slow = t.create(6, key("10.0.0.1", "10.0.0.3", 40001, 443), 30 * NS, SYN)
    slow.last = 33 * NS
    t.identify_now(slow.flow)  # past the grace already: at once
    assert seen == [early.flow, slow.flow]

    ended = t.create(6, key("10.0.0.1", "10.0.0.4", 40002, 443), 40 * NS, SYN)
    t.identify_now(ended.flow)
    t.end(ended.flow, "closed")
    t.expire(50 * NS)
    assert seen == [early.flow, slow.flow]


def test_ended_flows_are_not_held_by_their_timeout_entries() -> None:
    # A flood of short, complete connections: each closed flow still has its idle entry in the
    # timeout heap (due 600 s later). Those entries must not keep the flows and their buffers
    # alive: memory follows the running flows, not the connection rate.
    ended = [0]  # counted, not kept: keeping them would hold them

    def count(_flow: Flow, _reason: str) -> None:
        ended[0] += 1

    t = FlowTable(FlowSettings(tcp_closed_s=1), count)
    most = 0
    tracemalloc.start()
    try:
        for i in range(60_000):
            ts = i * NS // 1000  # 1,000 connections a second, each gone 1 s after its FIN
            d = t.create(6, key("10.0.0.1", f"10.1.{i >> 8 & 255}.{i & 255}", 40000, 443), ts, SYN)
            d.buf = bytearray(4000)  # still inspecting when it closed
            t.close_soon(d.flow, ts)
            if i % 100 == 0:
                t.expire(ts)
            most = max(most, t.active)
            assert len(t._deadlines) <= 2 * most + COMPACT_SLACK + 1
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert ended[0] > 58_000 and most < 1_200
    # 60,000 flows of 4 KB would hold 240 MB; the running ones and the slack, about 30 MB.
    assert held < 60_000_000, held
