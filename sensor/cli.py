"""Command line entry point: one module per subcommand under ``sensor.commands``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sensor import __version__
from sensor.commands import analyze, check_config, inventory, live, signatures

# Subcommands in the order `--help` lists them.
COMMANDS = (analyze, live, inventory, check_config, signatures)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmm-sensor",
        description="Fingerprint remote-access (RMM) tools in network traffic.",
    )
    parser.add_argument("--version", action="version", version=f"rmm-sensor {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="rmm-sensor: %(levelname)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `rmm-sensor analyze x.pcap | head`: stop quietly, like other Unix tools.
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
