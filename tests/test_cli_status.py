"""``riskguard status`` prints each standing halt's evidence with enough digits.

The status document comes from a loopback HTTP server serving a ``/v1/status`` body of
the API's shape (the API itself is tested end to end in tests/integration/test_api.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from riskguard.cli import main

T0 = 1_700_000_000_000_000_000

STATUS: dict[str, Any] = {
    "version": "test",
    "instance": "rg-1",
    "ready": True,
    "checks": {"broker": True},
    "events_applied": 12,
    "bad_events": 0,
    "standing": {
        "strategy:s1": {
            "id": f"strategy:s1@{T0}:HALTED",
            "scope": "strategy:s1",
            "from": "ACTIVE",
            "to": "HALTED",
            "kind": "auto",
            "ts": T0,
            "decided_ns": T0,
            "rule": "parent-overfill",
            "metric": "parent_overfill_ratio",
            "value": 1.0000000000000002,
            "limit": 1,
        },
        "account:A1": {
            "id": f"account:A1@{T0}:REDUCE_ONLY",
            "scope": "account:A1",
            "from": "ACTIVE",
            "to": "REDUCE_ONLY",
            "kind": "auto",
            "ts": T0,
            "decided_ns": T0,
            "rule": "gross",
            "metric": "gross_notional",
            "value": 2011.194586,
            "limit": 2000,
        },
    },
}


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(STATUS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_status_shows_value_against_limit_with_enough_digits(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    strategy = next(line for line in lines if "strategy:s1" in line)
    assert strategy.split()[1:] == [
        "HALTED",
        "rule",
        "parent-overfill:",
        "parent_overfill_ratio",
        "1.0000000000000002",
        "vs",
        "limit",
        "1",
    ]
    account = next(line for line in lines if "account:A1" in line)
    assert account.endswith("rule gross: gross_notional 2,011.19 vs limit 2,000")
