"""`rmm-sensor signatures lint|list|export`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sensor.output import table
from sensor.signatures.loader import load_index
from sensor.yamlsource import SourceError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "signatures", help="check, list or export signatures"
    )
    p.add_argument("--signatures", metavar="DIR", help="signature directory")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lint = actions.add_parser("lint", help="validate the signature files (exit 2 on error)")
    lint.set_defaults(run=_lint)
    listing = actions.add_parser("list", help="list tools, channels and signatures")
    listing.add_argument("--verbose", "-v", action="store_true", help="one line per signature")
    listing.set_defaults(run=_list)
    export = actions.add_parser(
        "export", help="write the signatures as rules for another engine (Suricata 7)"
    )
    export.add_argument("--format", choices=("suricata",), required=True, help="rule language")
    export.add_argument("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    export.set_defaults(run=_export)


def _lint(args: argparse.Namespace) -> int:
    try:
        index = load_index(args.signatures)
    except SourceError as exc:
        print(f"rmm-sensor: error: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {len(index.signatures)} signatures for {len(index.tools)} tools")
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        index = load_index(args.signatures)
    except SourceError as exc:
        print(f"rmm-sensor: error: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        rows = [
            [s.tool, s.id, s.channel, s.confidence, s.description[:70]] for s in index.signatures
        ]
        table.render(("tool", "id", "channel", "confidence", "description"), rows, sys.stdout)
        return 0
    rows = []
    for f in index.files:
        channels = sorted({s.channel for s in f.signatures})
        rows.append([f.tool, f.name, ", ".join(channels), str(len(f.signatures))])
    table.render(("tool", "name", "channels", "signatures"), rows, sys.stdout)
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        index = load_index(args.signatures)
    except SourceError as exc:
        print(f"rmm-sensor: error: {exc}", file=sys.stderr)
        return 2
    from sensor.signatures.suricata import export_suricata  # only here: 6 ms of every start

    text = export_suricata(index.files).text()
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        print(f"rmm-sensor: error: {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
