"""What the gates' pre-trade ``check()`` needs from riskguard, on the control topic.

- ``__rules__``: a :class:`~riskguard.control.records.RulesRecord` with the per-order
  rules (metrics :data:`PER_ORDER_METRICS`) of the limits in force; published on start
  and on every limits reload (:meth:`PreTradeFeed.rules_changed`), re-sent until the
  broker takes it.
- ``mark:<symbol>``: a :class:`~riskguard.control.records.MarkRecord` of the symbol's
  reference price (the latest mark, else the last fill price), when it changed.
- ``instrument:<symbol>``: an :class:`~riskguard.control.records.InstrumentRecord` of
  the contract size and exchange rate of each symbol an ``instrument`` event described,
  when either changed, priced or not (an order in a future never traded nor marked is
  valued at its contract size, not at 1).
- ``home:<strategy>``: a :class:`~riskguard.control.records.HomeRecord` of each strategy's
  home account (the first it traded in), once: a strategy rule's ``match.account``
  selects strategies by it, so a gate selects such a rule as the engine does for an
  order of a strategy trading in another account.
- ``position:<scope>:<symbol>``: a :class:`~riskguard.control.records.PositionRecord`
  for each REDUCE_ONLY scope: on entering REDUCE_ONLY every symbol it has a position
  record in the engine (held, or flat again: a zero overwrites what an earlier episode
  left on the compacted topic); while it stays REDUCE_ONLY, the positions that changed
  (or what the working orders moving them may still fill, ``buy_leaves``/``sell_leaves``).
  A ``symbol:<id>`` scope's position is the firm's in that symbol; a ``venue:<mic>``
  scope's are the firm's in every symbol (positions are not kept per venue: an order to
  a REDUCE_ONLY venue may only reduce the firm's position in its symbol).

Off the hot path: a periodic task (:meth:`PreTradeFeed.run`) publishes marks and
positions at most once per key per ``runtime.gate_publish_interval_ms``, in chunks each
awaited (:meth:`~riskguard.control.publisher.ControlPublisher.publish_records`), so a
halt's state record and cancel request never queue behind thousands of marks. A scope
entering REDUCE_ONLY wakes the task at once for that scope's positions (gates refuse
its increasing orders from a missing position, i.e. from 0, until then). ``ts`` of a
mark or position is when riskguard read it (wall clock, ns): every position record of
a REDUCE_ONLY episode is stamped at or after the transition's ``decided_ns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from msgspec import UNSET

from riskguard import log
from riskguard.aggregate.contributions import scope_leaves, scope_positions
from riskguard.control.publisher import ControlPublisher, Message
from riskguard.control.records import (
    RULES_KEY,
    HomeRecord,
    InstrumentRecord,
    MarkRecord,
    PositionRecord,
    RestrictedRecord,
    RuleRecord,
    RulesRecord,
    encode_record,
    home_key,
    instrument_key,
    mark_key,
    position_key,
)
from riskguard.engine import Engine
from riskguard.limits import Limits
from riskguard.metrics import Metrics
from riskguard.vocabulary import L_SYMBOL, Transition

PER_ORDER_METRICS: Final = ("order_qty", "order_notional", "price_deviation")
"""The metrics a gate judges before an order is sent."""
KINDS: Final = ("rules", "mark", "instrument", "position", "home")
Held = tuple[float, float, float]
"""A REDUCE_ONLY scope's (net position, buy leaves, sell leaves) in a symbol."""
"""Kinds of gate record (the label of ``riskguard_gate_records_total``)."""


def rules_record(limits: Limits, ts: int) -> RulesRecord:
    """The per-order rules of ``limits`` (file order), stamped ``ts`` (ns)."""
    return RulesRecord(
        limits_sha256=limits.digest,
        rules=tuple(
            RuleRecord(
                name=r.name,
                metric=r.metric,
                scope=r.scope,
                action=r.action,
                match={k: tuple(v) for k, v in r.match.items()},
                max=r.max,
                min=r.min,
            )
            for r in limits.rules
            if r.metric in PER_ORDER_METRICS
        ),
        ts=ts,
        restricted=tuple(
            RestrictedRecord(
                name=r.name,
                symbols=tuple(r.match["symbol"]),
                reason=r.reason,
                action=r.action,
                accounts=tuple(r.match.get("account", ())),
                strategies=tuple(r.match.get("strategy", ())),
            )
            for r in limits.restricted
        ),
    )


