"""Event builders for hand-written streams: times are offsets in ns from T0."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Any

import pytest

from riskguard import events as wire
from riskguard.ingest.coordinates import Coordinates

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def rules_toml(*rules: str) -> str:
    """A limits file from rule bodies (each the lines inside one [[rule]])."""
    return "version = 1\n" + "".join(f"\n[[rule]]\n{r.strip()}\n" for r in rules)


K = {"account": "A", "strategy": "S", "symbol": "X"}


def new(
    oid: str, t: int = 0, qty: float = 10, price: float | None = 100.0, **kw: Any
) -> wire.NewOrder:
    args: dict[str, Any] = {**K, "side": "buy", **kw}
    return wire.NewOrder(ts=T0 + t, order_id=oid, qty=qty, price=price, **args)


def fill(oid: str, t: int = 0, qty: float = 10, price: float = 100.0, **kw: Any) -> wire.Fill:
    args: dict[str, Any] = {**K, "side": "buy", "exec_id": f"x-{oid}-{t}", **kw}
    return wire.Fill(ts=T0 + t, order_id=oid, qty=qty, price=price, **args)


def cancel(oid: str, t: int = 0, **kw: Any) -> wire.CancelOrder:
    return wire.CancelOrder(ts=T0 + t, order_id=oid, **{**K, **kw})


def reject(oid: str, t: int = 0, **kw: Any) -> wire.RejectOrder:
    return wire.RejectOrder(ts=T0 + t, order_id=oid, **{**K, **kw})


def replace(
    oid: str, t: int = 0, qty: float = 10, price: float | None = 100.0, **kw: Any
) -> wire.ReplaceOrder:
    args: dict[str, Any] = {**K, "side": "buy", **kw}
    return wire.ReplaceOrder(ts=T0 + t, order_id=oid, qty=qty, price=price, **args)


def mark(price: float, t: int = 0, symbol: str = "X") -> wire.Mark:
    return wire.Mark(ts=T0 + t, symbol=symbol, price=price)


def parent(pid: str, qty: float, t: int = 0, **kw: Any) -> wire.ParentOrder:
    args: dict[str, Any] = {**K, "side": "buy", **kw}
    return wire.ParentOrder(ts=T0 + t, parent_id=pid, qty=qty, **args)


def heartbeat(source: str, t: int = 0) -> wire.Heartbeat:
    return wire.Heartbeat(ts=T0 + t, source=source)


def instrument(
    symbol: str, multiplier: float = 1.0, currency: str | None = None, t: int = 0
) -> wire.Instrument:
    return wire.Instrument(ts=T0 + t, symbol=symbol, multiplier=multiplier, currency=currency)


def fx(currency: str, rate: float, t: int = 0) -> wire.Fx:
    return wire.Fx(ts=T0 + t, currency=currency, rate=rate)


def position(
    qty: float, kind: str = "open", t: int = 0, price: float | None = None, **kw: Any
) -> wire.Position:
    args: dict[str, Any] = {**K, **kw}
    return wire.Position(ts=T0 + t, qty=qty, kind=kind, price=price, **args)  # type: ignore[arg-type]


def bust(oid: str, ref_exec_id: str, t: int = 0, **kw: Any) -> wire.Fill:
    """A bust (FIX ExecType H) of execution ``ref_exec_id``."""
    args: dict[str, Any] = {**K, "exec_id": f"bust-{ref_exec_id}-{t}", **kw}
    return wire.Fill(ts=T0 + t, order_id=oid, exec_type="bust", ref_exec_id=ref_exec_id, **args)


def correct(
    oid: str, ref_exec_id: str, t: int = 0, qty: float = 10, price: float = 100.0, **kw: Any
) -> wire.Fill:
    """A correction (FIX ExecType G) of execution ``ref_exec_id`` to ``qty`` at ``price``."""
    args: dict[str, Any] = {**K, "side": "buy", "exec_id": f"corr-{ref_exec_id}-{t}", **kw}
    return wire.Fill(
        ts=T0 + t,
        order_id=oid,
        exec_type="correct",
        ref_exec_id=ref_exec_id,
        qty=qty,
        price=price,
        **args,
    )


BROADCAST = (wire.Mark, wire.Fx, wire.Instrument, wire.Heartbeat)
"""Events every input partition carries (decision 42)."""


def partition_of(account: str, partitions: int) -> int:
    """The input partition of ``account``'s events: a stable hash of it mod ``partitions``."""
    return zlib.crc32(account.encode()) % partitions


