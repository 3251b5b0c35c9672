"""Time and continuity hunted for wrong decisions: limits reloaded mid-stream.

Every expected value is derived by hand in the comments from docs/limits.md and
docs/architecture.md (decision 14: a reload between batches keeps what did not change).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from riskguard.audit import AuditLog
from riskguard.engine import Engine
from riskguard.ingest.checkpoint import Checkpoints
from riskguard.ingest.reload import LimitsReloader
from riskguard.killswitch import Transition
from riskguard.limits import Limits, parse
from riskguard.metrics import Metrics
from riskguard.settings import RuntimeSettings
from riskguard.snapshot import SnapshotStore, capture, decode, restore
from riskguard.state.reference import ReferenceModel
from tests.builders import MS, T0, fill, fx, heartbeat, instrument, mark, new, rules_toml

GROSS_ALERT = 'name="g"\nmetric="gross_notional"\nscope="account"\nmax=1000\naction="alert"'
WARNED = (
    'name="gw"\nmetric="gross_notional"\nscope="account"\nmax=4000\nwarn_at=[0.25]\naction="halt"'
)
UNRELATED = 'name="q"\nmetric="order_qty"\nscope="account"\nmax=1e6\naction="halt"'
DUPS = 'name="d"\nmetric="duplicate_orders"\nscope="account"\nwindow_ms=1000\nmax=0\naction="halt"'
SILENCE = 'name="fs"\nmetric="feed_silence_ms"\nscope="firm"\nmax=1000\naction="alert"'


def limits(*rules: str) -> Limits:
    return parse(rules_toml(*rules).replace("version = 1", "version = 1\nrevalue_ms = 0"))


def pages(transitions: list[Transition]) -> list[tuple[str, str | None, float | None]]:
    return [(t.kind, t.rule, t.level) for t in transitions]


def test_a_reload_that_keeps_an_alert_rule_does_not_page_it_again() -> None:
    """A buy of 20 at 100: gross 2,000 > 1,000, the alert `g` pages once. A reload adds
    an unrelated rule and keeps `g` as it was. A mark at 101 (gross 2,020, still over)
    is the same excursion: no second page. A mark at 10 (gross 200) resolves it, naming
    the alert raised before the reload (before: a second alert paged at 2,020, and the
    resolve named that one, leaving the first incident open for ever)."""
    engine = Engine(limits(GROSS_ALERT), event_time=True)
    first = engine.apply([fill("o1", 0, qty=20, price=100)]).transitions
    assert pages(first) == [("alert", "g", None)] and first[0].value == 2_000.0
    assert engine.replace_limits(limits(GROSS_ALERT, UNRELATED)) == []
    assert engine.apply([mark(101, 1 * MS)]).transitions == []
    done = engine.apply([mark(10, 2 * MS)]).transitions
    assert pages(done) == [("resolve", "g", None)]
    assert done[0].ends == first[0].id and done[0].value == 200.0


def test_a_reload_keeps_raised_warning_levels() -> None:
    """`gw` warns at 25 % of 4,000 = 1,000: the gross of 2,000 crosses it once. After a
    reload that keeps `gw`, a mark at 101 (2,020: 50.5 %) crosses nothing new; a mark at
    10 (200: 5 %, below 25 % - 5 %) resolves the level-0.25 warning raised before."""
    engine = Engine(limits(WARNED), event_time=True)
    first = engine.apply([fill("o1", 0, qty=20, price=100)]).transitions
    assert pages(first) == [("alert", "gw", 0.25)]
    engine.replace_limits(limits(UNRELATED, WARNED))  # rows move: gw is now the second rule
    assert engine.apply([mark(101, 1 * MS)]).transitions == []
    done = engine.apply([mark(10, 2 * MS)]).transitions
    assert pages(done) == [("resolve", "gw", 0.25)] and done[0].ends == first[0].id


def test_an_alert_of_a_rule_removed_by_a_reload_is_resolved() -> None:
    """The alert `g` is raised (gross 2,000 > 1,000); a reload removes `g`. Nothing will
    judge `g` again, so the reload itself resolves the alert, naming it (before: no
    resolve ever, the incident stayed open)."""
    engine = Engine(limits(GROSS_ALERT), event_time=True)
    first = engine.apply([fill("o1", 0, qty=20, price=100)]).transitions
    done = engine.replace_limits(limits(UNRELATED))
    assert pages(done) == [("resolve", "g", None)]
    assert done[0].ends == first[0].id and done[0].scope == "account:A"
    assert done[0].reason == "limits reload: rule removed" and done[0].limit == 1_000.0
    assert engine.apply([mark(10, 2 * MS)]).transitions == []


def test_an_alert_of_a_rule_changed_by_a_reload_is_resolved_and_judged_afresh() -> None:
    """`g` raised at 2,000 > 1,000; a reload moves its max to 1,500. The old alert (of
    the 1,000 limit) is resolved, and the changed rule is judged on the book at once:
    2,000 > 1,500 pages once under the new limit. A mark at 101 (2,020) is the same
    excursion: nothing more."""
    engine = Engine(limits(GROSS_ALERT), event_time=True)
    engine.apply([fill("o1", 0, qty=20, price=100)])
    done = engine.replace_limits(limits(GROSS_ALERT.replace("max=1000", "max=1500")))
    assert pages(done) == [("resolve", "g", None), ("alert", "g", None)]
    assert done[0].reason == "limits reload: rule changed"
    assert (done[1].value, done[1].limit) == (2_000.0, 1_500.0)
    assert engine.apply([mark(101, 1 * MS)]).transitions == []


def test_a_feed_silence_alert_is_not_paged_again_after_a_reload() -> None:
    """Heartbeat at 0; tick at 2,000 ms: silent 2,000 ms > 1,000, one alert. A reload
    that keeps `fs`; tick at 3,000 ms: the same silence (3,000 ms), no second page (before:
    paged again). The heartbeat at 3,001 ms ends it (silence is judged before an event
    counts, so at the tick after it, 1 ms: one resolve naming the alert)."""
    engine = Engine(limits(SILENCE), event_time=True)
    engine.apply([heartbeat("h", 0)])
    first = engine.tick(T0 + 2_000 * MS)
    assert pages(first) == [("alert", "fs", None)] and first[0].value == 2_000.0
    engine.replace_limits(limits(SILENCE, UNRELATED))
    assert engine.tick(T0 + 3_000 * MS) == []
    assert engine.apply([heartbeat("h", 3_001 * MS)]).transitions == []
    done = engine.tick(T0 + 3_002 * MS)
    assert pages(done) == [("resolve", "fs", None)] and done[0].ends == first[0].id


def test_a_duplicate_order_window_kept_by_a_reload_still_sees_its_orders() -> None:
    """`d`: no duplicate order (identical symbol, side, qty, price) within 1,000 ms. An
    order at 0 ms, a reload that keeps `d` (and adds a rule), the same order again at
    10 ms: 10 < 1,000, a duplicate, value 1 > 0: halt, as without the reload (before:
    the reload emptied the table of recent orders and the duplicate went unseen)."""
    for reload in (False, True):
        engine = Engine(limits(DUPS), event_time=True)
        engine.apply([new("o1", 0)])
        if reload:
            engine.replace_limits(limits(UNRELATED, DUPS))
        halted = engine.apply([new("o2", 10 * MS)]).transitions
        assert [(t.rule, t.to, t.value) for t in halted] == [("d", "HALTED", 1.0)], reload


def test_a_position_alert_of_a_removed_rule_is_resolved_for_its_symbol() -> None:
    """`p`: symbol position over 10 alerts, kept per symbol. A buy of 20 X raises it for
    symbol:X (value 20); removing `p` resolves that alert, for symbol:X and X."""
    rule = 'name="p"\nmetric="position_qty"\nscope="symbol"\nmax=10\naction="alert"'
    engine = Engine(limits(rule), event_time=True)
    first = engine.apply([fill("o1", 0, qty=20, price=100)]).transitions
    assert [(t.scope, t.symbol, t.value) for t in first] == [("symbol:X", "X", 20.0)]
    done = engine.replace_limits(limits(UNRELATED))
    assert [(t.kind, t.scope, t.symbol, t.ends) for t in done] == [
        ("resolve", "symbol:X", "X", first[0].id)
    ]


class Sent:
    """The reloader's transition sink (riskguard.ingest.ports.TransitionSink)."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    async def send(self, transitions: Sequence[Transition]) -> None:
        self.transitions += transitions


