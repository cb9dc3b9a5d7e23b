"""`rmm-sensor inventory`: every remote-access server in the captures, with versions."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sensor.commands.analyze import analyze_captures
from sensor.config import Settings, load_settings
from sensor.output import table
from sensor.rules.inventory import Server
from sensor.signatures.loader import load_index
from sensor.text import escape
from sensor.timestamps import iso_time
from sensor.yamlsource import SourceError

HEADERS = ("tool", "server", "names", "version", "instance key", "channels", "sessions",
           "first seen (UTC)", "last seen (UTC)", "sanctioned", "outdated")  # fmt: skip


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "inventory", help="list the remote-access servers seen in capture files"
    )
    p.add_argument("captures", nargs="+", metavar="CAPTURE")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--config", metavar="FILE", help="configuration (policy, minimum versions)")
    p.add_argument("--workers", type=int, default=1, metavar="N")
    p.set_defaults(run=run, flows=False, metrics_out=None, signatures=None)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config) if args.config else Settings()
        index = load_index(settings.signatures or None)
    except SourceError as exc:
        print(f"rmm-sensor: error: {exc}", file=sys.stderr)
        return 2
    verdicts, errors = analyze_captures(args, settings, index, [])
    servers = verdicts.inventory.servers()
    if args.format == "json":
        for s in servers:
            sys.stdout.write(json.dumps(server_record(s)) + "\n")
    else:
        table.render(HEADERS, [_row(s) for s in servers], sys.stdout)
    for message in errors:
        print(f"rmm-sensor: error: {message}", file=sys.stderr)
    return 2 if errors else 0


def server_record(s: Server) -> dict[str, Any]:
    return {
        "event_type": "rmm_server",
        "tool": s.tool,
        "address": s.address,
        "port": s.port,
        "names": list(s.names),
        "version": s.version,
        "instance_key_sha256": s.instance_key,
        "channels": list(s.channels),
        "sessions": s.sessions,
        "first_seen": iso_time(s.first_ns),
        "last_seen": iso_time(s.last_ns),
        "sanctioned": s.sanctioned,
        "outdated": s.outdated,
    }


def _row(s: Server) -> list[str]:
    return [
        s.tool,
        f"{s.address}:{s.port}",
        escape(", ".join(s.names), max_len=48),
        escape(s.version or "-", max_len=32),
        (s.instance_key or "-")[:16],
        ",".join(s.channels),
        str(s.sessions),
        iso_time(s.first_ns)[:19].replace("T", " "),
        iso_time(s.last_ns)[:19].replace("T", " "),
        "yes" if s.sanctioned else "no",
        "YES" if s.outdated else "no",
    ]
