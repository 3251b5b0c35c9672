"""The aggregation topic's records, and which of them add up to the whole input.

Each group-mode instance publishes one :class:`Contribution` (keyed by group and instance,
on a compacted one-partition topic) whenever its parts changed, at most every
``scale.aggregate_interval_ms``, once it has restored the partitions it owns. A record
speaks for exactly the partitions it names, each counted from its session start.

Membership changes leave records behind: a dead instance's last record stays in the
topic, and an instance's record names the partitions it owned when it was sent. So
:func:`cover` takes, for every input partition, the **newest** record naming it (by
topic offset), and the sums are whole only when every partition has one and every
record taken is the newest for *all* the partitions it names (a record cannot be split:
one superseded for some of its partitions would count them twice). While a rebalance is
under way the cover is incomplete and nothing is judged; a dead member's partitions are
counted from its last record until a survivor has restored them and published, except
for window counts whose whole window has passed since the record was read
(:func:`expired`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from riskguard.aggregate.contributions import Parts, RowParts
from riskguard.state.codes import NBUCKETS
from riskguard.vocabulary import money

RECORD_VERSION = 1


class RaisedEdge(msgspec.Struct, frozen=True, array_like=True):
    """An alert or warning the judging member raised on a sum and has not resolved:
    ``rule`` and its compiled ``row``, the ``scope``, the ``bit`` (a warning level's
    index, or -1 for an alert rule's own breach), the raising transition's ``alert_id``
    (its resolve names it) and the ``limit`` it crossed."""

    rule: str
    row: int
    scope: str
    bit: int
    alert_id: str
    limit: float


class Contribution(msgspec.Struct, frozen=True, kw_only=True):
    """One instance's part of every summed rule, as of ``as_of_ns``.

    ``group``: the consumer group (``kafka.group_id``) the instance is a member of (a
    topic shared by several groups is read for one's own records only);
    ``partitions``: the input partitions it speaks for (``"topic/partition"``);
    ``limits_digest``: the limits it counted under (sums are only taken over records
    of the same limits); ``parts``: :data:`riskguard.aggregate.contributions.Parts`;
    ``as_of_ns``: the engine's latest event time when the parts were read (ns since the
    epoch: the sums' evidence); ``read_ns``: the engine clock the parts were read at
    (windows end there; 0: not said, a member older than this field); ``sent_ns``: wall
    clock when sent; ``positions``: for each REDUCE_ONLY scope spanning
    partitions, the instance's net position by symbol
    (:func:`riskguard.aggregate.contributions.scope_positions`), summed by the judging
    instance into the position records gates judge that scope's orders by, and
    ``leaves``, what its working (buy, sell) orders moving them may still fill
    (:func:`riskguard.aggregate.contributions.scope_leaves`; a member older than this
    field reports none);
    ``judge_since_ns``: wall clock when the instance last became the judging member (0:
    never), with ``raised``, the alerts and warnings it held raised when it last judged:
    the next judging member takes over those of the newest judge, so an alert standing
    at a handover is neither raised again nor left without its resolve.
    """

    group: str
    instance: str
    partitions: tuple[str, ...]
    limits_digest: str
    as_of_ns: int
    sent_ns: int
    parts: Parts
    positions: dict[str, dict[str, float]] = {}
    judge_since_ns: int = 0
    raised: tuple[RaisedEdge, ...] = ()
    read_ns: int = 0
    leaves: dict[str, dict[str, tuple[float, float]]] = {}
    v: int = RECORD_VERSION


_decoder = msgspec.json.Decoder(Contribution)
_encoder = msgspec.json.Encoder()


def encode(record: Contribution) -> bytes:
    """The record as JSON bytes (floats round-trip exactly)."""
    return _encoder.encode(record)


def decode(value: bytes) -> Contribution:
    """Parse a record; raises ``msgspec.DecodeError`` or ``msgspec.ValidationError``."""
    return _decoder.decode(value)


@dataclass(frozen=True, slots=True)
class Held:
    """The latest record of one instance, and its offset on the aggregation topic."""

    offset: int
    record: Contribution


@dataclass(frozen=True, slots=True)
class Cover:
    """Which records add up to the whole input (see the module).

    ``records``: the records taken (empty unless ``complete``); ``missing``: partitions
    no record names; ``split``: instances whose record is the newest for some of its
    partitions only (a rebalance under way).
    """

    complete: bool
    records: tuple[Contribution, ...] = ()
    missing: frozenset[str] = frozenset()
    split: frozenset[str] = frozenset()
    digests: frozenset[str] = field(default_factory=frozenset)

    @property
    def as_of_ns(self) -> int:
        """The newest ``as_of_ns`` of the records taken (0 for none): the sums' evidence
        time, as a kernel decision is stamped with its newest event's time."""
        return max((r.as_of_ns for r in self.records), default=0)

    @property
    def oldest_ns(self) -> int:
        """The oldest ``as_of_ns`` of the records taken (0 for none)."""
        return min((r.as_of_ns for r in self.records), default=0)


def cover(held: Mapping[str, Held], whole: Collection[str]) -> Cover:
    """The records (latest per instance, in ``held``) that add up to the partitions in
    ``whole`` (every input partition, ``"topic/partition"``)."""
    newest: dict[str, Held] = {}
    for h in held.values():
        for p in h.record.partitions:
            if p in whole and (p not in newest or h.offset > newest[p].offset):
                newest[p] = h
    missing = frozenset(p for p in whole if p not in newest)
    taken = {h.record.instance: h for h in newest.values()}
    split = frozenset(
        name
        for name, h in taken.items()
        if any(p in whole and newest.get(p) is not h for p in h.record.partitions)
    )
    if missing or split:
        return Cover(False, missing=missing, split=split)
    records = tuple(taken[name].record for name in sorted(taken))
    return Cover(True, records, digests=frozenset(r.limits_digest for r in records))


@dataclass(frozen=True, slots=True)
class Sum:
    """One scope's summed value for one compiled row of a rule."""

    value: float
    """The rule's metric over the whole input (NaN: unknown, or below ``min_orders``)."""
    parts: int
    """How many instances contributed a non-zero or unknown part."""


def expired(record: Contribution, window_ms: int, now_ns: int) -> bool:
    """Whether every count in ``record``'s parts of a ``window_ms`` window is out of the
    window ending at ``now_ns`` (ns): the newest bucket they can hold (that of its read
    time, or of its latest event if later) is older than the window's ``NBUCKETS`` + 1
    buckets. A record of a member that stopped publishing (dead, restoring, cut off)
    keeps speaking for its partitions, but not with counts its window has dropped.
    False when the record does not say when it was read (``read_ns`` 0)."""
    if record.read_ns <= 0:
        return False
    width = -(-window_ms * 1_000_000 // NBUCKETS)  # the kernel's bucket width
    newest = max(record.read_ns, record.as_of_ns) // width
    return now_ns // width - NBUCKETS > newest


def row_sums(
    records: Sequence[Contribution],
    rule: str,
    row: int,
    metric: str,
    min_orders: int,
    *,
    window_ms: int | None = None,
    now_ns: int = 0,
    lag: Mapping[str, int] | None = None,
) -> dict[str, Sum] | None:
    """Per scope, the sum over ``records`` of row ``row`` of rule ``rule`` (``metric``
    its metric; ``min_orders`` cancel_ratio's). None when a record lacks the row (it
    counted under other limits). Money is rounded once, on the sum. With ``window_ms``
    (a windowed rule's) and ``now_ns`` (the judge's clock), a record whose counts have
    all left the window (:func:`expired`) counts 0; ``lag``: per instance, how far the
    judge's clock is ahead of that member's (ns; the judge's clock when it received the
    record less its ``sent_ns``: clock skew plus transit), so that members' clocks that
    differ never expire a fresh record."""
    rows: list[RowParts] = []
    for rec in records:
        got = rec.parts.get(rule)
        if got is None or row >= len(got):
            return None
        behind = (lag or {}).get(rec.instance, 0)
        if window_ms is None or not expired(rec, window_ms, now_ns - behind):
            rows.append(got[row])
    totals: dict[str, list[float | None]] = {}
    counted: dict[str, int] = {}
    for parts in rows:
        for scope, part in parts.items():
            acc = totals.setdefault(scope, [0.0] * len(part))
            counted[scope] = counted.get(scope, 0) + 1
            for i, x in enumerate(part):
                a = acc[i] if i < len(acc) else 0.0
                acc[i] = None if a is None or x is None else a + x
    out: dict[str, Sum] = {}
    for scope, acc in totals.items():
        out[scope] = Sum(_value(metric, acc, min_orders), counted[scope])
    return out


def no_parts(metric: str, min_orders: int) -> Sum:
    """The sum of a scope no record has a part of: 0 (for ``cancel_ratio`` too: no cancel in
    the window reads 0, as the kernel reads an empty window)."""
    return Sum(_value(metric, [0.0], min_orders), 0)


def _value(metric: str, acc: list[float | None], min_orders: int) -> float:
    if any(x is None for x in acc):
        return math.nan
    xs = [float(x) for x in acc if x is not None]
    if metric == "cancel_ratio":
        news = xs[1] if len(xs) > 1 else 0.0
        if xs[0] == 0.0:
            return 0.0  # no cancel in the window (an empty one too), as the kernel
        return xs[0] / news if news >= min_orders else math.nan
    if metric in ("order_rate", "message_rate", "reject_rate", "fill_count", "open_orders"):
        return xs[0]
    return money(xs[0])


def position_sums(
    records: Sequence[Contribution], scopes: Collection[str]
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per scope of ``scopes``, (net position, buy leaves, sell leaves) by symbol summed
    over ``records`` (those that cover the input: :func:`cover`). A scope no record
    reports is left out (its members have not published since it entered REDUCE_ONLY)."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for scope in scopes:
        reported = [r for r in records if scope in r.positions]
        if len(reported) < len(records):
            continue
        by_symbol: dict[str, list[list[float]]] = {}
        for r in reported:
            leaves = r.leaves.get(scope, {})
            for symbol, qty in r.positions[scope].items():
                buys, sells = leaves.get(symbol, (0.0, 0.0))
                sums = by_symbol.setdefault(symbol, [[], [], []])
                for into, x in zip(sums, (qty, buys, sells), strict=True):
                    into.append(x)
        # quantities are exact decimal sums in each engine: no binary residue in the total
        out[scope] = {y: (_sum(qs), _sum(bs), _sum(ss)) for y, (qs, bs, ss) in by_symbol.items()}
    return out


def _sum(xs: list[float]) -> float:
    return round(math.fsum(xs), 9) + 0.0