def test_the_reloader_sends_the_resolves_of_removed_rules(tmp_path: Path) -> None:
    """Through `riskguard run`'s reloader: the file loses `g` while its alert is raised;
    the reload applies and the resolve goes out through the outbox (to the control
    topic, journal, pagers)."""
    path = tmp_path / "limits.toml"
    path.write_text(rules_toml(GROSS_ALERT))
    engine = Engine(parse(path.read_bytes(), str(path)), event_time=True)
    first = engine.apply([fill("o1", 0, qty=20, price=100)]).transitions
    sent = Sent()
    reloader = LimitsReloader(
        path, engine, engine.killswitch, sent, AuditLog(tmp_path / "audit.jsonl"), Metrics()
    )
    path.write_text(rules_toml(UNRELATED))
    assert asyncio.run(reloader.reload("SIGHUP"))
    assert [(t.kind, t.rule, t.ends) for t in sent.transitions] == [("resolve", "g", first[0].id)]


def test_a_restart_under_edited_limits_keeps_alerts_and_resolves_removed_ones() -> None:
    """A restart is a reload too when the file changed meanwhile. Under `g` and `gw`, the
    buy of 20 at 100 (gross 2,000) raises `g` (> 1,000) and `gw`'s 25 % warning (of
    4,000). The snapshot is restored under limits keeping `gw` and dropping `g`: the
    restore resolves `g`'s alert (the sidecar sends it once standing states are in);
    a mark at 101 (2,020) pages nothing again (before: `gw`'s warning paged a second
    time, and `g`'s incident was never resolved); a mark at 10 (200) resolves the
    warning raised before the restart."""
    first = Engine(limits(GROSS_ALERT, WARNED), event_time=True)
    raised = first.apply([fill("o1", 0, qty=20, price=100)]).transitions
    assert pages(raised) == [("alert", "g", None), ("alert", "gw", 0.25)]
    snap = decode(capture(first, {"t/0": 1}), Path("snapshot-1.rgs"))
    second = Engine(limits(UNRELATED, WARNED), event_time=True)
    done = restore(second, snap)
    assert [(t.kind, t.rule, t.ends) for t in done] == [("resolve", "g", raised[0].id)]
    assert second.apply([mark(101, 1 * MS)]).transitions == []
    back = second.apply([mark(10, 2 * MS)]).transitions
    assert [(t.kind, t.rule, t.ends) for t in back] == [("resolve", "gw", raised[1].id)]


