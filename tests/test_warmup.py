"""Whether the kernels are in numba's cache decides the first-run notice (issue 12, part 5):
an empty cache means a compile is coming; a warm one, no notice at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from riskguard.cli import main
from riskguard.engine import warm_up
from riskguard.warmup import COMPILE_NOTICE, kernels_cached


def test_an_empty_numba_cache_is_seen_as_cold(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from riskguard.warmup import kernels_cached as k; print(k())"],
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_warm_kernels_need_no_notice(capsys: pytest.CaptureFixture[str]) -> None:
    warm_up()
    assert kernels_cached()
    assert main(["replay", "--example", "--no-progress", "--quiet-alerts"]) == 0
    assert COMPILE_NOTICE not in capsys.readouterr().err
    assert "first run only" in COMPILE_NOTICE
