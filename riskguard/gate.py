"""The gate: the small library a trading system embeds to ask "may I send this order?".

It reads riskguard's compacted control topic from the beginning (so it knows every
standing halt, the per-order rules, marks and positions even when it starts late),
follows it live, and answers :meth:`Gate.check` and :meth:`Gate.allows` from memory in
microseconds. It **fails closed**: when riskguard's heartbeat is older than
``heartbeat_timeout_ms``, or riskguard says it is not ready, every order is refused
with the reason. It also hands riskguard's cancel requests (a halt's working orders)
to the trading system's ``on_cancel`` callback.

Usage in an order router (asyncio)::

    from riskguard.gate import CancelRequest, Gate

    async def cancel(request: CancelRequest) -> None:
        for order in request.orders:          # empty for kind "disconnect": cancel all
            await venue.cancel(order.order_id)

    async with Gate("kafka:9092", on_cancel=cancel) as gate:
        ...
        verdict = gate.check(account, strategy, symbol, "buy", qty=100, price=25.10)
        if not verdict:
            reject_order(reason=verdict.reason)   # names the rule, value and limit
        else:
            send_order()

``check`` and ``allows`` never block and never do I/O; the topic is followed by a
background task on the running event loop. The record format and the exact decision
rules are the public contract in ``docs/control-topic.md``; ``docs/gate.md`` is the guide.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from riskguard import log
from riskguard.control import decision
from riskguard.control.cancel_requests import (
    CancelRequest,
    Delivery,
    DisconnectWatch,
    delivery,
    due_cancels,
)
from riskguard.control.decision import Verdict
from riskguard.control.reader import read_to_end
from riskguard.control.records import CancelOrder, CancelRecord, StateRecord
from riskguard.control.view import ControlView, Instant
from riskguard.ingest.closing import stop_consumer

__all__ = ["CancelCallback", "CancelOrder", "CancelRequest", "Gate", "Verdict"]

#: ``on_cancel``: a function or coroutine function taking one :class:`CancelRequest`.
CancelCallback = Callable[[CancelRequest], Awaitable[object] | None]


class _Identity:
    """Ledger key of a callback that cannot be hashed: by identity (held, so never reused)."""

    __slots__ = ("target",)

    def __init__(self, target: object) -> None:
        self.target = target

    def __hash__(self) -> int:
        return id(self.target)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.target is self.target


#: (control topic, callback) -> the (halt_id, source, part) already handed to that
#: callback in this Python process, whichever Gate object read them: a restarted gate
#: never repeats (``source``: the group-mode member that named the part, or "").
_DELIVERED: dict[tuple[str, object], set[Delivery]] = {}
_DELIVERED_LOCK = threading.Lock()


def _ledger_key(topic: str, callback: object) -> tuple[str, object]:
    try:
        hash(callback)
    except TypeError:
        return topic, _Identity(callback)
    return topic, callback


FETCH_MAX_WAIT_MS = 500
"""The gate's default ``fetch_max_wait_ms`` (Apache Kafka's own default). Apache Kafka
answers a fetch as soon as a record arrives, so a long wait costs no latency and spares
the broker empty fetches: measured by ``bench/fetch_wait.py`` on Apache Kafka 4.4, a
gate fetching with 500 ms saw a halt at p50 4.2 / p99 8.9 ms, with 1 ms at 7.5 / 19.4
ms, and the broker's CPU went from 107 % to 34 %. Tansu, the bundled broker, holds a
fetch for half its wait: there pass ``fetch_max_wait_ms=1``
(:data:`riskguard.brokers.TANSU_FETCH_MAX_WAIT_MS`)."""


class Gate:
    """Follows the control topic; answers ``check()`` and ``allows()``; hands over cancels.

    ``on_cancel`` (sync or async) receives each :class:`CancelRequest` part of a halt or
    reduce-only that stands (in group mode, each member's parts), once per process (see
    ``docs/gate.md``); an async one runs
    as a task on the gate's loop. ``cancel_on_disconnect_ms`` (default None: off; an
    integer > 0 needs ``on_cancel``) calls it once with ``kind="disconnect"`` when the
    gate has failed closed that long. Raises ``ValueError`` for a bad
    ``cancel_on_disconnect_ms``. Other keyword arguments go to aiokafka's consumer
    (``security_protocol``, ``sasl_*``, ``ssl_context``, ``fetch_max_wait_ms``: default
    :data:`FETCH_MAX_WAIT_MS`, 1 on the bundled Tansu broker).

    Counters a trading process can expose as metrics (plain Python, no Prometheus
    dependency; exact when ``check`` is called from one thread): ``checks`` (calls of
    ``check``), ``refusals`` (``Counter`` of :attr:`Verdict.cause` over ``check``'s
    refusals: ``rule:<name>``, ``HALTED``, ``REDUCE_ONLY``, ``UNKNOWN``,
    ``fail_closed``), ``cancels_delivered`` (requests handed to ``on_cancel``),
    ``callback_errors`` (calls that raised) and ``rewinds`` (times the topic's offsets
    went back under the gate's position, a broker that lost its data: the gate then
    reads the topic again from its beginning, keeping what it knew).

    ``auto_offset_reset`` is the gate's own (it reads from the beginning, and again
    from the beginning when the offsets go back): passing it raises ``ValueError``.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        control_topic: str = "riskguard.control",
        *,
        heartbeat_timeout_ms: int = 2000,
        request_timeout_ms: int = 30_000,
        on_cancel: CancelCallback | None = None,
        cancel_on_disconnect_ms: int | None = None,
        **kafka_options: Any,
    ) -> None:
        if cancel_on_disconnect_ms is not None:
            if (
                isinstance(cancel_on_disconnect_ms, bool)
                or not isinstance(cancel_on_disconnect_ms, int)
                or cancel_on_disconnect_ms <= 0
            ):
                raise ValueError(
                    f"cancel_on_disconnect_ms must be an integer > 0 or None, "
                    f"got {cancel_on_disconnect_ms!r}"
                )
            if on_cancel is None:
                raise ValueError("cancel_on_disconnect_ms needs on_cancel to call")
        if "auto_offset_reset" in kafka_options:
            raise ValueError(
                "auto_offset_reset is the gate's own: it reads the control topic from its "
                "beginning, and again from its beginning when the topic's offsets go back"
            )
        self.topic = control_topic
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.on_cancel = on_cancel
        self.cancel_on_disconnect_ms = cancel_on_disconnect_ms
        self.view = ControlView()
        #: wall-clock ns at which each scope's latest record was read (for latency checks)
        self.seen_ns: dict[str, int] = {}
        self.checks = 0
        self.refusals: Counter[str] = Counter()
        self.cancels_delivered = 0
        self.callback_errors = 0
        self.rewinds = 0
        #: per partition, the offset after the last record read: the gate's position
        self._next: dict[TopicPartition, int] = {}
        options = {"fetch_max_wait_ms": FETCH_MAX_WAIT_MS, **kafka_options}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            # an offset out of range raises, and _reread reads from the beginning: never
            # aiokafka's silent jump to the end ("latest", its default), which skips
            # records riskguard published again into a re-created topic
            auto_offset_reset="none",
            request_timeout_ms=request_timeout_ms,
            **options,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._callbacks: set[asyncio.Future[object]] = set()
        self._log = log.get("gate")
        self.last_error = ""

    async def start(self, timeout_s: float = 10.0) -> None:
        """Read the control topic to its end, then follow it in the background.

        Until the end is reached ``check``/``allows`` refuse (no heartbeat yet): a
        heartbeat read before a later halt never lets an order through. Once at the end,
        the cancel requests of halts that stand are handed to ``on_cancel`` (those not
        already handed to it in this process). Raises ``TimeoutError`` when the topic is
        missing or cannot be read to its end within ``timeout_s``.
        """
        await self._consumer.start()
        view = ControlView()
        await read_to_end(self._consumer, self.topic, view, timeout_s)
        self.view = view
        for tp in self._consumer.assignment():
            self._next[tp] = await self._consumer.position(tp)
        now = time.time_ns()
        for scope in self.view.states:
            self.seen_ns[scope] = now
        self._deliver(list(self.view.cancels))
        self._tasks.append(asyncio.create_task(self._follow(), name="riskguard-gate"))
        if self.cancel_on_disconnect_ms is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._watch(self.cancel_on_disconnect_ms), name="riskguard-gate-cod"
                )
            )

    async def stop(self) -> None:
        """Stop following (``check``/``allows`` then fail closed once the heartbeat ages
        out). Callbacks already running are left to finish."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await stop_consumer(self._consumer)  # aiokafka leaks a cancellation, broker down

    async def __aenter__(self) -> Gate:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _follow(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=100)
            except OffsetOutOfRangeError as exc:  # Apache Kafka: position past the end
                out = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                await self._reread(list(out) or list(self._next), "offset out of range")
                continue
            except KafkaError as exc:
                self.last_error = repr(exc)
                await asyncio.sleep(0.1)
                continue
            for tp, messages in batch.items():
                if messages:
                    self._next[tp] = messages[-1].offset + 1
                self._receive([m.value for m in messages])
            # Tansu answers a fetch past the end with no records and its high watermark
            ends = {tp: self._consumer.highwater(tp) for tp in self._next}
            behind = [tp for tp, end in ends.items() if end is not None and end < self._next[tp]]
            if behind:
                tp = behind[0]
                await self._reread(behind, f"high watermark {ends[tp]} under {self._next[tp]}")

    async def _reread(self, tps: list[TopicPartition], why: str) -> None:
        """The topic's offsets went back under the gate's position (the broker lost its
        data and the topic was created again): read ``tps`` again from their beginning.
        The view is kept, so a halt the new topic lacks is not forgotten; records read
        again are folded as usual (the latest of each key wins)."""
        self.rewinds += 1
        self._log.error(
            "control topic's offsets went back: reading it again from its beginning",
            topic=self.topic,
            why=why,
            partitions=sorted(tp.partition for tp in tps),
            position=max((self._next.get(tp, 0) for tp in tps), default=0),
        )
        try:
            await self._consumer.seek_to_beginning(*tps)
        except KafkaError as exc:  # the offsets are still back at the next fetch: retried
            self.last_error = repr(exc)
            return
        for tp in tps:
            self._next[tp] = 0

    def _receive(self, values: list[bytes | None]) -> None:
        """Fold values read from the topic, stamp ``seen_ns``, hand over due cancel parts."""
        applied = self.view.fold(values)
        now = time.time_ns()
        touched: list[str] = []
        for record in applied:
            if isinstance(record, StateRecord):
                self.seen_ns[record.scope] = now
                touched.append(record.scope)
            elif isinstance(record, CancelRecord):
                touched.append(record.scope)
        if touched:
            self._deliver(dict.fromkeys(touched))

    async def _watch(self, after_ms: int) -> None:
        """Cancel on disconnect: sample health often enough to fire within ~5% late."""
        watch = DisconnectWatch(after_ms)
        period = min(0.05, after_ms / 20_000)
        while True:
            at = Instant.now()
            alive = decision.health(self.view, self.heartbeat_timeout_ms, at)
            if watch.step(alive.allowed, at.mono_ns):
                self._log.warning(
                    "gate failed closed too long: cancel on disconnect",
                    after_ms=after_ms,
                    reason=alive.reason,
                )
                self._dispatch(
                    CancelRequest(
                        "firm",
                        (),
                        f"cancel on disconnect after {after_ms} ms: {alive.reason}",
                        f"disconnect@{at.wall_ns}",
                        "disconnect",
                        ts=at.wall_ns,
                    )
                )
            await asyncio.sleep(period)

    # cancel requests --------------------------------------------------------------
    def _deliver(self, scopes: Iterable[str]) -> None:
        """Hand ``on_cancel`` the due parts of ``scopes`` it has not had in this process."""
        if self.on_cancel is None:
            return
        with _DELIVERED_LOCK:
            ledger = _DELIVERED.setdefault(_ledger_key(self.topic, self.on_cancel), set())
            due = due_cancels(self.view, scopes, ledger)
            ledger.update(delivery(r) for r in due)
        for record in due:
            self._log.info(
                "cancel request",
                scope=record.scope,
                halt_id=record.halt_id,
                kind=record.kind,
                source=record.named_by,
                part=record.part,
                parts=record.parts,
                orders=len(record.orders),
            )
            self._dispatch(CancelRequest.of(record))

    def _dispatch(self, request: CancelRequest) -> None:
        """Call ``on_cancel``; an awaitable result runs as a task. Errors are logged."""
        callback = self.on_cancel
        if callback is None:
            return
        self.cancels_delivered += 1
        try:
            result = callback(request)
        except Exception:
            self._failed(request)
            return
        if inspect.isawaitable(result):
            future = asyncio.ensure_future(result)
            self._callbacks.add(future)
            future.add_done_callback(lambda f: self._finished(f, request))

    def _finished(self, future: asyncio.Future[object], request: CancelRequest) -> None:
        self._callbacks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self._failed(request, future.exception())

    def _failed(self, request: CancelRequest, exc: BaseException | None = None) -> None:
        self.callback_errors += 1
        self._log.error(
            "on_cancel raised; the gate goes on",
            scope=request.scope,
            halt_id=request.halt_id,
            kind=request.kind,
            source=request.source,
            part=request.part,
            exc_info=exc if exc is not None else True,
        )

    # the questions ----------------------------------------------------------------
    def health(self) -> Verdict:
        """Whether riskguard is alive and ready (the fail-closed part of ``allows``).

        Each riskguard instance (active-active: several write heartbeats, each under its
        own name) is judged by its own latest heartbeat; riskguard is alive while any
        instance's is fresh and ready, and ``Verdict.instances`` names those, sorted. A
        heartbeat is fresh for ``heartbeat_timeout_ms`` less the age it already had when
        read, by riskguard's own timestamp, so replaying an old heartbeat from the topic
        after a restart never makes a silent riskguard look alive.
        """
        return decision.health(self.view, self.heartbeat_timeout_ms, Instant.now())

    def state(self, scope: str) -> str:
        """The published state of one scope (ACTIVE if never published)."""
        record = self.view.states.get(scope)
        return record.state if record else "ACTIVE"

    def check(
        self,
        account: str,
        strategy: str,
        symbol: str,
        side: Literal["buy", "sell"],
        qty: float,
        price: float | None = None,
        venue: str | None = None,
        reference_price: float | None = None,
        filled: float = 0.0,
        prior_qty: float | None = None,
    ) -> Verdict:
        """Should this order be sent? The pre-trade check, from memory, before sending.

        Health first (fail closed), then no per-order rules from riskguard yet (fail
        closed), then the scopes' states (HALTED refuses; REDUCE_ONLY refuses an order
        that would open, increase or flip the scope's position as riskguard published
        it), then the per-order rules ``order_qty``, ``order_notional`` and
        ``price_deviation`` (``halt``/``reduce_only`` rules refuse a breach, ``alert``
        rules allow it, named in ``Verdict.alerts``). ``qty`` in units (> 0),
        ``price`` the limit price (None: market order), ``reference_price`` what to
        judge the price against (None: riskguard's last published mark). ``venue`` (an ISO
        10383 MIC) adds the ``venue:<MIC>`` scope and selects rules that name venues.
        ``filled``: for a replace (``qty`` its new total), what the order filled already
        (FIX CumQty): REDUCE_ONLY judges what may still fill, ``qty - filled``.
        ``prior_qty``: for a replace, the order's total quantity before it (FIX
        OrderQty): a replace lowering it (``qty < prior_qty``) passes REDUCE_ONLY, as it
        only shrinks what may fill; REDUCE_ONLY counts the working orders riskguard
        published on the order's side, less what the replaced order may still fill. An
        order in a symbol on riskguard's restricted list is refused. A refusal names the
        rule, value and limit, and is counted in ``refusals``; it halts nothing (the order
        never existed). Raises ``ValueError`` for a side other than buy/sell, a
        non-finite or non-positive ``qty``, a negative or non-finite ``filled``, a
        ``prior_qty`` neither None nor finite and > 0, a
        non-finite price, a ``qty`` outside 1e-9 to 1e12 or a price beyond +-1e12, or a
        ``venue`` that is not a MIC (riskguard discards the events of such an order: it
        would never see it, and its venue's halt would not stop it).
        (:func:`riskguard.control.decision.check` has the exact rules.)
        """
        verdict = decision.check(
            self.view,
            self.heartbeat_timeout_ms,
            Instant.now(),
            account,
            strategy,
            symbol,
            side,
            qty,
            price,
            reference_price,
            venue,
            filled,
            prior_qty,
        )
        self.checks += 1
        if not verdict.allowed:
            self.refusals[verdict.cause] += 1
        return verdict

    def allows(
        self,
        account: str,
        strategy: str,
        symbol: str,
        side: Literal["buy", "sell"],
        reduces_position: bool,
        venue: str | None = None,
    ) -> Verdict:
        """May this order be sent? Checks firm, account, strategy and symbol, and the
        order's venue (``venue:<MIC>``) when it names one.

        HALTED anywhere refuses. REDUCE_ONLY anywhere allows only orders that reduce
        the position (``reduces_position=True``); a state this gate does not know
        refuses. ``side`` is validated and kept in the signature for per-side rules.
        Raises ``ValueError`` when ``side`` is not ``"buy"`` or ``"sell"``, or ``venue``
        is not an ISO 10383 MIC (four upper-case letters or digits). The rules
        are those of ``docs/control-topic.md`` (:func:`riskguard.control.decision.allows`).
        For per-order rules and positions judged by riskguard, use :meth:`check`.
        """
        return decision.allows(
            self.view,
            self.heartbeat_timeout_ms,
            Instant.now(),
            account,
            strategy,
            symbol,
            side,
            reduces_position,
            venue,
        )
