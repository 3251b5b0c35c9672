"""The gate's pre-trade ``check()`` against the engine that judges the same order once sent.

The gate reads what riskguard publishes (rules, marks, instruments, states, positions:
:class:`~riskguard.ingest.pretrade.PreTradeFeed`, here collected without a broker) and
refuses an order before it is sent; the engine judges the order when its ``new``
arrives. A refusal of an order the engine finds fine stops trading for nothing; an order
the gate lets through that the engine then halts on is a halt the gate should have
prevented. Expected values are derived by hand from docs/limits.md and
docs/control-topic.md.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.control import decision
from riskguard.control.records import HeartbeatRecord, heartbeat_message, state_message
from riskguard.control.view import ControlView, Instant
from riskguard.engine import Engine
from riskguard.ingest.pretrade import PreTradeFeed
from riskguard.killswitch import Transition
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.testing import FakeClock
from tests.builders import MS, T0, cancel, fill, fx, instrument, mark, new, position, rules_toml


class World:
    """An engine fed ``events``, and a gate view of what riskguard published about it."""

    def __init__(self, limits: str, events: list[wire.Event]) -> None:
        self.clock = FakeClock(T0 + 10_000 * MS)
        self.engine = Engine(parse(limits), clock=self.clock, event_time=True)
        for event in events:
            self.engine.apply([event])
        self.feed = PreTradeFeed(self.engine, Metrics(), 100, self.clock)
        self.view = ControlView()
        self.publish()

    def publish(self) -> None:
        """A heartbeat, every standing state, then a full round of the gate feed."""
        now = self.clock.now_ns
        beat = HeartbeatRecord(ts=now, instance="rg", ready=True, interval_ms=100)
        values = [heartbeat_message(beat)[1]]
        values += [state_message(tr)[1] for tr in self.engine.killswitch.standing().values()]
        batch = self.feed.collect(full=True)
        self.feed.commit(batch)
        values += [value for _key, value in batch.messages]
        self.view.fold(values, Instant(now, 0))

    def check(self, order: wire.NewOrder) -> decision.Verdict:
        return decision.check(
            self.view,
            60_000,
            Instant(self.clock.now_ns, 0),
            order.account,
            order.strategy,
            order.symbol,
            order.side,
            order.qty,
            order.price,
            venue=order.venue,
        )

    def send(self, order: wire.Event) -> list[Transition]:
        return self.engine.apply([order]).transitions


VENUE_FAT = 'name="venue-fat"\nmetric="order_qty"\nscope="venue"\nmax=100\naction="halt"'


def test_a_venue_rule_judges_only_orders_sent_to_a_venue() -> None:
    # venue-fat is kept per venue (docs/limits.md, Scopes: venue:<MIC> is "the orders
    # sent to that venue"). A buy of 200 naming no venue has no venue scope: riskguard
    # judges it by no venue rule, so it is fine; the gate used to refuse it ("refused
    # before sending at venue: rule venue-fat: order_qty 200 vs limit 100").
    world = World(rules_toml(VENUE_FAT), [])
    nowhere = new("o1", 1 * MS, qty=200)
    verdict = world.check(nowhere)
    assert verdict.allowed and verdict.rule is None
    assert world.send(nowhere) == []
    # The same buy to XNAS: 200 > 100 halts venue:XNAS; the gate refuses it, naming
    # that scope (it named the bare level "venue").
    to_xnas = new("o2", 2 * MS, qty=200, venue="XNAS")
    verdict = world.check(to_xnas)
    assert not verdict.allowed
    assert (verdict.scope, verdict.rule, verdict.value, verdict.limit) == (
        "venue:XNAS",
        "venue-fat",
        200.0,
        100.0,
    )
    (halt,) = world.send(to_xnas)
    assert (halt.scope, halt.to, halt.rule) == ("venue:XNAS", "HALTED", "venue-fat")


# the property ------------------------------------------------------------------------
FIELDS = {
    "firm": [],
    "account": ["account"],
    "strategy": ["strategy", "account"],
    "symbol": ["symbol"],
    "venue": ["venue"],
}
KEYS = {
    "account": ["A", "B"],
    "strategy": ["S", "T"],
    "symbol": ["X", "Y"],
    "venue": ["XNAS", "ARCX"],
    "side": ["buy", "sell"],
}
BOUNDS = {
    "order_qty": [5.0, 10.0, 10.5, 0.3],
    "order_notional": [1000.0, 1100.0, 2750.0, 5000.0, 50_000.0],
    "price_deviation": [0.0, 0.05, 0.1],
}


def listed(keys: list[str]) -> str:
    return "[" + ", ".join(f'"{k}"' for k in keys) + "]"


@st.composite
def order_rules(draw: Any, i: int) -> str:
    metric = draw(st.sampled_from(sorted(BOUNDS)))
    level = draw(st.sampled_from(sorted(FIELDS)))
    match = {}
    for name in [*FIELDS[level], "side", "venue"]:
        home = level == "strategy" and name == "account"  # the home account: half the time
        if draw(st.integers(0, 1 if home else 3)) == 0:
            match[name] = draw(st.lists(st.sampled_from(KEYS[name]), min_size=1, unique=True))
    upper = draw(st.sampled_from([*BOUNDS[metric], None]))
    lower = draw(st.sampled_from([None, None, min(BOUNDS[metric])]))
    if upper is None and lower is None:
        upper = BOUNDS[metric][0]
    if upper is not None and lower is not None and lower > upper:
        lower = None
    action = draw(st.sampled_from(["halt", "reduce_only", "alert"]))
    body = f'name="r{i}"\nmetric="{metric}"\nscope="{level}"\naction="{action}"\n'
    body += "" if upper is None else f"max={upper}\n"
    body += "" if lower is None else f"min={lower}\n"
    if match:
        body += "match = { " + ", ".join(f"{k} = {listed(v)}" for k, v in match.items()) + " }"
    return body


@st.composite
def flows(draw: Any) -> tuple[str, list[wire.Event], wire.NewOrder]:
    """Limits with per-order rules (and maybe a restricted list), reference data and
    prices (a mark, a trade, an opening position, or none: before the first price; an
    instrument in EUR before or after its first rate), then one order."""
    limits = rules_toml(*(draw(order_rules(i)) for i in range(draw(st.integers(1, 3)))))
    if draw(st.integers(0, 3)) == 0:
        action = draw(st.sampled_from(["halt", "alert"]))
        limits += f'\n[[restricted]]\nname="rl"\nsymbols=["Y"]\nreason="mnpi"\naction="{action}"\n'
        if draw(st.booleans()):
            limits += 'accounts=["A"]\n'
    events: list[wire.Event] = []
    t = 1
    for symbol in ("X", "Y"):
        if draw(st.booleans()):
            size = draw(st.sampled_from([1.0, 10.0, 50.0, 0.01]))
            currency = draw(st.sampled_from([None, "EUR"]))
            events.append(instrument(symbol, size, currency, t=t))
            t += 1
    if draw(st.booleans()):
        events.append(fx("EUR", draw(st.sampled_from([0.5, 1.1, 1.2])), t=t))
        t += 1
    for symbol in ("X", "Y"):
        how = draw(st.sampled_from(["none", "mark", "fill", "open"]))
        px = draw(st.sampled_from([100.0, 95.0, 33.3, 0.0, -5.0]))
        keys: dict[str, Any] = {"symbol": symbol, "account": "B", "strategy": "T"}
        if how == "mark":
            events.append(mark(px, t, symbol))
        elif how == "fill":
            events.append(fill(f"f{symbol}", t, qty=3, price=px, **keys))
        elif how == "open":
            events.append(position(4, t=t, price=px, **keys))
        t += 1
    home = draw(st.sampled_from([None, "A", "B"]))  # S's first account (T's is B), or none
    if home is not None:  # a cancel of an order never seen names S first: judged by nothing
        events.append(cancel("h", t, account=home, strategy="S"))
    order = new(
        "o",
        1000 * MS,
        qty=draw(st.sampled_from([0.1 + 0.2, 3.0, 5.0, 10.0, 10.5, 100.0])),
        price=draw(st.sampled_from([None, 0.0, 34.965, 95.0, 100.0, 105.0, 110.0])),
        account=draw(st.sampled_from(["A", "B"])),
        strategy=draw(st.sampled_from(["S", "T"])),
        symbol=draw(st.sampled_from(["X", "Y"])),
        side=draw(st.sampled_from(["buy", "sell"])),
        venue=draw(st.sampled_from([None, "XNAS", "ARCX"])),
    )
    return limits, events, order


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(flows())
def test_the_gate_refuses_exactly_the_orders_the_engine_would_halt_on(
    flow: tuple[str, list[wire.Event], wire.NewOrder],
) -> None:
    """For per-order rules (``order_qty``, ``order_notional``, ``price_deviation``) and
    the restricted list, over contract sizes, currencies before and after their rate,
    orders before and after the first price, market orders, matches on every key, side
    and venue, rules at every scope (venue included) and bounds met exactly: the gate
    refuses an order iff the engine, judging it once sent, moves a scope (halt or
    reduce-only), and lets it through with exactly the ``alert`` rules the engine pages.
    Strategies trade through either account, so a strategy rule's ``match.account`` is
    the strategy's home (S's set by an earlier order, or by this one)."""
    limits, events, order = flow
    world = World(limits, events)
    if world.engine.killswitch.standing():
        return  # a trade in a restricted symbol halted already: not this property
    verdict = world.check(order)
    sent = world.send(order)
    moved = [tr for tr in sent if not tr.is_alert]
    assert (verdict.rule is not None) == bool(moved), (verdict, sent)
    if verdict.allowed:
        paged = {tr.rule for tr in sent if tr.is_alert and tr.level is None}
        rules = {a for a in verdict.alerts if a != "rl"}  # rl may be raised by a trade
        assert rules == paged - {"rl", "fx-rate-missing"}, (verdict, sent)


# REDUCE_ONLY: the published position against the book --------------------------------
UNWIND = rules_toml(
    'name="big"\nmetric="order_qty"\nscope="strategy"\nmax=50\naction="reduce_only"',
    VENUE_FAT.replace("max=100", "max=150"),
) + (
    '\n[[restricted]]\nname="no-y"\nsymbols=["Y"]\nstrategies=["S"]\nreason="wall-crossed"\n'
    'action="reduce_only"\n'
)
"""reduce_only rules a position may be unwound under: S may only reduce once it traded Y
(restricted), a strategy once it sent more than 50; an order of more than 150 to a venue
halts it."""
ROUTES = [("A", "S"), ("B", "S"), ("B", "T")]
"""(account, strategy): S trades in two accounts, so its position is the sum of both."""
RO_SCOPES = ["firm", "account:A", "account:B", "strategy:S", "strategy:T", "symbol:X", "venue:XNAS"]


@st.composite
def books(draw: Any) -> tuple[list[tuple[str, str, str, str, Decimal]], list[str], Any]:
    trades = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ROUTES),
                st.sampled_from(["X", "Y"]),
                st.sampled_from(["buy", "sell"]),
                st.sampled_from(["0.1", "0.2", "0.3", "1", "7.5", "100"]),
            ),
            max_size=8,
        )
    )
    flat = [(a, s, y, side, Decimal(q)) for (a, s), y, side, q in trades]
    scopes = draw(st.lists(st.sampled_from(RO_SCOPES), min_size=1, max_size=2, unique=True))
    route = draw(st.sampled_from(ROUTES))
    qty = draw(st.sampled_from(["0.1", "0.3", "1", "7.5", "100", "107.5", "200"]))
    order = (route, draw(st.sampled_from(["X", "Y"])), draw(st.sampled_from(["buy", "sell"])))
    as_sum = draw(st.booleans())  # the router's float sum 0.1 + 0.2 for 0.3
    return flat, scopes, (order, qty, as_sum, draw(st.sampled_from([None, "XNAS", "ARCX"])))


def held(trades: list[tuple[str, str, str, str, Decimal]], scope: str, symbol: str) -> Decimal:
    """The net position of ``scope`` in ``symbol``, by hand: a symbol or venue scope's is
    the firm's (docs/limits.md, Scopes); a strategy's sums its accounts."""
    level, _, key = scope.partition(":")
    total = Decimal(0)
    for account, strategy, y, side, qty in trades:
        mine = {"account": account, "strategy": strategy}.get(level, key)
        if y == symbol and mine == key:
            total += qty if side == "buy" else -qty
    return total


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(books())
def test_reduce_only_allows_exactly_the_orders_that_bring_every_position_toward_zero(
    book: tuple[list[tuple[str, str, str, str, Decimal]], list[str], Any],
) -> None:
    """Fills of decimal quantities across accounts and strategies (one strategy in two
    accounts), one or two scopes put REDUCE_ONLY (and those the ``reduce_only`` rules
    moved), the positions published: an order passes iff, for each REDUCE_ONLY scope it
    belongs to, it moves that scope's net position in its symbol toward 0 or to 0, never
    past it (docs/control-topic.md, step 3; the positions summed by hand in decimals),
    and the engine, judging it once sent, moves no scope. A ``reduce_only`` rule breached
    at a scope REDUCE_ONLY already moves nothing: such an order (say a sale of the
    restricted Y by S, unwinding it) passes."""
    trades, scopes, ((route, symbol, side), qty, as_sum, venue) = book
    events: list[wire.Event] = []
    for i, (account, strategy, y, s, q) in enumerate(trades):
        keys = {"account": account, "strategy": strategy, "symbol": y, "side": s}
        events.append(new(f"o{i}", 2 * i * MS, qty=float(q), **keys))
        events.append(fill(f"o{i}", (2 * i + 1) * MS, qty=float(q), **keys))
    world = World(UNWIND, events)
    for scope in scopes:
        world.engine.killswitch.halt(scope, "ops", "drill", action="reduce_only")
    world.publish()
    standing = world.engine.killswitch.standing()  # the drill's, and the rules' own
    account, strategy = route
    amount = 0.1 + 0.2 if as_sum and qty == "0.3" else float(qty)
    verdict = decision.check(
        world.view,
        60_000,
        Instant(world.clock.now_ns, 0),
        account,
        strategy,
        symbol,
        side,
        amount,
        100.0,
        venue=venue,
    )
    mine = {"firm", f"account:{account}", f"strategy:{strategy}", f"symbol:{symbol}"}
    if venue is not None:
        mine.add(f"venue:{venue}")
    d = Decimal(qty) if side == "buy" else -Decimal(qty)
    ok = True
    for scope in standing:
        if scope in mine:
            p = held(trades, scope, symbol)
            ok = ok and p != 0 and p * d < 0 and abs(d) <= abs(p)
    keys = {"account": account, "strategy": strategy, "symbol": symbol, "side": side}
    sent = world.send(new("o", 100 * MS, qty=amount, price=100.0, venue=venue, **keys))
    moved = [tr for tr in sent if not tr.is_alert]
    assert verdict.allowed == (ok and not moved), (verdict, standing, trades, sent)


# a strategy rule's match.account: the strategy's home account --------------------------
EQ_FAT = (
    'name="eq-fat"\nmetric="order_qty"\nscope="strategy"\nmatch = { account = "EQ1" }\n'
    'max=1000\naction="halt"'
)


def test_a_strategy_rules_account_is_the_strategys_home_wherever_it_trades() -> None:
    # eq-fat limits the strategies whose home account is EQ1 (docs/limits.md, Scopes: a
    # strategy rule's match.account selects strategies by their home account, the account
    # of the first event that names them). S first traded in EQ1, T in EQ2.
    world = World(
        rules_toml(EQ_FAT),
        [
            new("a", 1 * MS, qty=1, account="EQ1", strategy="S"),
            new("b", 2 * MS, qty=1, account="EQ2", strategy="T"),
        ],
    )
    # S, at home in EQ1, sends 5,000 through EQ2: eq-fat applies (5,000 > 1,000) and the
    # engine halts strategy S in every account. The gate compared the rule with the
    # order's account EQ2 and let it through: a halt it should have prevented.
    s_in_eq2 = new("o1", 10 * MS, qty=5000, account="EQ2", strategy="S")
    verdict = world.check(s_in_eq2)
    assert (verdict.allowed, verdict.scope, verdict.rule) == (False, "strategy:S", "eq-fat")
    # T, at home in EQ2, sends 5,000 through EQ1: eq-fat does not apply to T, the engine
    # judges it fine. The gate refused it (order account EQ1): a false refusal.
    t_in_eq1 = new("o2", 11 * MS, qty=5000, account="EQ1", strategy="T")
    assert world.check(t_in_eq1).allowed
    # U, never seen: this order makes EQ1 its home, so eq-fat applies to it.
    u_in_eq1 = new("o3", 12 * MS, qty=5000, account="EQ1", strategy="U")
    assert world.check(u_in_eq1).rule == "eq-fat"
    assert [(tr.scope, tr.rule) for tr in world.send(s_in_eq2)] == [("strategy:S", "eq-fat")]
    assert world.send(t_in_eq1) == []
    assert [(tr.scope, tr.rule) for tr in world.send(u_in_eq1)] == [("strategy:U", "eq-fat")]


def test_homes_are_published_once_and_again_after_the_broker_came_back_empty() -> None:
    world = World(rules_toml(EQ_FAT), [new("a", 1 * MS, qty=1, account="EQ1", strategy="S")])
    assert {s: h.account for s, h in world.view.homes.items()} == {"S": "EQ1"}
    world.engine.apply([new("b", 2 * MS, qty=1, account="EQ2", strategy="S")])  # not a home
    world.engine.apply([new("c", 3 * MS, qty=1, account="EQ2", strategy="T")])
    batch = world.feed.collect()
    assert [key for key, _ in batch.messages] == [b"home:T"]
    world.feed.commit(batch)
    assert world.feed.collect().messages == []
    world.feed.resend()
    assert {b"home:S", b"home:T"} <= {key for key, _ in world.feed.collect().messages}


def test_a_restricted_name_can_be_unwound_once_its_strategy_is_reduce_only() -> None:
    # no-y puts Y on S's restricted list with action reduce_only. S's buy of 100 Y
    # breaches it at its new: S goes REDUCE_ONLY (docs/limits.md, Restricted list); the
    # fill leaves S long 100 Y. The desk now sells 40 Y to unwind: the breach moves
    # nothing (S is REDUCE_ONLY already) and the sale reduces 100 to 60, which
    # REDUCE_ONLY allows. The gate refused it ("Y is on the restricted list ... (action
    # reduce_only)"), and every other sale: the position could never be unwound.
    keys = {"symbol": "Y", "account": "A", "strategy": "S"}
    world = World(UNWIND, [new("b", 1 * MS, qty=100, **keys), fill("b", 2 * MS, qty=100, **keys)])
    assert {s: tr.to for s, tr in world.engine.killswitch.standing().items()} == {
        "strategy:S": "REDUCE_ONLY"
    }
    sale = new("s1", 10 * MS, qty=40, side="sell", **keys)
    verdict = world.check(sale)
    assert (verdict.allowed, verdict.state, verdict.scope) == (True, "REDUCE_ONLY", "strategy:S")
    assert world.send(sale) == []
    # Still refused: a buy (100 -> 110), a sale past flat (100 -> -150 + 100 = -50).
    # A sale of 60 breaches big (60 > 50, reduce_only) at strategy:S, REDUCE_ONLY already,
    # and reduces 100 to 40: allowed.
    assert world.check(new("b2", 11 * MS, qty=10, **keys)).state == "REDUCE_ONLY"
    assert not world.check(new("b2", 11 * MS, qty=10, **keys)).allowed
    assert not world.check(new("s2", 11 * MS, qty=150, side="sell", **keys)).allowed
    assert world.check(new("s3", 11 * MS, qty=60, side="sell", **keys)).allowed
    # T has no restriction on Y: a buy of 60 breaches big (reduce_only) at strategy:T,
    # ACTIVE: the engine would move T, so the gate refuses it.
    t_buy = new("t", 12 * MS, qty=60, symbol="Y", account="B", strategy="T")
    assert world.check(t_buy).rule == "big"
    assert [(tr.scope, tr.to) for tr in world.send(t_buy)] == [("strategy:T", "REDUCE_ONLY")]


def test_a_price_amend_of_a_partly_filled_closing_order_is_not_a_flip() -> None:
    # S is long 100 X and REDUCE_ONLY; its sale of 100 fills 60: long 40, 40 still to
    # sell. Amending the sale's price (FIX OrderQty stays 100, CumQty 60) leaves 40 to
    # fill: 40 -> 0, allowed. Judged as a sale of 100 it was refused ("would flip
    # position 40 to -60"). Cutting it to 90 leaves 30 (40 -> 10); raising it to 110
    # leaves 50, which would flip the long: refused.
    keys = {"account": "A", "strategy": "S", "symbol": "X"}
    world = World(
        rules_toml(VENUE_FAT),
        [
            new("b", 1 * MS, qty=100, **keys),
            fill("b", 2 * MS, qty=100, **keys),
            new("s", 3 * MS, qty=100, side="sell", **keys),
            fill("s", 4 * MS, qty=60, side="sell", **keys),
        ],
    )
    world.engine.killswitch.halt("strategy:S", "ops", "drill", action="reduce_only")
    world.publish()
    assert world.view.position("strategy:S", "X") == 40.0

    def amend(qty: float, filled: float, prior: float | None = 100.0) -> bool:
        at = Instant(world.clock.now_ns, 0)
        verdict = decision.check(
            world.view, 60_000, at, "A", "S", "X", "sell", qty, 99.0, filled=filled, prior_qty=prior
        )
        return verdict.allowed

    assert amend(100, 60) and amend(90, 60) and not amend(110, 60)
    assert not amend(100, 0)  # the amend judged as a new sale of 100: a flip
    assert amend(60, 60)  # down to what filled: the order closes, nothing left to fill
    # Session 22: riskguard publishes the working sells (the order's own 40 left) with
    # the position, and REDUCE_ONLY counts them; prior_qty (the order's OrderQty before
    # the amend, 100) takes the order's own 40 out. Without it the 40 count twice
    # (40 + 40 > 40): refused, and the reason asks for prior_qty.
    assert world.view.leaves("strategy:S", "X") == (0.0, 40.0)
    assert not amend(100, 60, None)


async def test_a_reload_reaches_the_gate_with_the_next_rules_record() -> None:
    # fat allows 1,000 per order; the reload tightens it to 100 and puts Y on the
    # restricted list. Until the gate reads the new rules record it judges by the old
    # ones (a topic round trip: docs/gate.md); from then on exactly as the engine does.
    before = rules_toml(
        VENUE_FAT.replace('scope="venue"', 'scope="strategy"').replace("100", "1000")
    )
    world = World(before, [])
    order = new("o1", 1 * MS, qty=500)
    assert world.check(order).allowed
    after = parse(
        rules_toml(VENUE_FAT.replace('scope="venue"', 'scope="strategy"'))
        + '\n[[restricted]]\nname="no-y"\nsymbols=["Y"]\nreason="wall-crossed"\n'
    )
    world.engine.replace_limits(after)
    await world.feed.rules_changed(after)  # not open yet: goes out with the next round
    assert world.check(order).allowed  # the old rules, until the record is read
    world.publish()
    verdict = world.check(order)
    assert (verdict.rule, verdict.value, verdict.limit) == ("venue-fat", 500.0, 100.0)
    in_y = new("o2", 2 * MS, qty=5, symbol="Y", account="B", strategy="T")
    assert world.check(in_y).rule == "no-y"
    assert [tr.rule for tr in world.send(order)] == ["venue-fat"]
    assert [(tr.scope, tr.rule) for tr in world.send(in_y)] == [("strategy:T", "no-y")]


def test_a_venue_riskguard_would_discard_is_a_caller_error() -> None:
    # venue:XNAS is HALTED. A router naming the venue "xnas" (or "NASDAQ") was allowed:
    # no venue:xnas scope is halted. riskguard discards an event naming such a venue
    # (docs/events.md: venue is an ISO 10383 MIC, four upper-case letters or digits), so
    # the halt would never have stopped it, nor riskguard seen it. It now raises.
    world = World(rules_toml(VENUE_FAT), [])
    world.engine.killswitch.halt("venue:XNAS", "ops", "venue outage")
    world.publish()
    at = Instant(world.clock.now_ns, 0)
    for venue in ("xnas", "NASDAQ", "XNA", "XN S"):
        with pytest.raises(ValueError, match="MIC"):
            decision.check(world.view, 60_000, at, "A", "S", "X", "buy", 1, 1.0, venue=venue)
        with pytest.raises(ValueError, match="MIC"):
            decision.allows(world.view, 60_000, at, "A", "S", "X", "buy", False, venue)
    verdict = decision.check(world.view, 60_000, at, "A", "S", "X", "buy", 1, 1.0, venue="XNAS")
    assert (verdict.allowed, verdict.scope) == (False, "venue:XNAS")
    assert decision.check(world.view, 60_000, at, "A", "S", "X", "buy", 1, 1.0, venue="ARCX")


def test_an_order_riskguard_would_discard_as_out_of_range_is_a_caller_error() -> None:
    # A fat finger of 2e12 shares, or a price of 5e12 (a unit error), passed check() when
    # no rule caught it; riskguard discards such events as out_of_range (docs/events.md:
    # qty 1e-9 to 1e12, |price| <= 1e12), so it would never have seen the order, its
    # fills or its position. check() now raises, as for a venue that is not a MIC.
    world = World(rules_toml(), [])
    world.publish()
    at = Instant(world.clock.now_ns, 0)
    for qty, price in ((2e12, 1.0), (1e-10, 1.0), (1.0, 5e12), (1.0, -5e12)):
        with pytest.raises(ValueError, match="out_of_range"):
            decision.check(world.view, 60_000, at, "A", "S", "X", "buy", qty, price)
    with pytest.raises(ValueError, match="out_of_range"):
        decision.check(world.view, 60_000, at, "A", "S", "X", "buy", 1, None, 5e12)
    assert decision.check(world.view, 60_000, at, "A", "S", "X", "buy", 1e12, -1e12)
    assert decision.check(world.view, 60_000, at, "A", "S", "X", "buy", 1e-9, 1.0)
