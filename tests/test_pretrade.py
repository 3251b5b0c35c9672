"""What the gate feed publishes for pre-trade checks, and when (no I/O: collect/commit)."""

from __future__ import annotations

import pytest

from riskguard.control.records import (
    RULES_KEY,
    InstrumentRecord,
    MarkRecord,
    PositionRecord,
    RuleRecord,
    RulesRecord,
    decode_record,
)
from riskguard.engine import Engine
from riskguard.ingest.pretrade import PreTradeFeed, Round, rules_record
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.testing import FakeClock
from tests.builders import MS, T0, fill, fx, instrument, mark, new, rules_toml

RULES = rules_toml(
    'name = "fat"\nmetric = "order_qty"\nscope = "strategy"\nmatch = { strategy = ["s1", "s2"] }'
    '\nmax = 500\naction = "halt"',
    'name = "big"\nmetric = "order_notional"\nscope = "account"\nmax = 1e6\naction = "alert"',
    'name = "collar"\nmetric = "price_deviation"\nscope = "symbol"\nmax = 0.05\nmin = 0\n'
    'action = "reduce_only"',
    'name = "resting"\nmetric = "open_orders"\nscope = "firm"\nmax = 1000\naction = "halt"',
)


def feed() -> tuple[Engine, PreTradeFeed, FakeClock]:
    clock = FakeClock(T0 + 10_000 * MS)
    engine = Engine(parse(RULES), clock=clock)
    return engine, PreTradeFeed(engine, Metrics(), 100, clock), clock


def records(batch: Round) -> dict[bytes, object]:
    """The batch's records by key, strategies' homes left out (tests/test_s21_gate.py)."""
    return {
        key: decode_record(value) for key, value in batch.messages if not key.startswith(b"home:")
    }


def test_rules_record_carries_only_the_per_order_rules() -> None:
    limits = parse(RULES)
    record = rules_record(limits, ts=7)
    assert record == RulesRecord(
        limits_sha256=limits.digest,
        rules=(
            RuleRecord("fat", "order_qty", "strategy", "halt", {"strategy": ("s1", "s2")}, 500.0),
            RuleRecord("big", "order_notional", "account", "alert", {}, 1e6),
            RuleRecord("collar", "price_deviation", "symbol", "reduce_only", {}, 0.05, 0.0),
        ),
        ts=7,
    )


def test_rules_stay_pending_until_the_broker_took_them() -> None:
    engine, f, _ = feed()
    first = f.collect()
    assert RULES_KEY in records(first)
    assert RULES_KEY in records(f.collect())  # not committed: still pending
    f.commit(first)
    assert f.collect().messages == [] and f.rules_published == engine.limits.digest
    assert f.status()["rules_pending"] is False


def test_marks_are_published_once_per_change() -> None:
    engine, f, clock = feed()
    f.commit(f.collect())
    engine.apply([mark(10.0, 0, "X"), mark(20.0, 1, "Y")])
    batch = f.collect()
    assert records(batch) == {
        b"mark:X": MarkRecord("X", 10.0, clock.now_ns),
        b"mark:Y": MarkRecord("Y", 20.0, clock.now_ns),
    }
    f.commit(batch)
    assert f.collect().messages == []
    engine.apply([mark(10.0, 2, "X"), mark(21.0, 3, "Y"), mark(22.0, 4, "Y")])
    assert records(f.collect()) == {b"mark:Y": MarkRecord("Y", 22.0, clock.now_ns)}
    assert f.collect(full=False).messages == []  # a quick round carries no marks


def test_a_fill_price_is_the_reference_before_any_mark() -> None:
    engine, f, clock = feed()
    f.commit(f.collect())
    engine.apply([new("o", 0, price=99.5), fill("o", 1, price=99.5)])
    assert records(f.collect()) == {b"mark:X": MarkRecord("X", 99.5, clock.now_ns)}


def test_an_instrument_goes_out_before_any_price_and_again_when_its_money_changes() -> None:
    """A gate values 10 ES at 6,000 as 10 x 6,000 x 50 = 3,000,000 before ES has a mark
    or a trade (it valued it at 60,000: no mark record, so 1 and 1). Every described
    symbol gets an instrument record, whose rate follows its currency (None: no rate)."""
    engine, f, clock = feed()
    f.commit(f.collect())
    engine.apply([instrument("ES", 50.0, t=0), instrument("FESX", 10.0, "EUR", t=1)])
    first = f.collect()
    assert records(first) == {
        b"instrument:ES": InstrumentRecord("ES", clock.now_ns, multiplier=50.0, rate=1.0),
        b"instrument:FESX": InstrumentRecord("FESX", clock.now_ns, multiplier=10.0, rate=None),
    }
    assert first.counts["instrument"] == 2 and first.counts["mark"] == 0
    f.commit(first)
    assert f.collect().messages == []  # once per change
    engine.apply([fx("EUR", 1.1, t=2), mark(4000.0, 3, "FESX")])
    assert records(f.collect()) == {
        b"instrument:FESX": InstrumentRecord("FESX", clock.now_ns, multiplier=10.0, rate=1.1),
        b"mark:FESX": MarkRecord("FESX", 4000.0, clock.now_ns, multiplier=10.0, rate=1.1),
    }
    f.commit(f.collect())
    f.resend()  # the broker came back empty: every instrument goes out again
    assert {b"instrument:ES", b"instrument:FESX"} <= set(records(f.collect()))


