"""A consumer whose start is interrupted (Ctrl-C while riskguard starts) is closed, not
left for the garbage collector: asyncio logged ``Unclosed AIOKafkaConsumer`` as an error
after the demo's one-line goodbye (seen in CI)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from riskguard.ingest.connect import started


async def test_a_start_cancelled_midway_closes_the_consumer() -> None:
    # a listener that accepts and never answers: the consumer's start waits on it
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(str(ctx.get("message"))))
    try:
        consumer: Any = AIOKafkaConsumer(
            bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=30_000
        )
        task = asyncio.create_task(started(consumer))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del consumer, task
        gc.collect()
        await asyncio.sleep(0)
        assert not [m for m in seen if "Unclosed AIOKafkaConsumer" in m]
    finally:
        loop.set_exception_handler(None)
        server.close()
        await server.wait_closed()