@dataclass(eq=False)
class Round:
    """The messages of one publish, and what to remember once the broker took them."""

    messages: list[Message] = field(default_factory=list)
    rules: Limits | None = None
    mark_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mark_prices: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mark_money: np.ndarray = field(default_factory=lambda: np.zeros(0))
    instrument_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    instrument_money: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positions: dict[str, tuple[str, dict[str, Held]]] = field(default_factory=dict)
    """Per REDUCE_ONLY scope: (its transition id, symbol -> (qty, buy leaves, sell
    leaves) published now)."""
    fill_prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Group mode: symbol -> (last fill price, size x rate) published now for a symbol no
    mark has reached."""
    homes: int = 0
    """Strategies whose home is published once the broker took this round (in order)."""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    """Records per kind."""


class PreTradeFeed:
    """Publishes rules, marks and REDUCE_ONLY positions for the gates.

    Implements :class:`~riskguard.ingest.ports.RulesChannel`. Reads the engine between
    its batches (the engine's task never awaits inside a batch); publishes through the
    control publisher given to :meth:`open`. ``clock`` stamps the records (ns).
    """

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        interval_ms: int,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.interval_ms = interval_ms
        self.clock = clock
        self._publisher: ControlPublisher | None = None
        self._rules: Limits | None = engine.limits  # pending until published
        self.rules_published = ""
        """sha256 of the limits whose rules the broker took last."""
        self._symbols = np.zeros(0, dtype=np.int64)  # symbol scope ids, in id order
        self._levels_seen = 0
        self._mark_sent = np.zeros(0)  # per scope id: price published, NaN never
        self._money_sent = np.zeros(0)  # per scope id: a mark's size x rate published
        self._instrument_sent = np.zeros(0)  # per scope id: size x rate published, NaN never
        self._homes_sent = 0  # strategies (in the order they were bound) whose home went out
        self._positions: dict[str, tuple[str, dict[str, Held]]] = {}
        self.books: Callable[[], Sequence[Engine]] = lambda: [engine]
        self._fills_sent: dict[str, tuple[float, float]] = {}
        self.fill_prices: Callable[[], dict[str, tuple[float, float, float | None]]] | None = None
        """Group mode: the symbols no mark reached, priced at their latest fill."""
        """The engines positions are read from (group mode: one per owned partition)."""
        self.accounts_only = False
        """Group mode: publish the positions of REDUCE_ONLY accounts only; a scope spanning
        partitions gets its positions summed over the members by the judging member
        (:mod:`riskguard.ingest.aggregation`), never one member's part."""
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.rounds = 0
        self.failures = 0
        self.published: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._log = log.get("control")
        engine.killswitch.subscribe(self._transition)

    def reindexed(self) -> None:
        """The engine's state was rebuilt and its scope ids renumbered (a group-mode
        rebalance): forget which marks went out under the old ids (they go out again)."""
        self._symbols = np.zeros(0, dtype=np.int64)
        self._levels_seen = 0
        self._mark_sent = np.zeros(0)
        self._money_sent = np.zeros(0)
        self._instrument_sent = np.zeros(0)
        self._homes_sent = 0
        self._fills_sent = {}

    def restored(self) -> None:
        """The rebuilt state is whole again (a group-mode rebalance): nothing to do, the
        marks went out again after :meth:`reindexed`, from the state as it was rebuilt."""

    def resend(self) -> None:
        """Publish everything again at the next round (the broker came back, perhaps
        empty): the rules, every mark and instrument, every REDUCE_ONLY scope's
        positions."""
        self.reindexed()
        self._positions.clear()
        self._rules = self.engine.limits
        self._wake.set()

    def open(self, publisher: ControlPublisher) -> None:
        """Publish through ``publisher`` from now on."""
        self._publisher = publisher

    def _transition(self, tr: Transition) -> None:
        """Any state change of a scope ends what was published for it; entering
        REDUCE_ONLY wakes the task for the scope's positions."""
        if tr.is_alert:
            return
        self._positions.pop(tr.scope, None)
        if tr.to == "REDUCE_ONLY":
            self._wake.set()

    # publishing ------------------------------------------------------------------
    async def rules_changed(self, limits: Limits) -> None:
        """``limits`` are in force now: publish their per-order rules (retried until taken;
        before :meth:`open`, published by the first round)."""
        self._rules = limits
        if self._publisher is not None:
            await self.publish_round(full=False)

    async def run(self) -> None:
        """Forever: a full round every interval; a quick one (rules, scopes entering
        REDUCE_ONLY) as soon as a scope enters REDUCE_ONLY."""
        interval = self.interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_full = loop.time() + interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - loop.time()))
            full = loop.time() >= next_full
            self._wake.clear()
            await self.publish_round(full=full)
            if full:
                next_full = loop.time() + interval

    async def publish_round(self, *, full: bool = True) -> int:
        """Publish what changed; returns how many records the broker took (0 on failure,
        retried next round). ``full=False``: only pending rules and the positions of
        scopes entering REDUCE_ONLY. Raises :class:`RuntimeError` before :meth:`open`."""
        if self._publisher is None:
            raise RuntimeError("the gate feed has no control publisher yet: call open() first")
        async with self._lock:
            batch = self.collect(full=full)
            if not batch.messages:
                return 0
            self.rounds += 1
            if not await self._publisher.publish_records(batch.messages):
                self.failures += 1
                return 0
            self.commit(batch)
            return len(batch.messages)

    # what to publish (no I/O) ------------------------------------------------------
    def collect(self, *, full: bool = True) -> Round:
        """The records to publish now (nothing is remembered as sent until :meth:`commit`)."""
        now = self.clock()
        batch = Round()
        if self._rules is not None:
            batch.rules = self._rules
            batch.messages.append((RULES_KEY, encode_record(rules_record(self._rules, now))))
            batch.counts["rules"] = 1
        self._collect_positions(batch, now, full)
        if full:
            self._collect_marks(batch, now)
            self._collect_fill_prices(batch, now)
            self._collect_homes(batch, now)
        return batch

    def commit(self, batch: Round) -> None:
        """The broker took ``batch``: remember what it published."""
        if batch.rules is not None:
            self.rules_published = batch.rules.digest
            if self._rules is batch.rules:
                self._rules = None
        if batch.mark_ids.size:
            self._mark_sent[batch.mark_ids] = batch.mark_prices
            self._money_sent[batch.mark_ids] = batch.mark_money
        self._fills_sent.update(batch.fill_prices)
        if batch.instrument_ids.size:
            self._instrument_sent[batch.instrument_ids] = batch.instrument_money
        self._homes_sent = max(self._homes_sent, batch.homes)
        for scope, (tid, sent) in batch.positions.items():
            known = self._positions.get(scope)
            if known is not None and known[0] == tid:
                known[1].update(sent)
            else:
                self._positions[scope] = (tid, sent)
        for kind, n in batch.counts.items():
            if n:
                self.published[kind] += n
                self.metrics.gate_records.labels(kind).inc(n)

    def _collect_marks(self, batch: Round, now: int) -> None:
        keys = self.engine.keys
        levels = keys.scope_levels
        if len(levels) > self._levels_seen:
            new = [i for i in range(self._levels_seen, len(levels)) if levels[i] == L_SYMBOL]
            self._symbols = np.concatenate([self._symbols, np.array(new, dtype=np.int64)])
            self._levels_seen = len(levels)
            grown = np.full(len(levels), np.nan)
            grown[: self._mark_sent.size] = self._mark_sent
            self._mark_sent = grown
            sent = np.full(len(levels), np.nan)
            sent[: self._money_sent.size] = self._money_sent
            self._money_sent = sent
            sized = np.full(len(levels), np.nan)
            sized[: self._instrument_sent.size] = self._instrument_sent
            self._instrument_sent = sized
        state = self.engine.store.state
        symbols = state.symbols
        ids = self._symbols[self._symbols < symbols.shape[0]]
        price = symbols["ref_price"][ids]
        size = symbols["multiplier"][ids]
        cur = state.currencies[symbols["currency"][ids]]
        rate = np.where(cur["known"] != 0, cur["rate"], np.nan)
        # what a gate values an order at: a change of price, contract size or rate
        # republishes. The size x rate is compared on its own, not as price x size x rate:
        # at a price of 0 that product stays 0 whatever the rate, and the gate would value
        # limit orders at the rate it had (a power future marked at 0, EUR 1.10 -> 1.50).
        unit = np.where(np.isnan(rate), -np.inf, size * rate)
        changed = (
            (symbols["price_source"][ids] > 0)
            & np.isfinite(price)
            & ((price != self._mark_sent[ids]) | (unit != self._money_sent[ids]))
        )
        batch.mark_ids, batch.mark_prices = ids[changed], price[changed]
        batch.mark_money = unit[changed]
        names = keys.scope_names
        rows = zip(
            batch.mark_ids.tolist(),
            batch.mark_prices.tolist(),
            size[changed].tolist(),
            rate[changed].tolist(),
            strict=True,
        )
        for sid, px, mult, fx in rows:
            symbol = names[sid].partition(":")[2]
            known = None if math.isnan(fx) else fx
            record = MarkRecord(symbol, px, now, multiplier=mult, rate=known)
            batch.messages.append((mark_key(symbol), encode_record(record)))
        batch.counts["mark"] = int(batch.mark_ids.size)
        # contract size and rate of every described symbol, priced or not
        described = (symbols["ref_ns"][ids] >= 0) & (unit != self._instrument_sent[ids])
        batch.instrument_ids, batch.instrument_money = ids[described], unit[described]
        for sid, mult, fx in zip(
            batch.instrument_ids.tolist(),
            size[described].tolist(),
            rate[described].tolist(),
            strict=True,
        ):
            symbol = names[sid].partition(":")[2]
            known = None if math.isnan(fx) else fx
            inst = InstrumentRecord(symbol, now, multiplier=mult, rate=known)
            batch.messages.append((instrument_key(symbol), encode_record(inst)))
        batch.counts["instrument"] = int(batch.instrument_ids.size)

    def _collect_fill_prices(self, batch: Round, now: int) -> None:
        """Group mode: the engine publishing marks (the home engine) reads no fill, so a
        symbol no mark has reached would reach the gates with no price at all (a market
        order's notional unjudged). Its last fill price here goes out instead, as a mark,
        until a mark comes (:meth:`~riskguard.ingest.partitions.PartitionEngines.
        fill_prices`)."""
        if self.fill_prices is None:
            return  # single mode: the engine's marks include its last fill prices
        home = self.engine.store.state.symbols
        for name, (px, mult, rate) in self.fill_prices().items():
            sid = self.engine.keys.find_scope(name)
            if sid is not None and sid < home.shape[0] and int(home["price_source"][sid]) == 2:
                continue  # marked: the mark went out
            unit = math.nan if rate is None else mult * rate
            sent = self._fills_sent.get(name)
            if sent is not None and sent[0] == px and (sent[1] == unit or math.isnan(unit)):
                continue
            symbol = name.partition(":")[2]
            record = MarkRecord(symbol, px, now, multiplier=mult, rate=rate)
            batch.messages.append((mark_key(symbol), encode_record(record)))
            batch.fill_prices[name] = (px, unit)
        batch.counts["mark"] += len(batch.fill_prices)

    def _collect_homes(self, batch: Round, now: int) -> None:
        """The home account of every strategy bound since the last round the broker took
        (a home never changes). Not in group mode: a member sees only its partitions'
        accounts, and there a strategy rule may not select by account
        (:mod:`riskguard.limits.scale`)."""
        batch.homes = self._homes_sent
        if self.accounts_only:
            return
        keys = self.engine.keys
        homes = keys.strategy_account
        if len(homes) <= self._homes_sent:
            return
        names = keys.scope_names
        for sid, aid in itertools.islice(homes.items(), self._homes_sent, None):
            strategy = names[sid].partition(":")[2]
            account = names[aid].partition(":")[2]
            record = HomeRecord(strategy, account, now)
            batch.messages.append((home_key(strategy), encode_record(record)))
        batch.counts["home"] = len(homes) - self._homes_sent
        batch.homes = len(homes)

    def _collect_positions(self, batch: Round, now: int, full: bool) -> None:
        standing = self.engine.killswitch.standing()
        reduce_only = {s: tr for s, tr in standing.items() if tr.to == "REDUCE_ONLY"}
        for scope in [s for s in self._positions if s not in reduce_only]:
            del self._positions[scope]  # resumed or halted: gates need no position
        books = self.books()
        for scope, tr in reduce_only.items():
            if self.accounts_only and not scope.startswith("account:"):
                continue
            known = self._positions.get(scope)
            entering = known is None or known[0] != tr.id
            if not (entering or full):
                continue
            sent: dict[str, Held] = {}
            batch.positions[scope] = (tr.id, sent)
            held: dict[str, Held] = {}
            for book in books:  # group mode: an account is in one partition's engine
                leaves = scope_leaves(book, scope)
                for symbol, qty in scope_positions(book, scope).items():
                    buys, sells = leaves.get(symbol, (0.0, 0.0))
                    q0, b0, s0 = held.get(symbol, (0.0, 0.0, 0.0))
                    held[symbol] = (q0 + qty, b0 + buys, s0 + sells)
            before = {} if entering or known is None else known[1]
            for symbol, now_held in held.items():
                if not entering and before.get(symbol) == now_held:
                    continue
                sent[symbol] = now_held
                record = _position(scope, symbol, now_held, now)
                batch.messages.append((position_key(scope, symbol), encode_record(record)))
            batch.counts["position"] += len(sent)

    async def publish_positions(self, positions: dict[str, dict[str, Held]]) -> bool:
        """Publish ``positions`` (scope -> symbol -> (net qty, buy leaves, sell leaves)) as
        position records stamped
        now (group mode: the sums over the members, :mod:`riskguard.ingest.aggregation`);
        True when the broker took them. Raises :class:`RuntimeError` before :meth:`open`."""
        if self._publisher is None:
            raise RuntimeError("the gate feed has no control publisher yet: call open() first")
        now = self.clock()
        messages = [
            (position_key(scope, symbol), encode_record(_position(scope, symbol, held, now)))
            for scope, by_symbol in positions.items()
            for symbol, held in by_symbol.items()
        ]
        if not messages:
            return True
        async with self._lock:
            if not await self._publisher.publish_records(messages):
                self.failures += 1
                return False
        self.published["position"] += len(messages)
        self.metrics.gate_records.labels("position").inc(len(messages))
        return True

    # reports -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """For ``/v1/status``: what was published, and what is waiting."""
        return {
            "interval_ms": self.interval_ms,
            "rules_sha256": self.rules_published or None,
            "rules_pending": self._rules is not None,
            "published": dict(self.published),
            "reduce_only_scopes": sorted(self._positions),
            "rounds": self.rounds,
            "failures": self.failures,
        }


def _position(scope: str, symbol: str, held: Held, now: int) -> PositionRecord:
    """The position record of ``held`` (qty, buy leaves, sell leaves; leaves of 0 not
    written), stamped ``now``."""
    qty, buys, sells = held
    return PositionRecord(
        scope, symbol, qty, now, buy_leaves=buys or UNSET, sell_leaves=sells or UNSET
    )