def test_the_sidecar_sends_a_removed_rules_resolve_with_the_standing_state(
    tmp_path: Path,
) -> None:
    """`riskguard run`'s checkpoints load the snapshot (taken with `g`'s alert raised and
    account:A halted by an operator) under limits without `g`: the resolve is held until
    standing states are restored, then stamped with the scope's state (HALTED)."""
    first = Engine(limits(GROSS_ALERT), event_time=True)
    raised = first.apply([fill("o1", 0, qty=20, price=100)]).transitions
    runtime = RuntimeSettings(state_dir=str(tmp_path))
    SnapshotStore(runtime.snapshot_path).write(capture(first, {"t/0": 1}))
    second = Engine(limits(UNRELATED), event_time=True)
    checkpoints = Checkpoints(runtime, second, Metrics())
    checkpoints.load()
    second.killswitch.halt("account:A", "ops", "reason")  # as the journal restores it
    sent = checkpoints.take_resolves(second.killswitch.state)
    assert [(t.kind, t.rule, t.ends, t.from_, t.to) for t in sent] == [
        ("resolve", "g", raised[0].id, "HALTED", "HALTED")
    ]
    assert checkpoints.take_resolves(second.killswitch.state) == []


def test_a_limit_tightened_below_the_value_halts_at_the_reload() -> None:
    """A buy of 20 at 100: gross 2,000, under `g`'s max of 5,000. A reload lowers it to
    1,000: 2,000 > 1,000, the account halts at the reload, judged at the engine's clock
    (the buy's time), value 2,000, limit 1,000 (before: nothing until the next fill or
    mark of a held symbol, which after the close may be the next session)."""
    halt = GROSS_ALERT.replace('"alert"', '"halt"')
    engine = Engine(limits(halt.replace("max=1000", "max=5000")), event_time=True)
    assert engine.apply([fill("o1", 0, qty=20, price=100)]).transitions == []
    done = engine.replace_limits(limits(halt))
    assert [(t.kind, t.scope, t.to, t.value, t.limit, t.ts) for t in done] == [
        ("auto", "account:A", "HALTED", 2_000.0, 1_000.0, T0)
    ]
    assert engine.killswitch.state("account:A") == "HALTED"


