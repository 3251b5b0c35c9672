"""The gate feed of a group member: positions and prices over its partitions' engines
(riskguard/ingest/partitions.py), no I/O (collect/commit)."""

from __future__ import annotations

from aiokafka.structs import TopicPartition

from riskguard.control.records import MarkRecord, PositionRecord, decode_record, mark_key
from riskguard.engine import Engine
from riskguard.events import Event
from riskguard.ingest.coordinates import Coordinates
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.pretrade import PreTradeFeed
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.testing import FakeClock
from tests.builders import MS, T0, fill, mark, new, rules_toml

RULES = rules_toml(
    'name = "big"\nmetric = "order_notional"\nscope = "account"\nmax = 1e6\naction = "alert"'
)
P0, P1 = TopicPartition("in", 0), TopicPartition("in", 1)


def member() -> tuple[PartitionEngines, PreTradeFeed, FakeClock]:
    clock = FakeClock(T0 + 10_000 * MS)
    parts = PartitionEngines(Engine(parse(RULES), clock=clock, warm=False))
    for tp in (P0, P1):
        parts.add(tp, parts.fresh())
    feed = PreTradeFeed(parts.home, Metrics(), 100, clock)
    feed.books, feed.fill_prices = parts.all, parts.fill_prices
    return parts, feed, clock


def batch(parts: PartitionEngines, by_partition: dict[TopicPartition, list[Event]]) -> None:
    """Apply one consumed batch, built as the consume loop builds it."""
    events: list[Event] = []
    where = Coordinates()
    for tp, evs in by_partition.items():
        where.partition(f"{tp.topic}/{tp.partition}")
        for i, ev in enumerate(evs):
            events.append(ev)
            where.add(i, b"")
    parts.apply(events, where)


def marks(feed: PreTradeFeed) -> dict[bytes, MarkRecord]:
    got = feed.collect()
    feed.commit(got)
    out = {k: decode_record(v) for k, v in got.messages if k.startswith(b"mark:")}
    return {k: v for k, v in out.items() if isinstance(v, MarkRecord)}


def test_a_symbol_no_mark_reached_goes_to_the_gates_at_the_latest_partitions_fill() -> None:
    """The home engine publishing marks reads no fill: without this the gates would get
    no price for X, and a market order's notional would pass unjudged."""
    parts, feed, _ = member()
    batch(parts, {P0: [new("a", 0, account="A0"), fill("a", 1, price=100.0, account="A0")]})
    batch(parts, {P1: [new("b", 5, account="A1"), fill("b", 6, price=101.0, account="A1")]})
    got = marks(feed)
    assert got[mark_key("X")].price == 101.0  # the latest fill, whichever partition
    assert marks(feed) == {}  # unchanged: not sent again
    batch(parts, {P0: [new("c", 9, account="A0"), fill("c", 10, price=99.0, account="A0")]})
    assert marks(feed)[mark_key("X")].price == 99.0
    batch(parts, {P0: [mark(98.0, 11)], P1: [mark(98.0, 11)]})  # broadcast: home has it
    got = marks(feed)
    assert got[mark_key("X")].price == 98.0  # the mark, from the home engine
    batch(parts, {P1: [new("d", 12, account="A1"), fill("d", 13, price=97.0, account="A1")]})
    assert marks(feed) == {}  # marked: fills no longer priced for the gates


def test_a_reduce_only_accounts_positions_come_from_its_partitions_engine() -> None:
    parts, feed, _ = member()
    batch(parts, {P0: [new("a", 0, account="A0"), fill("a", 1, qty=7, account="A0")]})
    batch(parts, {P1: [new("b", 2, account="A1"), fill("b", 3, qty=3, account="A1")]})
    parts.killswitch.halt("account:A1", "ops", "test", action="reduce_only")
    got = feed.collect()
    positions = [decode_record(v) for k, v in got.messages if k.startswith(b"position:")]
    # b (10, 3 filled) still works: 7 may still be bought (A0's a is another account's)
    expected = PositionRecord("account:A1", "X", 3.0, T0 + 10_000 * MS, buy_leaves=7.0)
    assert positions == [expected]
