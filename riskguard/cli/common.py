"""Exit codes and small helpers shared by the commands."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (invalid file, refused request)
EXIT_USAGE = 2  # bad arguments, unreadable input, unreachable service

EXIT_CODES_HELP = """exit codes:
  0  done (status: riskguard is ready)
  1  the command ran and found a problem: a request refused (401, 403, 409, 4xx),
     riskguard not ready (status), a resume re-halted at once by a standing breach
  2  bad arguments, an unreadable file, riskguard unreachable, or a server that is
     not riskguard"""
"""The epilog of every command's ``--help``: what each exit code means."""
