"""`rmm-sensor signatures lint|list`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sensor.output import table
from sensor.signatures.loader import load_index
from sensor.yamlsource import SourceError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("signatures", help="check or list signatures")
    p.add_argument("--signatures", metavar="DIR", help="signature directory")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lint = actions.add_parser("lint", help="validate the signature files (exit 2 on error)")
    lint.set_defaults(run=_lint)
    listing = actions.add_parser("list", help="list tools, channels and signatures")
    listing.add_argument("--verbose", "-v", action="store_true", help="one line per signature")
    listing.set_defaults(run=_list)


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