def test_a_rule_added_by_a_reload_judges_the_book_as_it_stands() -> None:
    """A buy of 20 at 100 marked down to 90: pnl = 20 x (90 - 100) = -200. A reload adds
    `floor` (account pnl min -100, reduce_only) and `other` (the same, but for account
    B only): account A goes REDUCE_ONLY at once, value -200, limit -100; `other` judges
    account B alone, which holds nothing (pnl 0 >= -100): no decision."""
    floor = 'name="floor"\nmetric="pnl"\nscope="account"\nmin=-100\naction="reduce_only"'
    other = floor.replace('"floor"', '"other"') + '\nmatch={account="B"}'
    engine = Engine(limits(UNRELATED), event_time=True)
    engine.apply([fill("o1", 0, qty=20, price=100), mark(90, 1 * MS)])
    done = engine.replace_limits(limits(UNRELATED, floor, other))
    assert [(t.rule, t.scope, t.to, t.value, t.limit) for t in done] == [
        ("floor", "account:A", "REDUCE_ONLY", -200.0, -100.0)
    ]


def test_an_alert_paged_after_the_snapshot_is_resolved_after_a_restart() -> None:
    """`g2`: gross over 1,000 alerts, warning at 50 %. A buy of 5 at 100 (gross 500: the
    50 % warning); snapshot at 6 ms; a mark at 300 at 8 ms (gross 1,500 > 1,000: the
    alert pages); a mark at 301 at 10 ms; the instance dies, its heartbeat said 10 ms.
    The next restores the snapshot, judges up to 10 ms (no second page on re-reading),
    and a mark at 50 at 12 ms (gross 250) resolves both the warning and the alert, as the
    first instance would have (before: the alert was not raised on re-reading, so it
    was never resolved, its incident open for ever)."""
    rule = 'name="g2"\nmetric="gross_notional"\nscope="account"\nmax=1000\nwarn_at=[0.5]'
    lim = limits(rule + '\naction="alert"')
    events = [fill("o1", 0, qty=5, price=100), mark(100, 6 * MS), mark(300, 8 * MS)]
    events += [mark(301, 10 * MS), mark(50, 12 * MS)]
    first = Engine(lim, event_time=True)
    first.apply(events[:2])
    snap = decode(capture(first, {"t/0": 2}), Path("snapshot-1.rgs"))
    paged = first.apply(events[2:4]).transitions
    assert pages(paged) == [("alert", "g2", None)]
    second = Engine(lim, event_time=True)
    restore(second, snap)
    second.judge_until(T0 + 10 * MS)  # the first instance's last heartbeat
    assert second.apply(events[2:4]).transitions == []
    done = second.apply(events[4:]).transitions
    assert [(t.kind, t.level, t.ends) for t in done] == [
        ("resolve", 0.5, f"account:A@{T0}:WARN0.5:g2"),
        ("resolve", None, paged[0].id),
    ]


