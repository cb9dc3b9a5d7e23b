"""Flow lines: ``eve.flow_json`` writes the EVE flow event directly, not through a dict.

The reference here is the event as a dict, in EVE's key order, given to ``json.dumps``: the
direct writer must give the same text for every flow of real captures and for records whose
strings hold anything (control characters, quotes, backslashes, non-ASCII, astral planes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensor.capture.files import read_frames
from sensor.flows.table import FlowSettings
from sensor.model import PROTO_NAMES, FlowRecord
from sensor.output import eve
from sensor.pipeline import Engine
from sensor.timestamps import iso_time

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / ".." / "shared" / "captures"
CAPTURES = [
    SHARED / "anydesk-2022-ndpi.pcapng",
    SHARED / "bg-ndpi-dns.pcap",
    SHARED / "bg-ja4-tls-handshake.pcapng",
    SHARED / "bg-zeek-wikipedia.pcap",
    ROOT / "pcaps" / "demo-mixed.pcap",
    ROOT / "pcaps" / "incident-2023.pcap",
]


def reference_event(r: FlowRecord) -> dict[str, Any]:
    event: dict[str, Any] = {
        "timestamp": iso_time(r.start_ns),
        "event_type": "flow",
        "flow_id": r.flow_id,
        "src_ip": r.src_ip,
        "src_port": r.src_port,
        "dest_ip": r.dest_ip,
        "dest_port": r.dest_port,
        "proto": PROTO_NAMES.get(r.proto, str(r.proto)),
        "community_id": r.community_id,
        "app_proto": r.app_proto or "none",
        "flow": {
            "pkts_toserver": r.pkts_toserver,
            "pkts_toclient": r.pkts_toclient,
            "bytes_toserver": r.bytes_toserver,
            "bytes_toclient": r.bytes_toclient,
            "start": iso_time(r.start_ns),
            "end": iso_time(r.end_ns),
            "age": (r.end_ns - r.start_ns) // 1_000_000_000,
            "reason": r.end_reason,
            "orientation": "handshake" if r.syn_seen else "ports",
        },
    }
    if r.proto == 6:
        event["tcp"] = {
            "tcp_flags_ts": f"{r.tcp_flags_ts:02x}",
            "tcp_flags_tc": f"{r.tcp_flags_tc:02x}",
        }
    if r.tls is not None:
        if r.tls.server_name is not None:
            event["server_name"] = r.tls.server_name
        event["tls"] = eve.tls_fields(r.tls)
    if r.dns is not None:
        event["dns"] = eve.dns_fields(r.dns)
    if r.http is not None:
        event["http"] = eve.http_fields(r.http)
    return event


def reference_line(r: FlowRecord) -> str:
    return json.dumps(reference_event(r), separators=(",", ":"))


@pytest.fixture(scope="module")
def records() -> list[FlowRecord]:
    out: list[FlowRecord] = []
    for capture in CAPTURES:
        engine = Engine(FlowSettings(), out.append)
        engine.run(read_frames(str(capture)))
        engine.flush()
    return out


def test_every_flow_of_real_captures_is_written_as_json_dumps_writes_it(
    records: list[FlowRecord],
) -> None:
    kinds = {(r.proto, r.tls is not None, r.dns is not None, r.http is not None) for r in records}
    assert {(6, True, False, False), (17, False, True, False), (6, False, False, True)} <= kinds
    for r in records:
        assert eve.flow_json(r) == reference_line(r)


TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(
    src=st.ip_addresses().map(str),
    reason=TEXT,
    app=TEXT,
    sni=st.none() | TEXT,
    proto=st.sampled_from([6, 17, 1, 58]),
    flags=st.integers(0, 255),
    start=st.integers(-(1 << 70), 1 << 70),
    length=st.integers(0, 1 << 50),
)
def test_any_strings_and_numbers_are_written_as_json_dumps_writes_them(
    records: list[FlowRecord],
    src: str,
    reason: str,
    app: str,
    sni: str | None,
    proto: int,
    flags: int,
    start: int,
    length: int,
) -> None:
    base = next(r for r in records if r.tls is not None)
    assert base.tls is not None
    record = dataclasses.replace(
        base,
        proto=proto,
        src_ip=src,
        end_reason=reason,
        app_proto=app,
        tcp_flags_ts=flags,
        start_ns=start,
        end_ns=start + length,
        tls=dataclasses.replace(base.tls, server_name=sni),
    )
    line = eve.flow_json(record)
    assert line == reference_line(record)
    assert json.loads(line)["src_ip"] == src
