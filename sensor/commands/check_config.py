"""`rmm-sensor check-config FILE`: validate a configuration (and its signatures) without running."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sensor.config import load_settings
from sensor.signatures.loader import load_index
from sensor.yamlsource import SourceError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "check-config",
        help="validate a configuration file (exit 2 with file:line: key: problem)",
    )
    p.add_argument("config", metavar="FILE")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        index = load_index(settings.signatures or None)
    except SourceError as exc:
        print(f"rmm-sensor: error: {exc}", file=sys.stderr)
        return 2
    unknown = sorted({e.tool for e in settings.policy.sanctioned} - set(index.tools))
    if unknown:
        print(
            f"rmm-sensor: warning: sanctioned entries name tools without signatures: "
            f"{', '.join(unknown)}",
            file=sys.stderr,
        )
    print(
        f"ok: {args.config}: {len(settings.policy.sanctioned)} sanctioned entries, "
        f"{len(index.signatures)} signatures for {len(index.tools)} tools"
    )
    return 0
