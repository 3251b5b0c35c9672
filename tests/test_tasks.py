"""A background task that fails stops riskguard with one critical line; cancels do not."""

from __future__ import annotations

import asyncio
import json

import pytest

from riskguard import log
from riskguard.ingest.tasks import TaskWatch


async def boom() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("index out of range in the kernel")


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_failed_task_stops_and_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure("info")
    stop = asyncio.Event()
    watch = TaskWatch(stop)
    watch.start(boom(), "tick")
    quiet = watch.start(forever(), "heartbeat")
    await asyncio.wait_for(stop.wait(), 2)
    assert watch.failed == ["tick: RuntimeError('index out of range in the kernel')"]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    (line,) = [x for x in lines if x["level"] == "critical"]
    assert line["task"] == "tick" and "index out of range" in line["error"]
    assert "Traceback" in line["exception"]
    await watch.cancel()
    assert quiet.cancelled() and watch.failed == [
        "tick: RuntimeError('index out of range in the kernel')"
    ]


async def test_cancelled_or_finished_tasks_stop_nothing() -> None:
    stop = asyncio.Event()
    watch = TaskWatch(stop)
    done = watch.start(asyncio.sleep(0), "maintenance")
    watch.start(forever(), "peers")
    await done
    await watch.cancel()
    await asyncio.sleep(0)
    assert not stop.is_set() and watch.failed == []


async def test_a_task_that_swallows_its_cancel_is_cancelled_again() -> None:
    """A library call may swallow a cancellation; the task sleeps on. The stop must not
    wait for it forever: it is cancelled again until it ends."""
    swallowed = 0

    async def swallows_one_cancel() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed == 0:  # the first cancel is lost, as in a shielded commit
                    swallowed += 1
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    continue
                raise

    watch = TaskWatch(asyncio.Event())
    task = watch.start(swallows_one_cancel(), "maintenance")
    await asyncio.sleep(0.02)
    await asyncio.wait_for(watch.cancel(), 3)
    assert task.cancelled() and swallowed == 1
