"""``riskguard status``: evidence with enough digits, times in UTC, what is failing, the
exit code, and one clear line against a server that is not riskguard.

The status document comes from a loopback HTTP server serving a ``/v1/status`` body of
the API's shape (the API itself is tested end to end in tests/integration).
"""

from __future__ import annotations

import copy
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from riskguard.cli import main

T0 = 1_700_000_000_123_000_000

STATUS: dict[str, Any] = {
    "version": "test",
    "instance": "rg-1",
    "ready": True,
    "checks": {"broker_reachable": True},
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


class _Server(BaseHTTPRequestHandler):
    reply: ClassVar[tuple[int, str, bytes]] = (200, "application/json", b"{}")

    def do_GET(self) -> None:
        status, kind, body = self.reply
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(status, content_type, body)`` sets the answer; returns the server's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def answer(body: Any, status: int = 200, kind: str = "application/json") -> str:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        _Server.reply = (status, kind, data)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()


def test_status_shows_value_against_limit_with_enough_digits_and_when(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--url", serve(STATUS)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "riskguard test on rg-1: READY"
    strategy = next(line for line in lines if "strategy:s1" in line)
    assert strategy.split()[1:] == [
        *("HALTED", "2023-11-14", "22:13:20.123", "UTC", "rule", "parent-overfill:"),
        *("parent_overfill_ratio", "1.0000000000000002", "vs", "limit", "1"),
    ]
    account = next(line for line in lines if "account:A1" in line)
    assert account.endswith("22:13:20.123 UTC  rule gross: gross_notional 2,011.19 vs limit 2,000")


def test_status_shows_what_is_failing_and_exits_1_when_not_ready(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status = copy.deepcopy(STATUS)
    status |= {
        "ready": False,
        "checks": {"broker_reachable": False, "limits_loaded": True},
        "notifiers": [
            {
                "sink": "pagerduty",
                "kind": "pagerduty",
                "queued": 2,
                "delivered": 0,
                "failures": 3,
                "last_error": "ClientConnectorError: connection refused",
                "failing": True,
            },
            {"sink": "slack", "kind": "slack", "queued": 0, "delivered": 4, "failures": 1,
             "last_error": "TimeoutError: ", "failing": False},
        ],
        "limits": {"source": "l.toml", "rules": 3, "last_reload_error": "l.toml: rule 'x': bad"},
        "users": {"last_reload_error": "u.toml: user 2 ('bob'): 'role' must be one of ..."},
        "approvals": [
            {"request_id": "r-1", "scope": "firm", "requested_by": "alice", "reason": "back",
             "requested_ns": T0, "expires_ns": T0 + 600 * 10**9},
        ],
        "sources": [
            {"source": "router-1", "last_heard_ns": None, "silent_ms": 2500.0,
             "limit_ms": 2000.0, "rule": "router-silent"},
            {"source": "quiet-ok", "last_heard_ns": T0, "silent_ms": 10.0, "limit_ms": 2000.0,
             "rule": "r"},
        ],
    }  # fmt: skip
    assert main(["status", "--url", serve(status)]) == 1
    out = capsys.readouterr().out
    assert "NOT READY (failing: broker_reachable)" in out
    assert "notifier pagerduty FAILING: 3 failed attempt(s), 2 queued" in out
    assert "connection refused" in out and "slack" not in out  # slack recovered
    assert "limits reload REJECTED" in out and "rule 'x': bad" in out
    assert "users file reload REJECTED" in out and "('bob')" in out
    assert "pending approval r-1: resume firm asked by alice at 2023-11-14 22:13:20.123 UTC" in out
    assert "feed router-1 silent 2.5 s (limit 2 s, rule router-silent); last heard never" in out
    assert "quiet-ok" not in out
    assert main(["status", "--json", "--url", serve(status)]) == 1
    assert json.loads(capsys.readouterr().out)["ready"] is False


@pytest.mark.parametrize(
    ("body", "status", "kind", "says"),
    [
        (b"<html><body>Welcome to nginx</body></html>", 200, "text/html", "text/html"),
        (b"<html>Not Found</html>", 404, "text/html", "answered 404"),
        ({"hello": "world"}, 200, "application/json", "without 'version'"),
        ([1, 2], 200, "application/json", "not a JSON object"),
        ({"version": 1, "instance": "x", "ready": "yes", "checks": [], "standing": {}}, 200,
         "application/json", "wrong shape"),
        (b"", 204, "text/plain", "answered 204"),
    ],
)  # fmt: skip
def test_status_against_a_server_that_is_not_riskguard_says_so_in_one_line(
    serve: Any,
    capsys: pytest.CaptureFixture[str],
    body: Any,
    status: int,
    kind: str,
    says: str,
) -> None:
    url = serve(body, status, kind)
    assert main(["status", "--url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"riskguard status: {url} is not a riskguard API")
    assert says in err and len(err.strip().splitlines()) == 1


def test_status_of_nothing_listening(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("riskguard status: cannot reach http://127.0.0.1:9")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["status", "--url", "notaurl"], None),
        (["status", "--url", "127.0.0.1:8321"], None),
        (["status", "--url", "http://"], None),
        (["status", "--url", "http://127.0.0.1:port"], None),
        (["status"], "localhost:8321"),
        (["halt", "--scope", "firm", "--reason", "r", "--url", "notaurl"], None),
        (["resume", "--scope", "firm", "--reason", "r", "--url", "127.0.0.1:8321"], None),
        (["approve", "r-1", "--reason", "r"], "ftp://127.0.0.1:8321"),
        (["status", "--url", "http://[::1"], None),  # an unclosed IPv6 bracket
        (["status"], "http://[::1:8321"),
    ],
)
def test_an_url_without_http_is_one_line(
    argv: list[str],
    env: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A URL people get wrong (no scheme, no host, a bad port) is named, never a traceback."""
    monkeypatch.delenv("RISKGUARD_HTTP_TOKEN", raising=False)
    if env is None:
        monkeypatch.delenv("RISKGUARD_URL", raising=False)
    else:
        monkeypatch.setenv("RISKGUARD_URL", env)
    assert main(argv) == 2
    err = capsys.readouterr().err
    source = "$RISKGUARD_URL" if env else "--url"
    assert err.startswith(f"riskguard {argv[0]}: {source} '")
    assert "is not an http(s) URL: give it as http://HOST:PORT" in err
    assert len(err.strip().splitlines()) == 1


def test_a_pending_resume_prints_commands_that_reach_the_same_api(
    serve: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RISKGUARD_URL", raising=False)
    pending = {"status": "pending", "request_id": "r-1", "scope": "firm", "state": "HALTED"}
    url = serve(pending, 202)
    assert main(["resume", "--scope", "firm", "--reason", "ok", "--url", url]) == 0
    out = capsys.readouterr().out
    assert f"  approve: riskguard approve r-1 --url {url} --reason '...'" in out
    assert f"  withdraw: riskguard withdraw r-1 --url {url} --reason '...'" in out


@pytest.mark.parametrize("command", ["halt", "resume"])
def test_a_refused_token_says_how_to_give_one(
    command: str,
    serve: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RISKGUARD_HTTP_TOKEN", raising=False)
    url = serve({"error": "missing bearer token"}, 401)
    assert main([command, "--scope", "firm", "--reason", "r", "--url", url]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"riskguard {command}: refused (401): missing bearer token "
        "(give a token: --token-file or $RISKGUARD_HTTP_TOKEN)"
    )


def test_group_mode_shows_the_partitions_owned_and_the_restore(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The counts are of the latest assignment (``scale.checkpoints``), not since start: a
    member that gained nothing at a handover said '3 from a checkpoint' for ever."""
    grouped = copy.deepcopy(STATUS)
    grouped["scale"] = {
        "mode": "group",
        "owned": ["trading.events/0", "trading.events/2"],
        "rebuilds": 2,
        "snapshot_restores": 7,
        "checkpoints": {"trading.events/0": None, "trading.events/2": "snapshot-1.rgs"},
        "last_rebuild_seconds": 0.001,
        "restored_seconds": 0.2059,
    }
    assert main(["status", "--url", serve(grouped)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        "  group mode: owns trading.events/0, trading.events/2 (restored in 0.206 s; gained at "
        "the latest assignment: 1 from a checkpoint, 1 from their start)" in out
    )
    grouped["scale"].update(owned=[], restored_seconds=None, checkpoints={})
    assert main(["status", "--url", serve(grouped)]) == 0
    assert (
        "  group mode: owns none (restoring; gained at the latest assignment: 0 from a "
        "checkpoint, 0 from their start)" in capsys.readouterr().out
    )
    grouped["scale"].update(assigned=False)
    assert main(["status", "--url", serve(grouped)]) == 0  # not restoring: not yet given any
    assert "owns none (WAITING for the group to assign partitions; gained at" in (
        capsys.readouterr().out
    )
    assert main(["status", "--url", serve(STATUS)]) == 0  # single mode: no such line
    assert "group mode" not in capsys.readouterr().out


def test_group_mode_says_who_judges_the_sums_and_which_symbols_no_mark_reached(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    grouped = copy.deepcopy(STATUS)
    agg = {"judging": True, "complete": True, "instances": ["rg-a", "rg-b"], "rules": ["r"],
           "other_limits": [], "missing": [], "split": []}  # fmt: skip
    grouped["scale"] = {"mode": "group", "owned": ["t/0"], "rebuilds": 1,
                        "restored_seconds": 0.1, "aggregate": agg,
                        "marks": {"unmarked": 1, "unmarked_symbols": ["ABC"]}}  # fmt: skip
    assert main(["status", "--url", serve(grouped)]) == 0
    out = capsys.readouterr().out
    assert "cross-partition rules: judged here, on the sums of rg-a, rg-b" in out
    assert "UNMARKED: 1 symbol(s) held or worked that no mark reached (ABC)" in out
    agg.update(complete=False, missing=["t/1"])
    assert main(["status", "--url", serve(grouped)]) == 0
    assert "NOT JUDGED, the sums are not whole (missing t/1" in capsys.readouterr().out
    agg.update(due=False, rules=[], complete=True)  # nothing to sum: no alarm
    assert main(["status", "--url", serve(grouped)]) == 0
    out = capsys.readouterr().out
    assert "cross-partition rules: none in these limits (nothing to sum)" in out
    assert "NOT JUDGED" not in out
    agg.update(judging=False, due=True, rules=["r"])
    assert main(["status", "--url", serve(grouped)]) == 0
    assert "judged by the owner of the first input partition" in capsys.readouterr().out


def test_topic_problems_are_shown_one_line_each(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    reply = copy.deepcopy(STATUS)
    line = "riskguard.control: cleanup.policy is delete, wanted compact (gates open)"
    fixed = "riskguard.dead-letter: cleanup.policy is compact, wanted delete (bad events lost)"
    reply["topics"] = {"problems": [line], "repaired": [f"{fixed}; repaired"], "checks": 2}
    assert main(["status", "--url", serve(reply)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"  TOPIC: {line}" in out
    assert not any(o.startswith("  TOPIC:") and fixed in o for o in out), "repairs are no problem"
    assert f"  topic repaired: {fixed}" in out  # one line each, "repaired" said once


def test_each_topic_repair_is_one_line_even_without_problems(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    reply = copy.deepcopy(STATUS)
    repairs = [
        "riskguard.control: cleanup.policy is delete, wanted compact (gates open); repaired",
        "riskguard.dead-letter: exists is no, wanted yes (bad events lost); repaired",
    ]
    reply["topics"] = {"problems": [], "repaired": repairs, "checks": 3}
    assert main(["status", "--url", serve(reply)]) == 0
    out = capsys.readouterr().out.splitlines()
    shown = [o for o in out if o.startswith("  topic repaired: ")]
    assert shown == [
        "  topic repaired: riskguard.control: cleanup.policy is delete, wanted compact "
        "(gates open)",
        "  topic repaired: riskguard.dead-letter: exists is no, wanted yes (bad events lost)",
    ]
    assert not any("TOPIC" in o for o in out)


def test_status_shows_the_consumer_lag_most_behind_first_and_former_peers_in_one_line(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status = copy.deepcopy(STATUS)
    status["consumer_lag"] = [
        {"topic": "ev", "partition": p, "messages": n} for p, n in enumerate([0, 12, 1500, 3, 7, 0])
    ]
    status["peers"] = [
        {"instance": "rg-2", "live": False, "age_ms": 125_000.0, "limits_sha256": "ab" * 32}
    ]
    status["peers_gone"] = {"count": 7, "after_ms": 600_000, "latest": ["a", "b", "c", "d", "e"]}
    assert main(["status", "--url", serve(status)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "  events applied 12, bad 0; consumer lag 1,522 message(s) "
        "(ev/2 1,500, ev/1 12, ev/4 7, 1 more)"
    )
    assert "  peer rg-2: NOT LIVE, heartbeat 2.08 min ago, limits abababababab" in lines
    status["checks"]["broker_reachable"] = False  # the lag shown is the last one measured
    status["ready"] = False
    assert main(["status", "--url", serve(status)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith(
        " (ev/2 1,500, ev/1 12, ev/4 7, 1 more) as last measured (no fetch gets through)"
    )
    assert lines[-1] == (
        "  7 former peer(s) silent for over 10 min, no longer listed (stopped, scaled in or "
        "renamed): a, b, c, d, e and 2 more"
    )


@pytest.mark.parametrize("content", ["line one\nline two\n", "tok en", "tok\x00en"])
def test_a_token_file_holding_more_than_a_token_is_refused_without_showing_it(
    serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    # a secret file given by mistake (a password file, a key) must not reach the terminal
    secret = tmp_path / "secret"
    secret.write_text(content)
    assert main(["status", "--url", serve(STATUS), "--token-file", str(secret)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"riskguard status: the token file {secret} holds more than a token (several lines, "
        "spaces or control characters): give a file with your token alone\n"
    )


def test_a_request_taken_but_not_answered_says_it_may_still_be_carried_out() -> None:
    # a riskguard paused (SIGSTOP) takes the connection and answers later: a halt sent
    # then was carried out once it ran again, while the CLI said "cannot reach"
    from riskguard.cli.client import ApiError, request  # noqa: PLC0415

    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen()  # the kernel accepts; nobody answers
    url = f"http://127.0.0.1:{mute.getsockname()[1]}"
    try:
        with pytest.raises(ApiError) as post:
            request(f"{url}/v1/halt", "POST", {"scope": "firm"}, timeout_s=0.3)
        with pytest.raises(ApiError) as get:
            request(f"{url}/v1/status", timeout_s=0.3)
    finally:
        mute.close()
    assert post.value.code == 2 and str(post.value) == (
        f"{url} took the request but did not answer within 0.3 s: the request may still be "
        "carried out; check with `riskguard status` before repeating it"
    )
    assert str(get.value).endswith(
        "did not answer within 0.3 s (riskguard stopped, paused or overloaded?)"
    )


def test_status_shows_what_was_decided_and_has_not_reached_its_end(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status = copy.deepcopy(STATUS)
    status["control_pending"] = ["account:A1", "strategy:s1"]
    order = {"order_id": "o-7", "scope": "strategy:s1", "halt_id": "h", "late": True}
    status["cancels"] = {
        "deadline_ms": 1000,
        "incomplete": {
            "alert_id": "a",
            "count": 5,
            "orders": [order, {**order, "order_id": "o-8"}],
        },
    }
    status["paused"] = {"times": 2, "last_ms": 12_500.0}
    assert main(["status", "--url", serve(status)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        "  NOT ON THE CONTROL TOPIC yet (gates do not see them; retried): account:A1, strategy:s1"
    ) in lines
    assert (
        "  CANCEL INCOMPLETE (cancel-incomplete): 5 order(s) still working past the 1,000 ms "
        "deadline: o-7 (strategy:s1), o-8 (strategy:s1) and 3 more"
    ) in lines
    assert (
        "  riskguard itself did not run 2 time(s), the last for 12.5 s (process stopped, VM "
        "paused or event loop blocked)"
    ) in lines
    status = copy.deepcopy(STATUS)
    status["cancels"] = {"deadline_ms": 1000, "incomplete": {"count": 0, "orders": []}}
    status["paused"] = {"times": 0, "last_ms": 0.0}
    status["control_pending"] = []
    assert main(["status", "--url", serve(status)]) == 0
    quiet = capsys.readouterr().out
    assert "CONTROL TOPIC" not in quiet and "CANCEL" not in quiet and "did not run" not in quiet


def test_the_help_of_status_and_approve_names_every_exit_1_they_give(
    serve: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status` refused (a wrong or missing token) exits 1, so its help must say that 1
    is not only 'not ready' (a monitor reading 1 as 'riskguard not ready' pages on a
    typo in a token); `approve` of a resume the standing breach re-halts at once exits 1
    (as `resume` does, and says)."""
    from riskguard.cli.common import (  # noqa: PLC0415
        APPROVE_EXIT_CODES_HELP,
        STATUS_EXIT_CODES_HELP,
    )

    monkeypatch.delenv("RISKGUARD_HTTP_TOKEN", raising=False)
    assert main(["status", "--url", serve({"error": "unknown bearer token"}, 401)]) == 1
    assert "refused (401)" in capsys.readouterr().err
    status_1 = STATUS_EXIT_CODES_HELP.split("\n  1  ")[1].split("\n  2  ")[0]
    assert "401" in status_1
    approve_1 = APPROVE_EXIT_CODES_HELP.split("\n  1  ")[1].split("\n  2  ")[0]
    assert "re-halted at once" in approve_1


def test_status_shows_snapshots_failing_until_one_is_written(
    serve: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A state dir that cannot be written: riskguard decides on, but a restart would replay
    everything since the last snapshot; status said nothing of it (the verifier, s21).
    The snapshot part comes from a real Checkpoints whose write failed."""
    import asyncio  # noqa: PLC0415

    from riskguard.engine import Engine  # noqa: PLC0415
    from riskguard.examples import LIMITS  # noqa: PLC0415
    from riskguard.ingest.checkpoint import Checkpoints  # noqa: PLC0415
    from riskguard.limits import load  # noqa: PLC0415
    from riskguard.metrics import Metrics  # noqa: PLC0415
    from riskguard.settings import RuntimeSettings  # noqa: PLC0415
    from tests.builders import new  # noqa: PLC0415

    (tmp_path / "snapshots").write_text("not a folder")
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply([new("o1")])
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=0.001)
    checkpoints = Checkpoints(runtime, engine, Metrics())

    async def attempt() -> None:
        await asyncio.sleep(0.01)
        checkpoints.maybe_snapshot()
        await asyncio.gather(*[t for t in asyncio.all_tasks() if t.get_name() == "snapshot-write"])

    asyncio.run(attempt())
    reply = copy.deepcopy(STATUS)
    reply["snapshot"] = checkpoints.status()
    assert reply["snapshot"]["failing"] == 1
    assert main(["status", "--url", serve(reply)]) == 0
    shown = [o for o in capsys.readouterr().out.splitlines() if "SNAPSHOT FAILING" in o]
    assert len(shown) == 1 and "snapshot write failed" in shown[0] and "none this run" in shown[0]
    reply["snapshot"] |= {"failing": 0, "last_error": None, "last_written": "snapshot-1.rgs"}
    assert main(["status", "--url", serve(reply)]) == 0
    assert "SNAPSHOT FAILING" not in capsys.readouterr().out
