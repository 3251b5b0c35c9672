"""Snapshot mid-stream, restore into a new engine: the rest of the stream gives identical
state and transitions to an uninterrupted run. Corrupt snapshots are detected and skipped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from riskguard.demo.scenario import TradingSim
from riskguard.engine import Engine
from riskguard.examples import LIMITS
from riskguard.ingest.checkpoint import Checkpoints
from riskguard.limits import load
from riskguard.metrics import Metrics
from riskguard.settings import RuntimeSettings
from riskguard.snapshot import (
    SnapshotError,
    SnapshotStore,
    capture,
    decode,
    freeze,
    restore,
    serialise,
)


def stream() -> list:  # type: ignore[type-arg]
    sim = TradingSim(seed=9, activity=0.4)
    sim.runaway_at_ns = sim.start_ns + 4_000 * 1_000_000
    return sim.run(8_000)


def summary(engine: Engine) -> tuple[object, ...]:
    scopes = {s: engine.scope_values(s) for s in engine.keys.scope_names}
    return (
        engine.positions(),
        scopes,
        [(p.evaluations, p.high, p.low) for p in engine.peaks()],
        engine.events_applied,
    )


@pytest.mark.parametrize("cut", [1, 2_500, 7_000])
def test_restore_continues_exactly(cut: int, tmp_path: Path) -> None:
    limits = load(LIMITS)
    events = stream()
    reference = Engine(limits, event_time=True)
    ref_tr = reference.apply(events[:cut]).transitions + reference.apply(events[cut:]).transitions

    first = Engine(limits, event_time=True)
    before = first.apply(events[:cut]).transitions
    store = SnapshotStore(tmp_path)
    store.write(capture(first, {"events/0": cut}))
    snap = store.latest()
    assert snap is not None and snap.offsets == {"events/0": cut}
    second = Engine(limits, event_time=True)
    restore(second, snap)
    for tr in before:  # states come from the journal / control topic in production
        second.killswitch.restore(tr)
    after = second.apply(events[cut:]).transitions
    assert summary(second) == summary(reference)
    key = [(t.scope, t.to, t.kind, t.rule, t.ts, t.limit, t.ends) for t in before + after]
    assert key == [(t.scope, t.to, t.kind, t.rule, t.ts, t.limit, t.ends) for t in ref_tr]


def test_a_resolve_after_a_restart_names_the_alert_it_ends(tmp_path: Path) -> None:
    """An alert raised before the snapshot is resolved after the restore: the resolve
    carries the alert's id (a pager closes the incident by it) and the bound it crossed."""
    limits = load(LIMITS)
    events = stream()
    reference = Engine(limits, event_time=True)
    resolves = [t for t in reference.apply(events).transitions if t.kind == "resolve"]
    assert resolves and all(t.ends for t in resolves)
    ends = resolves[0].ends
    first = Engine(limits, event_time=True)
    trs = []
    for cut in range(0, len(events), 250):  # cut just after the alert it ends was raised
        trs += first.apply(events[cut : cut + 250]).transitions
        if any(t.id == ends for t in trs):
            break
    assert any(t.id == ends for t in trs) and not any(t.ends == ends for t in trs)
    snap = decode(capture(first, {"events/0": cut + 250}), tmp_path / "s.rgs")
    second = Engine(limits, event_time=True)
    restore(second, snap)
    later = second.apply(events[cut + 250 :]).transitions
    again = [t for t in later if t.kind == "resolve" and t.rule == resolves[0].rule]
    assert again and again[0].ends == ends and again[0].limit == resolves[0].limit


def test_corrupt_or_foreign_snapshots_are_skipped(tmp_path: Path) -> None:
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:500])
    store = SnapshotStore(tmp_path, keep=5)
    good = store.write(capture(engine, {"e/0": 500}))
    bad = store.write(capture(engine, {"e/0": 600}))
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0xFF  # a flipped bit in the arrays
    bad.write_bytes(bytes(data))
    snap = store.latest()
    assert snap is not None and snap.path == good
    assert "checksum mismatch" in store.skipped[0]
    with pytest.raises(SnapshotError, match="not a riskguard snapshot"):
        decode(b"PK\x03\x04 something else", tmp_path / "x.rgs")
    truncated = good.read_bytes()[:200]
    with pytest.raises(SnapshotError):
        decode(truncated, good)