def batches(
    events: Sequence[wire.Event],
    partitions: int,
    seed: int,
    topic: str = "in",
    *,
    broadcast_alone: bool = False,
) -> list[tuple[list[wire.Event], Coordinates]]:
    """``events`` (one stream in time order) as a group member consumes them: each event
    keyed by account in its partition (:func:`partition_of`), a broadcast event in every
    partition; cut into batches of 1 to 8 stream events (sizes drawn from ``seed``), each
    batch's events grouped by partition in partition order, with the
    :class:`Coordinates` the consume loop builds (``partition()``, then ``add()`` per
    event; offsets count per partition). ``broadcast_alone``: each broadcast event is a
    batch of its own (every partition's copy of it is read before any later event)."""
    rng = random.Random(seed)
    offsets = [0] * partitions
    out: list[tuple[list[wire.Event], Coordinates]] = []
    k = 0
    while k < len(events):
        chunk = events[k : k + rng.randint(1, 8)]
        if broadcast_alone:
            cut = next((i for i, e in enumerate(chunk) if isinstance(e, BROADCAST)), len(chunk))
            chunk = chunk[: max(cut, 1)]
        k += len(chunk)
        batch: list[wire.Event] = []
        where = Coordinates()
        for p in range(partitions):
            mine = [e for e in chunk if isinstance(e, BROADCAST) or _account_in(e, p, partitions)]
            if not mine:
                continue
            where.partition(f"{topic}/{p}")
            for offset in range(offsets[p], offsets[p] + len(mine)):
                where.add(offset, b"")
            offsets[p] += len(mine)
            batch += mine
        out.append((batch, where))
    return out


def _account_in(event: wire.Event, p: int, partitions: int) -> bool:
    return partition_of(str(getattr(event, "account", "")), partitions) == p


def assert_judged_values_were_had(
    engine: Any, events: list[wire.Event], scopes: list[str], metrics: tuple[str, ...]
) -> None:
    """Apply ``events`` to ``engine`` (revalue_ms = 0) one at a time. After each, every
    scope's drawdown is the high of its pnl values so far (from 0) minus its pnl; at the
    end, every rule's judged high and low is one of the values (of ``metrics``, at the
    rule's level) some scope had after an event: never a moment inside one."""

    def near(expected: float) -> Any:
        return pytest.approx(expected, rel=1e-9, abs=1e-9)

    seen: dict[tuple[str, str], list[float]] = {}
    high = dict.fromkeys(scopes, 0.0)
    for event in events:
        engine.apply([event])
        for scope in scopes:
            values = engine.scope_values(scope)
            high[scope] = max(high[scope], values["pnl"])
            assert values["drawdown"] == near(max(0.0, round(high[scope] - values["pnl"], 6)))
            for metric in metrics:
                seen.setdefault((metric, scope.partition(":")[0]), []).append(values[metric])
    for p in engine.peaks():
        if p.evaluations == 0:
            continue
        had = seen[(p.rule.metric, p.rule.scope)]
        assert p.high is not None and p.low is not None
        assert any(p.high == near(v) for v in had), (p.rule.name, p.high)
        assert any(p.low == near(v) for v in had), (p.rule.name, p.low)


def run_kernel_and_reference(
    events: list[wire.Event], limits_toml: str
) -> tuple[Any, Any, list[Any]]:
    """The kernel, one event per batch (then settled), and the plain-Python reference model
    over ``events`` under ``limits_toml``: (engine, model, the kernel's transitions)."""
    from riskguard.engine import Engine  # noqa: PLC0415 - builders stay light to import
    from riskguard.limits import parse  # noqa: PLC0415
    from riskguard.state.reference import ReferenceModel  # noqa: PLC0415

    lim = parse(limits_toml)
    engine = Engine(lim, event_time=True)
    ref = ReferenceModel(lim)
    out: list[Any] = []
    for event in events:
        out += engine.apply([event]).transitions
        ref.apply_one(event)
    out += engine.settle()
    ref.settle()
    return engine, ref, out