def test_a_mark_older_than_the_first_mark_after_a_replay_gap_is_ignored() -> None:
    """Replay (max_clock_skew_ms 5,000): a buy of 10 at 100, a mark at 100 at 1 ms, then
    a 10 s gap. The mark at 120 (10,000 ms) and a heartbeat (10,000 ms) are ahead of the
    clock: applied at the old clock (1 ms); the heartbeat at 10,001 ms confirms the jump.
    A mark at 110 stamped 9,999 ms then arrives: it is older than the applied mark at
    10,000 ms, so it is ignored (docs/events.md, Rules of use): gross 10 x 120 = 1,200
    (before: the 120 mark stayed stamped at 1 ms, so the older 110 replaced it: 1,100).
    The reference model agrees."""
    lim = limits(GROSS_ALERT.replace("max=1000", "max=1e9"))
    events = [fill("o1", 0, qty=10, price=100), mark(100, 1 * MS), mark(120, 10_000 * MS)]
    events += [heartbeat("h", 10_000 * MS), heartbeat("h", 10_001 * MS)]
    engine, model = Engine(lim, event_time=True), ReferenceModel(lim)
    jumps = 0
    for event in [*events, mark(110, 9_999 * MS)]:
        jumps += engine.apply([event]).jumps
        model.apply_one(event)
    assert jumps == 1
    assert engine.scope_values("account:A")["gross_notional"] == 1_200.0
    assert model.book("account:A").gross == 1_200.0


def test_a_rate_older_than_the_first_rate_after_a_replay_gap_is_ignored() -> None:
    """As above for an exchange rate: X is priced in EUR; a buy of 10 at 100 with EUR at
    1.1 (gross 1,100), a 10 s gap, EUR at 1.2 at 10,000 ms (ahead, then confirmed by two
    heartbeats): gross 1,200. EUR at 1.15 stamped 9,999 ms is older: ignored, gross
    stays 10 x 100 x 1.2 = 1,200 (before: 1,150)."""
    lim = limits(GROSS_ALERT.replace("max=1000", "max=1e9"))
    events = [instrument("X", currency="EUR"), fx("EUR", 1.1), fill("o1", 0, qty=10)]
    events += [fx("EUR", 1.2, 10_000 * MS), heartbeat("h", 10_000 * MS)]
    events += [heartbeat("h", 10_001 * MS), fx("EUR", 1.15, 9_999 * MS)]
    engine, model = Engine(lim, event_time=True), ReferenceModel(lim)
    for event in events:
        engine.apply([event])
        model.apply_one(event)
    assert engine.scope_values("account:A")["gross_notional"] == 1_200.0
    assert model.book("account:A").gross == pytest.approx(1_200.0)  # unrounded


def epochs(revalue_ms: int) -> Limits:
    text = rules_toml(GROSS_ALERT.replace("max=1000", "max=1e9"))
    return parse(text.replace("version = 1", f"version = 1\nrevalue_ms = {revalue_ms}"))


STEPS = [fill("o1", 0, qty=10, price=100), mark(110, 10 * MS), mark(120, 20 * MS)]


def gross(engine: Engine) -> float:
    return float(engine.scope_values("account:A")["gross_notional"])


