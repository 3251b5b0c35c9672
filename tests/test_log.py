"""JSON logs via orjson: secrets redacted; survives the host swapping sys.stderr."""

from __future__ import annotations

import io
import json
import sys

import pytest

from riskguard import log


def test_json_lines_with_secrets_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure("info")
    log.get("t").info("hello", token="abc", sasl_plain_password="pw", n=1)
    log.get("t").debug("hidden")
    line = json.loads(capsys.readouterr().err.strip())
    assert line["event"] == "hello" and line["n"] == 1 and line["logger"] == "t"
    assert line["token"] == "***" and line["sasl_plain_password"] == "***"


def test_a_swapped_and_closed_stderr_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log.configure("info")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.get("t").error("still works")
    assert json.loads(second.getvalue())["event"] == "still works"
