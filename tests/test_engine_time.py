"""Other people's clocks (issue 10 items 3 and 4): skew, jumps, lateness, resume and restart.

The general forms are in tests/state (the property tests run skewed and late streams
against the reference model); these pin the rules of docs/events.md one by one.
"""

from __future__ import annotations

from pathlib import Path

from riskguard.engine import Engine
from riskguard.limits import parse
from riskguard.settings import EngineSettings
from riskguard.snapshot import SnapshotStore, capture, restore
from tests.builders import MS, T0, fill, heartbeat, mark, new, rules_toml

HOUR = 3_600_000 * MS
RATE = 'name="rate"\nmetric="order_rate"\nscope="strategy"\nwindow_ms=1000\nmax=5\naction="halt"'
SILENT = (
    'name="silent"\nmetric="feed_silence_ms"\nscope="firm"\nmatch={source="r1"}\n'
    'max=2000\naction="halt"'
)
LOSS = 'name="loss"\nmetric="pnl"\nscope="account"\nmin=-500\naction="halt"\n'


def engine(*rules: str, **settings: int) -> Engine:
    text = rules_toml(*rules).replace("version = 1", "version = 1\nrevalue_ms = 0")
    return Engine(parse(text), event_time=True, settings=EngineSettings(**settings))


def burst(start_ms: int, n: int, prefix: str = "b") -> list:  # type: ignore[type-arg]
    return [new(f"{prefix}{i}", (start_ms + i) * MS) for i in range(n)]


def test_an_event_an_hour_ahead_does_not_blind_the_rules() -> None:
    e = engine(RATE, SILENT)
    assert e.apply([heartbeat("r1", 0), new("a", 1 * MS)]).transitions == []
    result = e.apply([heartbeat("r1", HOUR), new("skewed", HOUR + MS)])
    assert [(s.key, s.skew_ns // MS) for s in result.skewed] == []  # not yet: may be a gap
    assert e.last_event_ns == T0 + 1 * MS  # the clock did not follow
    tr = e.apply(burst(100, 6)).transitions  # back on time: the two were skewed
    # the skewed order counts in the window as now (a kill switch errs towards counting):
    # a, skewed, b0..b3 make 6
    assert [(t.rule, t.value, t.ts) for t in tr] == [("rate", 6.0, T0 + 103 * MS)]
    # the skewed heartbeat counts as heard at the clock, so silence is still measured
    (silence,) = e.apply([new("late", 2_200 * MS)]).transitions
    assert (silence.rule, silence.value) == ("silent", 2_199.0)


def test_a_skewed_event_still_moves_positions() -> None:
    e = engine(LOSS)
    e.apply([fill("f", 0, qty=10, price=100.0)])
    result = e.apply([fill("g", HOUR, qty=10, price=100.0, exec_id="g1")])
    assert e.position("account:A", "X") == 20.0
    assert e.last_event_ns == T0
    assert result.transitions == []


def test_three_events_in_a_row_far_ahead_are_a_jump_the_clock_follows() -> None:
    """A session gap in a recording: the clock follows after JUMP_CONFIRM events."""
    e = engine(RATE)
    e.apply([new("a", 0)])
    gap = 8 * HOUR
    result = e.apply([heartbeat("r1", gap), heartbeat("r1", gap + MS), new("b", gap + 2 * MS)])
    assert (result.jumps, result.skewed) == (1, [])
    assert e.last_event_ns == T0 + gap + 2 * MS
    assert e.unsettled_skew() == []


def test_live_the_wall_clock_bounds_event_time_even_for_the_first_event() -> None:
    e = Engine(parse(rules_toml(RATE)), event_time=False, settings=EngineSettings())
    wall = T0 + 10 * MS
    result = e.apply([new("a", HOUR)], wall_ns=wall)
    (skew,) = result.skewed
    assert (skew.key, skew.skew_ns) == ("account:A", HOUR - 10 * MS)
    assert e.last_event_ns == wall


def test_a_resume_after_a_skewed_event_leaves_every_rule_working() -> None:
    e = engine(RATE)
    e.apply(burst(0, 6))
    assert e.killswitch.state("strategy:S") == "HALTED"
    e.apply([new("skewed", HOUR)])
    e.killswitch.resume("strategy:S", "ops", "looked at it")
    (tr,) = e.apply(burst(2_000, 6, "c")).transitions  # judged after the resume: halts again
    assert (tr.rule, tr.to, tr.ts) == ("rate", "HALTED", T0 + 2_005 * MS)


def test_a_restart_after_a_skewed_event_leaves_every_rule_working(tmp_path: Path) -> None:
    e = engine(RATE)
    e.apply([new("a", 0), new("skewed", HOUR)])
    store = SnapshotStore(tmp_path)
    store.write(capture(e, {"t/0": 2}))
    snap = store.latest()
    assert snap is not None
    again = engine(RATE)
    restore(again, snap)
    again.judge_until(again.last_event_ns)  # as a restart does from the last heartbeat
    (tr,) = again.apply(burst(100, 6)).transitions
    assert (tr.rule, tr.value) == ("rate", 6.0)


def test_a_restart_that_rereads_applied_events_changes_nothing(tmp_path: Path) -> None:
    """The redelivery memory is in the snapshot: re-reading from older offsets is harmless."""
    stream = [new("o1", 0, qty=5), fill("o1", 1 * MS, qty=5), mark(101.0, 2 * MS)]
    stream += [new("o2", 3 * MS), fill("o2", 4 * MS, qty=2, exec_id="x2")]
    e = engine(LOSS)
    e.apply(stream)
    store = SnapshotStore(tmp_path)
    store.write(capture(e, {"t/0": len(stream)}))
    snap = store.latest()
    assert snap is not None
    again = engine(LOSS)
    restore(again, snap)
    before = (again.positions(), again.scope_values("account:A"))
    result = again.apply(stream)  # the consumer re-reads what the snapshot already holds
    assert (again.positions(), again.scope_values("account:A")) == before
    assert result.duplicates == 5  # o1, its fill, the mark, o2 and its fill
    assert result.transitions == []


def test_a_late_order_is_never_left_out_of_a_rate() -> None:
    """Within the lateness bound it counts in its own time; beyond it, as now; never dropped
    (the ring holds 1.1 windows: before issue 10 an order older than that was not counted)."""
    e = engine(RATE, max_lateness_ms=100)
    e.apply([new("a", 5_000 * MS)] + [new(f"b{i}", 5_001 * MS + i) for i in range(3)])
    result = e.apply([new("late1", 2_000 * MS)])  # 3 s late: beyond the bound and the ring
    assert result.late == 1
    (tr,) = e.apply([new("c", 5_002 * MS)]).transitions
    assert (tr.rule, tr.value) == ("rate", 6.0)  # the late order is in the window, as now
