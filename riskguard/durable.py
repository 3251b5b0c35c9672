"""The two durable file writes riskguard relies on: fsynced append and atomic replace."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def append(path: Path, data: bytes) -> None:
    """Append ``data`` and fsync before returning (audit log, halt journal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(path: Path, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or chunks written one after the other) to a temp file,
    fsync, rename over ``path``, fsync the folder.

    A reader sees the old file or the new one, never half of either, even after a
    crash or power cut (snapshots, journal compaction).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        for chunk in (data,) if isinstance(data, bytes) else data:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
