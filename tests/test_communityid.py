"""Our Community ID agrees with the reference package for TCP and UDP over IPv4 and IPv6."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import communityid
from hypothesis import given
from hypothesis import strategies as st

from sensor.capture.files import read_frames
from sensor.communityid import community_id
from sensor.flows.table import FlowSettings
from sensor.model import FlowRecord
from sensor.pipeline import Engine

REFERENCE = communityid.CommunityID()
v4 = st.ip_addresses(v=4)
v6 = st.ip_addresses(v=6)
ports = st.integers(0, 65535)


def reference(proto: int, src: str, dst: str, sport: int, dport: int) -> str:
    make = communityid.FlowTuple.make_tcp if proto == 6 else communityid.FlowTuple.make_udp
    return str(REFERENCE.calc(make(src, dst, sport, dport)))


def test_spec_example() -> None:
    # From the community-id-spec baseline: tcp 128.232.110.120:34855 -> 66.35.250.204:80.
    src = ipaddress.ip_address("128.232.110.120").packed
    dst = ipaddress.ip_address("66.35.250.204").packed
    assert community_id(6, src, dst, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


@given(st.sampled_from([6, 17]), st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), ports, ports)
def test_matches_reference(proto: int, addrs: tuple, sport: int, dport: int) -> None:  # type: ignore[type-arg]
    src, dst = addrs
    ours = community_id(proto, src.packed, dst.packed, sport, dport)
    assert ours == reference(proto, str(src), str(dst), sport, dport)
    assert ours == community_id(proto, dst.packed, src.packed, dport, sport)


def test_flow_records_of_a_real_capture_carry_the_reference_hash() -> None:
    """The record's hash (computed from its address text when asked) is the reference one."""
    records: list[FlowRecord] = []
    capture = Path(__file__).resolve().parents[1] / ".." / "shared" / "captures"
    engine = Engine(FlowSettings(), records.append)
    engine.run(read_frames(str(capture / "bg-ndpi-1kxun.pcap")))
    engine.flush()
    assert {r.proto for r in records} == {6, 17}
    for r in records:
        assert r.community_id == reference(r.proto, r.src_ip, r.dest_ip, r.src_port, r.dest_port)
