"""The kernels compile (or load from numba's cache) in a daemon thread at start, while the
API already answers (``/livez`` alive, ``/readyz`` saying ``kernels_warm`` false).

A daemon thread, not the executor: SIGTERM during a first-run compile must not wait for
it to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from riskguard.engine import is_warm, warm_up
from riskguard.warmup import COMPILE_NOTICE, kernels_cached


def warm_in_thread(log: Any, ready: Callable[[], None]) -> Awaitable[None]:
    """Start compiling the kernels in a daemon thread; the result resolves when they are
    ready (after calling ``ready`` on the event loop), or raises what the compile raised.

    Says so on ``log`` when this is a first run that compiles. Call from a running loop.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    # a start that failed before awaiting it must not leave "exception never retrieved"
    done.add_done_callback(lambda f: f.cancelled() or f.exception())
    if not (is_warm() or kernels_cached()):
        log.warning(COMPILE_NOTICE, phase="warming")
    began = time.perf_counter()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
            return
        ready()
        log.info("kernels ready", seconds=round(time.perf_counter() - began, 2))
        done.set_result(None)

    def compile_them() -> None:
        error: BaseException | None = None
        try:
            warm_up()
        except BaseException as exc:  # handed to the event loop, raised by start()
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=compile_them, name="riskguard-warm-up", daemon=True).start()
    return done
