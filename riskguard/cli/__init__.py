"""The ``riskguard`` command. Nothing imports this package; it imports everything."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from riskguard import __version__
from riskguard.cli import live, offline
from riskguard.demo import cli as demo_cli


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="riskguard", description="A real-time kill switch for algorithmic trading."
    )
    parser.add_argument("--version", action="version", version=f"riskguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_cli.add_parser(sub)
    live.add_parsers(sub)
    offline.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``riskguard`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