def test_reduce_only_positions_on_entry_then_changes() -> None:
    engine, f, clock = feed()
    engine.apply(
        [
            new("a", 0, qty=100),
            fill("a", 1, qty=100),
            new("b", 2, qty=5, side="sell", symbol="Y"),
            fill("b", 3, qty=5, side="sell", symbol="Y"),
            new("c", 4, qty=5, symbol="Y"),
            fill("c", 5, qty=5, symbol="Y"),  # flat again in Y
            new("d", 6, qty=7, account="B", strategy="T", symbol="Z"),
            fill("d", 7, qty=7, account="B", strategy="T", symbol="Z"),
        ]
    )
    f.commit(f.collect())
    engine.killswitch.halt("account:A", "alice", "near the loss limit", action="reduce_only")
    engine.killswitch.halt("symbol:Z", "alice", "news", action="reduce_only")
    entry = f.collect(full=False)
    now = clock.now_ns
    assert records(entry) == {
        b"position:account:A:X": PositionRecord("account:A", "X", 100.0, now),
        b"position:account:A:Y": PositionRecord("account:A", "Y", 0.0, now),  # overwrites
        b"position:symbol:Z:Z": PositionRecord("symbol:Z", "Z", 7.0, now),  # the firm's
    }
    f.commit(entry)
    assert f.collect().messages == []
    engine.apply([new("e", 8 * MS, qty=40, side="sell"), fill("e", 9 * MS, qty=40, side="sell")])
    clock.advance(ms=100)
    assert records(f.collect()) == {
        b"position:account:A:X": PositionRecord("account:A", "X", 60.0, clock.now_ns),
    }  # X still trades at 100: its mark did not change
    assert f.collect(full=False).messages == []  # changes wait for the full round
    engine.killswitch.halt("account:A", "alice", "limit hit")  # HALTED: no position needed
    f.commit(f.collect())
    assert f.status()["reduce_only_scopes"] == ["symbol:Z"]


def test_a_reduce_only_venue_gets_the_firms_positions_in_every_symbol() -> None:
    """Positions are not kept per venue: a REDUCE_ONLY venue is published the firm's
    position in each symbol (an order to it may only reduce that), whether or not an
    order ever went to the venue. Before, a venue got none: gates read 0 and refused
    every order to it, reducing ones included."""
    engine, f, clock = feed()
    engine.apply(
        [
            new("a", 0, qty=100, venue="XNAS"),
            fill("a", 1, qty=100, venue="XNAS"),
            new("b", 2, qty=30, side="sell", account="B", strategy="T", venue="ARCX"),
            fill("b", 3, qty=30, side="sell", account="B", strategy="T", venue="ARCX"),
            new("c", 4, qty=4, side="sell", symbol="Y"),
            fill("c", 5, qty=4, side="sell", symbol="Y"),
        ]
    )
    f.commit(f.collect())
    engine.killswitch.halt("venue:XNAS", "alice", "venue degraded", action="reduce_only")
    engine.killswitch.halt("venue:BATS", "alice", "venue degraded", action="reduce_only")
    now = clock.now_ns
    assert records(f.collect(full=False)) == {
        b"position:venue:XNAS:X": PositionRecord("venue:XNAS", "X", 70.0, now),  # 100 - 30
        b"position:venue:XNAS:Y": PositionRecord("venue:XNAS", "Y", -4.0, now),
        b"position:venue:BATS:X": PositionRecord("venue:BATS", "X", 70.0, now),
        b"position:venue:BATS:Y": PositionRecord("venue:BATS", "Y", -4.0, now),
    }


def test_entering_reduce_only_again_republishes_every_position() -> None:
    engine, f, _ = feed()
    engine.apply([new("a", 0, qty=3), fill("a", 1, qty=3)])
    engine.killswitch.halt("firm", "ops", "drill", action="reduce_only")
    f.commit(f.collect())
    assert f.collect().messages == []
    engine.killswitch.resume("firm", "ops", "done")
    engine.killswitch.halt("firm", "ops", "again", action="reduce_only")
    assert list(records(f.collect(full=False))) == [b"position:firm:X"]


async def test_publishing_needs_the_control_publisher() -> None:
    _, f, _ = feed()
    with pytest.raises(RuntimeError, match="call open"):
        await f.publish_round()
