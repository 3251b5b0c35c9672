"""The ``riskguard`` command. Nothing imports this package; it imports everything."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from riskguard import __version__
from riskguard.cli import live, offline
from riskguard.cli.common import EXIT_FAILED, TOP_EXIT_CODES_HELP
from riskguard.demo import cli as demo_cli


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="riskguard",
        description="A real-time kill switch for algorithmic trading.",
        epilog=TOP_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"riskguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_cli.add_parser(sub)
    live.add_parsers(sub)
    offline.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``riskguard`` console script.

    When whoever reads the output goes away (``riskguard replay ... | head``), the
    command stops there, quietly, with exit code 1: no traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # what is still buffered for the closed pipe must not fail again at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