def test_a_reload_to_a_longer_revaluation_epoch_keeps_revaluing() -> None:
    """revalue_ms 100: the buy of 10 at 100 moves X's price first in its epoch [0, 100)
    ms, so the marks at 10 and 20 ms wait for the next epoch (gross 1,000). A reload sets
    revalue_ms 1,000; a mark at 130 at 40 ms waits too (same 1 s epoch); a heartbeat at
    2,500 ms starts a later epoch: the waiting moves apply, gross 10 x 130 = 1,300
    (before: epoch numbers stayed counted in 100 ms, ten times what the clock reaches in
    1 s epochs, so no epoch ever came again: gross 1,000 for ever, no exposure rule
    judged on any later mark)."""
    engine = Engine(epochs(100), event_time=True)
    engine.apply(STEPS)
    assert gross(engine) == 1_000.0
    engine.replace_limits(epochs(1_000))
    engine.apply([heartbeat("h", 30 * MS), mark(130, 40 * MS)])
    assert gross(engine) == 1_000.0
    engine.apply([heartbeat("h", 2_500 * MS)])
    assert gross(engine) == 1_300.0


def test_a_reload_to_revalue_on_every_move_applies_what_waited() -> None:
    """As above, reloaded to revalue_ms 0 (every move at once): the next event, a
    heartbeat at 30 ms, applies the mark at 120 that waited: gross 1,200 (before: 1,000
    until X's next mark, however long)."""
    engine = Engine(epochs(100), event_time=True)
    engine.apply(STEPS)
    engine.replace_limits(epochs(0))
    engine.apply([heartbeat("h", 30 * MS)])
    assert gross(engine) == 1_200.0


def test_a_restart_under_a_longer_revaluation_epoch_keeps_revaluing() -> None:
    """The snapshot after the marks (revalue_ms 100, 120 waiting) restored under
    revalue_ms 1,000: the heartbeat at 2,500 ms starts a later epoch: gross 1,200."""
    first = Engine(epochs(100), event_time=True)
    first.apply(STEPS)
    second = Engine(epochs(1_000), event_time=True)
    restore(second, decode(capture(first, {"t/0": 3}), Path("snapshot-1.rgs")))
    second.apply([heartbeat("h", 2_500 * MS)])
    assert gross(second) == 1_200.0


def test_an_alert_on_evidence_a_person_judged_still_pages_once_live() -> None:
    """`fat` halts account A on an order of 100 > 50; a buy of 5 at 100 at 10 ms (gross
    500); an operator resumes A at 10 ms: evidence up to 10 ms is judged. A late buy of 10
    at 100 stamped 5 ms takes gross to 1,500 > 1,000 on judged evidence: no page. A mark
    at 101 at 20 ms (gross 15 x 101 = 1,515) is live evidence: `g` pages then (an alert
    raised silently on the judged evidence would have swallowed it)."""
    fat = 'name="fat"\nmetric="order_qty"\nscope="account"\nmax=50\naction="halt"'
    engine = Engine(limits(fat, GROSS_ALERT), event_time=True)
    halted = engine.apply([new("o1", 0, qty=100), fill("o2", 10 * MS, qty=5)]).transitions
    assert [(t.rule, t.to) for t in halted] == [("fat", "HALTED")]
    assert engine.killswitch.resume("account:A", "ops", "checked") is not None
    assert engine.apply([fill("o3", 5 * MS, qty=10)]).transitions == []
    paged = engine.apply([mark(101, 20 * MS)]).transitions
    assert [(t.kind, t.rule, t.value) for t in paged] == [("alert", "g", 1_515.0)]


def test_a_restricted_list_alert_removed_by_a_reload_is_resolved_for_its_symbol() -> None:
    """A restricted entry `watch` (X, action alert) pages on an order in X for the
    ordering strategy; a reload lifts the restriction: the alert is resolved, naming it
    and X."""
    entry = '\n[[restricted]]\nname="watch"\nsymbols=["X"]\nreason="wall"\naction="alert"\n'
    engine = Engine(parse(rules_toml(UNRELATED) + entry), event_time=True)
    first = engine.apply([new("o1", 0)]).transitions
    assert [(t.kind, t.scope, t.symbol) for t in first] == [("alert", "strategy:S", "X")]
    done = engine.replace_limits(parse(rules_toml(UNRELATED)))
    assert [(t.kind, t.symbol, t.ends) for t in done] == [("resolve", "X", first[0].id)]
