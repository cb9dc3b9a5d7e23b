"""Readable tables for a terminal. Every value from the wire goes through ``escape``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from sensor.model import PROTO_NAMES, Alert, FlowRecord, Session
from sensor.text import escape
from sensor.timestamps import iso_time

MAX_CELL = 48


def _cell(value: object) -> str:
    return escape("" if value is None else str(value), max_len=MAX_CELL)


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out.write(fmt.format(*headers).rstrip() + "\n")
    out.write(fmt.format(*("-" * w for w in widths)).rstrip() + "\n")
    for row in rows:
        out.write(fmt.format(*row).rstrip() + "\n")


def session_rows(sessions: Sequence[Session]) -> list[list[str]]:
    return [
        [
            iso_time(s.start_ns)[:19].replace("T", " "),
            _cell(s.tool),
            _cell(s.channel),
            _cell(f"{s.src_ip}:{s.src_port}"),
            _cell(f"{s.dest_ip}:{s.dest_port}/{PROTO_NAMES.get(s.proto, s.proto)}"),
            _cell(s.instance or s.server_name or ""),
            _cell(s.confidence),
            _cell(s.verdict or "-"),
            str(s.bytes_toserver + s.bytes_toclient),
        ]
        for s in sessions
    ]


SESSION_HEADERS = ("start (UTC)", "tool", "channel", "client", "server", "instance",
                   "confidence", "verdict", "bytes")  # fmt: skip


def flow_rows(flows: Sequence[FlowRecord]) -> list[list[str]]:
    rows = []
    for f in flows:
        name = ""
        if f.tls is not None and f.tls.server_name:
            name = f.tls.server_name
        elif f.http is not None and f.http.requests and f.http.requests[0].host:
            name = f.http.requests[0].host
        elif f.dns is not None and f.dns.queries:
            name = f.dns.queries[0].name
        rows.append(
            [
                iso_time(f.start_ns)[:19].replace("T", " "),
                PROTO_NAMES.get(f.proto, str(f.proto)),
                _cell(f"{f.src_ip}:{f.src_port}"),
                _cell(f"{f.dest_ip}:{f.dest_port}"),
                _cell(f.app_proto or "-"),
                _cell(name),
                f"{f.pkts_toserver}/{f.pkts_toclient}",
                f"{f.bytes_toserver}/{f.bytes_toclient}",
            ]
        )
    return rows


ALERT_HEADERS = (
    "time (UTC)",
    "severity",
    "rule",
    "tool",
    "client",
    "instance",
    "repeats",
    "message",
)


def alert_rows(alerts: Sequence[Alert]) -> list[list[str]]:
    return [
        [
            iso_time(a.ts_ns)[:19].replace("T", " "),
            a.severity,
            a.rule,
            _cell(a.session.tool),
            _cell(a.session.src_ip),
            _cell(a.session.instance or a.session.server_name or a.session.dest_ip),
            str(a.repeats),
            escape(a.message, max_len=100),
        ]
        for a in alerts
    ]


FLOW_HEADERS = ("start (UTC)", "proto", "client", "server", "app", "name", "pkts c/s", "bytes c/s")
