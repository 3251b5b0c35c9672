"""The README's Python example runs as printed (every name it uses is defined)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_engine_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    section = README.read_text().split("## Using the engine from Python", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    exec(compile(code, "README.md", "exec"), {})  # the documented example itself
    printed = capsys.readouterr().out.splitlines()
    assert "strategy:smars ACTIVE -> HALTED parent-overfill" in "\n".join(printed)
