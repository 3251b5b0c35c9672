"""JSON logs via orjson: secrets redacted; survives the host swapping sys.stderr."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, UnknownError

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


def test_library_logs_are_json_and_their_repeats_are_rate_limited(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log.configure("info")
    lib = logging.getLogger("aiokafka.fake")
    for i in range(500):  # what aiokafka does every 100 ms while a broker is away
        lib.error("Unable connect to node with id %s: %s", 111, f"attempt {i}")
    lib.info("Discovered coordinator")  # a library's info is below riskguard's floor
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines == [
        {
            "logger": "aiokafka.fake",
            "event": "Unable connect to node with id 111: attempt 0",
            "level": "error",
            "timestamp": lines[0]["timestamp"],
        }
    ]


def test_a_retriable_error_aiokafka_retries_is_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log.configure("info")
    lib = logging.getLogger("aiokafka.consumer.group_coordinator")
    lib.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    lib.error("Request failed: %s", UnknownError())  # not retriable: stays an error
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["level"], line.get("retried")) for line in lines] == [
        ("warning", True),
        ("error", None),
    ]


def test_a_repeat_after_the_window_says_how_many_were_left_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log.configure("info")
    handler = log.StructlogHandler(log.RepeatLimiter(window_s=0.2))
    lib = logging.getLogger("aiohttp.fake")
    lib.propagate = False
    lib.addHandler(handler)
    try:
        for _ in range(7):
            lib.warning("same %s", "thing")
        time.sleep(0.3)
        try:
            raise ValueError("boom")
        except ValueError:
            lib.warning("same %s", "thing", exc_info=True)
    finally:
        lib.removeHandler(handler)
        lib.propagate = True
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert "repeated" not in first
    assert second["repeated"] == 6 and second["repeat_window_s"] == 0.2
    assert "ValueError: boom" in second["exception"]


def test_the_limiter_counts_per_key_on_its_own_clock() -> None:
    limiter = log.RepeatLimiter(window_s=10.0, max_keys=2)
    assert limiter.admit("a", now=0.0) == 0
    assert [limiter.admit("a", now=t) for t in (1.0, 5.0, 9.9)] == [None, None, None]
    assert limiter.admit("b", now=2.0) == 0  # another key is not held back
    assert limiter.admit("a", now=10.0) == 3
    assert limiter.admit("c", now=11.0) == 0  # at most two keys: the oldest is forgotten
    assert limiter.admit("b", now=11.5) == 0


def test_warnings_are_json_too() -> None:
    code = (
        "import warnings\nfrom riskguard import log\nlog.configure('info')\n"
        'warnings.warn("a library\'s deprecation", DeprecationWarning, stacklevel=1)\n'
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert record["logger"] == "py.warnings" and "a library's deprecation" in record["event"]
