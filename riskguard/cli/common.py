"""Exit codes and small helpers shared by the commands."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (invalid file, refused request)
EXIT_USAGE = 2  # bad arguments, unreadable input, unreachable service
