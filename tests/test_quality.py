"""ruff and mypy stay clean with the project's own configuration."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("tool", "args"),
    [("ruff", ["check", "riskguard", "tests", "bench"]), ("mypy", [])],
    ids=["ruff", "mypy"],
)
def test_static_checks(tool: str, args: list[str]) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.fail(f"{tool} is not installed: pip install -e '.[test]'")
    done = subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_modules_stay_focused() -> None:
    """Roughly 500 lines at most per module: split by domain concept past that."""
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "riskguard").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 520
    }
    assert not long, long
