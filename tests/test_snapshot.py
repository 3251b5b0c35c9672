"""Snapshot mid-stream, restore into a new engine: the rest of the stream gives identical
state and transitions to an uninterrupted run. Corrupt snapshots are detected and skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskguard.demo.scenario import TradingSim
from riskguard.engine import Engine
from riskguard.examples import LIMITS
from riskguard.limits import load
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