def test_keeps_only_the_newest(tmp_path: Path) -> None:
    engine = Engine(load(LIMITS), event_time=True)
    store = SnapshotStore(tmp_path, keep=2)
    for i in range(4):
        store.write(capture(engine, {"e/0": i}))
    assert len(store.paths()) == 2
    latest = store.latest()
    assert latest is not None and latest.offsets == {"e/0": 3}


def test_a_snapshot_of_another_array_layout_is_refused(tmp_path: Path) -> None:
    """Same format version but other record fields (say, a build with another layout):
    loading it would read the wrong fields, so it must be refused."""
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(TradingSim(seed=4).run(2_000))
    frozen = freeze(engine, {"e/0": 1})
    positions = frozen.arrays["state.positions"]
    frozen.arrays["state.positions"] = positions[list(positions.dtype.names[:4])].copy()
    with pytest.raises(SnapshotError, match="'positions' does not match"):
        decode(serialise(frozen), tmp_path / "snapshot-1.rgs")
    assert decode(capture(engine, {"e/0": 1}), tmp_path / "snapshot-2.rgs").offsets == {"e/0": 1}


def test_a_snapshot_holds_the_ids_handed_out_and_the_live_edges_only(tmp_path: Path) -> None:
    """Per-id records are cut to the ids handed out (capacity doubles as keys appear) and
    the alert-edge table, sized for the worst case of a kernel call, is rehashed to its
    live entries; restored, the engine grows them again and continues exactly."""
    limits = load(LIMITS)
    events = stream()
    cut = 4_500
    reference = Engine(limits, event_time=True)
    ref_tr = reference.apply(events).transitions
    first = Engine(limits, event_time=True)
    before = first.apply(events[:cut]).transitions
    st = first.store.state
    first.store.make_room(1 << 16, 0)  # a revaluation of many holders reserves this much
    assert first.store.state.edges.keys.shape[0] >= 1 << 17
    k = first.keys
    capacity = (st.orders.shape[0], st.scopes.shape[0], st.positions.shape[0])
    assert capacity > (k.n_orders, k.n_scopes, k.n_pairs)  # slack the snapshot leaves out
    frozen = freeze(first, {"events/0": cut})
    assert frozen.arrays["state.orders"].shape[0] == k.n_orders
    assert frozen.arrays["state.scopes"].shape[0] == k.n_scopes
    assert frozen.arrays["state.positions"].shape[0] == k.n_pairs
    live = int(first.store.state.edges.counts[0]["live"])
    assert live > 0  # alerts are standing at the cut
    assert frozen.arrays["state.edges.keys"].shape[0] <= max(64, 4 * live)
    second = Engine(limits, event_time=True)
    restore(second, decode(serialise(frozen), tmp_path / "snapshot-1.rgs"))
    for tr in before:
        second.killswitch.restore(tr)
    after = second.apply(events[cut:]).transitions
    assert summary(second) == summary(reference)
    key = [(t.scope, t.to, t.kind, t.rule, t.ts, t.limit, t.ends) for t in before + after]
    assert key == [(t.scope, t.to, t.kind, t.rule, t.ts, t.limit, t.ends) for t in ref_tr]


async def test_a_snapshot_reports_its_pause_write_size_and_the_redelivery_memory(
    tmp_path: Path,
) -> None:
    """What on-call sizes memory and budgets by: the event loop's pause for the copy, the
    write, the file, and how many closed orders and executions are remembered."""
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:3_000])
    metrics = Metrics()
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=0.001)
    checkpoints = Checkpoints(runtime, engine, metrics)
    await asyncio.sleep(0.01)
    checkpoints.maybe_snapshot()
    await asyncio.gather(*[t for t in asyncio.all_tasks() if t.get_name() == "snapshot-write"])
    status = checkpoints.status()
    written = tmp_path / "snapshots" / str(status["last_written"])
    assert status["last_bytes"] == written.stat().st_size > 0
    assert 0 < status["last_pause_seconds"] < 60 and 0 < status["last_write_seconds"] < 60
    text = generate_latest(metrics.registry).decode()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("riskguard_snapshot_", "riskguard_redelivery_memory_ids"))
    }
    assert values["riskguard_snapshot_size_bytes"] == written.stat().st_size
    assert values["riskguard_snapshot_pause_seconds"] > 0
    assert values["riskguard_snapshot_write_seconds"] > 0
    closed, execs = len(engine.keys.closed_orders), len(engine.keys.exec_times)
    assert closed > 0 and execs > 0
    assert values['riskguard_redelivery_memory_ids{kind="order"}'] == closed
    assert values['riskguard_redelivery_memory_ids{kind="execution"}'] == execs
