"""Each metric of the vocabulary, on small hand-built streams with known answers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from riskguard.engine import Engine
from riskguard.events import Event
from riskguard.killswitch import Transition
from tests.builders import (
    MS,
    T0,
    cancel,
    fill,
    heartbeat,
    mark,
    new,
    parent,
    reject,
    replace,
)

Make = Callable[..., Engine]


def rule(metric: str, scope: str = "strategy", action: str = "halt", **extra: object) -> str:
    lines = [
        f'name = "{metric}-rule"',
        f'metric = "{metric}"',
        f'scope = "{scope}"',
        f'action = "{action}"',
    ]
    for key, value in extra.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, dict):
            body = ", ".join(f'{k} = "{v}"' for k, v in value.items())
            lines.append(f"{key} = {{ {body} }}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines)


def run(engine: Engine, events: list[Event]) -> list[Transition]:
    result = engine.apply(events)
    assert not result.bad, result.bad
    return result.transitions


def only(transitions: list[Transition]) -> Transition:
    assert len(transitions) == 1, transitions
    return transitions[0]


def test_order_rate_breaches_inside_the_window_only(engine_for: Make) -> None:
    e = engine_for(rule("order_rate", window_ms=100, max=2))
    assert run(e, [new("a", 0), new("b", 10 * MS), new("c", 150 * MS)]) == []  # 2 then 1 in window
    tr = only(run(e, [new("d", 160 * MS), new("e", 170 * MS)]))  # c, d, e within 100 ms
    assert (tr.scope, tr.from_, tr.to, tr.rule, tr.value, tr.limit) == (
        "strategy:S",
        "ACTIVE",
        "HALTED",
        "order_rate-rule",
        3.0,
        2.0,
    )
    assert tr.ts == T0 + 170 * MS
    assert e.killswitch.state("strategy:S") == "HALTED"


def test_window_is_at_least_window_ms_and_at_most_ten_percent_more(engine_for: Make) -> None:
    e = engine_for(rule("order_rate", window_ms=100, max=1))
    assert run(e, [new("a", 0), new("b", 111 * MS)]) == []  # 111 ms apart: outside
    e2 = engine_for(rule("order_rate", window_ms=100, max=1))
    assert len(run(e2, [new("a", 0), new("b", 99 * MS)])) == 1  # inside window_ms


def test_message_rate_counts_new_replace_cancel(engine_for: Make) -> None:
    e = engine_for(rule("message_rate", scope="account", window_ms=1000, max=2))
    assert run(e, [new("a", 0), replace("a", MS, qty=5)]) == []
    tr = only(run(e, [cancel("a", 2 * MS)]))
    assert (tr.scope, tr.value) == ("account:A", 3.0)


def test_reject_rate(engine_for: Make) -> None:
    e = engine_for(rule("reject_rate", scope="firm", window_ms=1000, max=1, action="reduce_only"))
    tr = only(run(e, [new("a", 0), reject("a", MS), new("b", 2 * MS), reject("b", 3 * MS)]))
    assert (tr.scope, tr.to, tr.value) == ("firm", "REDUCE_ONLY", 2.0)


def test_cancel_ratio_waits_for_min_orders(engine_for: Make) -> None:
    e = engine_for(rule("cancel_ratio", window_ms=1000, max=0.5, min_orders=3))
    assert run(e, [new("a", 0), cancel("a", MS), new("b", 2 * MS), cancel("b", 3 * MS)]) == []
    tr = only(run(e, [new("c", 4 * MS), cancel("c", 5 * MS)]))
    assert tr.value == pytest.approx(2 / 3)  # breached on new c: 2 cancels / 3 orders
    assert tr.ts == T0 + 4 * MS


def test_fill_notional_rate(engine_for: Make) -> None:
    e = engine_for(rule("fill_notional_rate", scope="symbol", window_ms=1000, max=1500))
    assert run(e, [fill("a", 0, qty=10, price=100)]) == []
    tr = only(run(e, [fill("b", MS, qty=6, price=100)]))
    assert (tr.scope, tr.value) == ("symbol:X", 1600.0)


def test_fat_finger_qty_and_notional(engine_for: Make) -> None:
    e = engine_for(
        rule("order_qty", scope="account", max=1000),
        rule("order_notional", scope="strategy", max=50_000, action="reduce_only"),
    )
    assert run(e, [new("a", 0, qty=400, price=100)]) == []
    out = run(e, [new("b", MS, qty=600, price=100), replace("a", 2 * MS, qty=1001, price=1)])
    assert [(t.rule, t.scope, t.value) for t in out] == [
        ("order_notional-rule", "strategy:S", 60_000.0),
        ("order_qty-rule", "account:A", 1001.0),
    ]


def test_market_order_notional_uses_reference_price(engine_for: Make) -> None:
    e = engine_for(rule("order_notional", max=999))
    assert run(e, [new("a", 0, qty=10, price=None)]) == []  # no price known yet: not evaluated
    tr = only(run(e, [mark(100.0, MS), new("b", 2 * MS, qty=10, price=None)]))
    assert tr.value == 1000.0


def test_price_collar(engine_for: Make) -> None:
    e = engine_for(rule("price_deviation", scope="symbol", max=0.05, action="alert"))
    assert run(e, [mark(100.0), new("a", MS, price=104.0)]) == []
    tr = only(run(e, [new("b", 2 * MS, price=94.0)]))
    assert tr.kind == "alert" and tr.value == pytest.approx(0.06)
    assert e.killswitch.state("symbol:X") == "ACTIVE"  # alerts never change state


def test_position_qty_per_account_across_strategies(engine_for: Make) -> None:
    e = engine_for(rule("position_qty", scope="account", max=100, action="reduce_only"))
    assert run(e, [fill("a", 0, qty=60), fill("b", MS, qty=40, strategy="S2")]) == []
    tr = only(run(e, [fill("c", 2 * MS, qty=1, strategy="S2")]))
    assert (tr.scope, tr.value) == ("account:A", 101.0)
    assert e.position("account:A", "X") == 101.0
    assert e.position("strategy:S", "X") == 60.0


def test_position_flip_realises_pnl_at_average_cost(engine_for: Make) -> None:
    e = engine_for(rule("pnl", scope="account", min=-1e9))
    run(
        e,
        [
            fill("a", 0, qty=10, price=100),
            fill("b", MS, qty=10, price=110),
            fill("c", 2 * MS, qty=30, price=120, side="sell"),
        ],
    )
    # avg cost 105; closing 20 at 120 realises 300; 10 short opened at 120
    assert e.position("firm", "X") == -10.0
    e.tick(T0 + 200 * MS)  # the next revaluation epoch values the position at 120
    values = e.scope_values("account:A")
    assert values["realised_pnl"] == pytest.approx(300.0)
    assert values["pnl"] == pytest.approx(300.0)  # reference price = last fill (120), flat P&L


def test_gross_and_net_notional_move_with_marks(engine_for: Make) -> None:
    e = engine_for(
        rule("gross_notional", scope="account", max=2500),
        rule("net_notional", scope="firm", max=1e9, min=-1e9, action="alert"),
    )
    k2 = {"symbol": "Y"}
    run(
        e,
        [
            mark(100.0, 0),
            mark(50.0, 0, symbol="Y"),
            fill("a", MS, qty=10, price=100),
            fill("b", 2 * MS, qty=20, price=50, side="sell", **k2),
        ],
    )
    assert e.scope_values("account:A")["gross_notional"] == 2000.0
    assert e.scope_values("firm")["net_notional"] == 0.0
    # a mark alone pushes a holder over its limit (the epoch's first move: at once)
    tr = only(run(e, [mark(160.0, 100 * MS)]))
    assert (tr.scope, tr.rule, tr.value, tr.ts) == (
        "account:A",
        "gross_notional-rule",
        2600.0,
        T0 + 100 * MS,
    )


def test_stale_mark_is_ignored(engine_for: Make) -> None:
    e = engine_for(rule("pnl", scope="firm", min=-1e9))
    run(e, [mark(100.0, 10 * MS), fill("a", 11 * MS, qty=1, price=100), mark(50.0, 5 * MS)])
    assert e.scope_values("firm")["net_notional"] == 100.0


def test_pnl_floor_and_drawdown(engine_for: Make) -> None:
    e = engine_for(
        rule("pnl", scope="account", min=-500),
        rule("drawdown", scope="firm", max=300, action="alert"),
    )
    run(e, [mark(100.0), fill("a", MS, qty=100, price=100)])
    assert run(e, [mark(104.0, 100 * MS)]) == []  # pnl +400, the peak
    tr = only(run(e, [mark(100.5, 200 * MS)]))  # drawdown 350 from the peak
    assert (tr.rule, tr.kind, tr.value) == ("drawdown-rule", "alert", pytest.approx(350.0))
    halt = only(run(e, [mark(94.9, 300 * MS)]))
    assert (halt.rule, halt.scope, halt.value) == ("pnl-rule", "account:A", pytest.approx(-510.0))


def test_open_orders(engine_for: Make) -> None:
    e = engine_for(rule("open_orders", scope="symbol", max=2))
    run(e, [new("a", 0), new("b", 0), cancel("a", MS), new("c", 2 * MS)])
    assert e.scope_values("symbol:X")["open_orders"] == 2.0
    run(e, [fill("b", 3 * MS, qty=4), reject("c", 4 * MS)])
    assert e.scope_values("symbol:X")["open_orders"] == 1.0  # b partially filled, still open
    tr = only(run(e, [new("d", 5 * MS), new("e", 5 * MS)]))
    assert tr.value == 3.0


def test_parent_overfill_is_knights_failure(engine_for: Make) -> None:
    e = engine_for(rule("parent_overfill_ratio", max=1.0, match={"strategy": "smars"}))
    smars = {"strategy": "smars"}
    events: list[Event] = [parent("P1", qty=100, **smars)]
    for i in range(10):
        events += [
            new(f"c{i}", i * MS, qty=10, parent_id="P1", **smars),
            fill(f"c{i}", i * MS + 1, qty=10, **smars),
        ]
    assert run(e, events) == []  # exactly filled: ratio 1.0, not above
    # child fill with no live order: parent_id on the fill still ties it to the parent
    tr = only(run(e, [fill("late", 20 * MS, qty=1, parent_id="P1", **smars)]))
    assert (tr.scope, tr.value) == ("strategy:smars", pytest.approx(1.01))
    other = engine_for(rule("parent_overfill_ratio", max=1.0, match={"strategy": "smars"}))
    assert run(other, [parent("P", qty=1), fill("x", 0, qty=5, parent_id="P")]) == []


def test_duplicate_orders(engine_for: Make) -> None:
    e = engine_for(rule("duplicate_orders", window_ms=1000, max=1, action="alert"))
    assert run(e, [new("a", 0), new("b", MS, qty=11), new("c", 2 * MS)]) == []  # one duplicate
    tr = only(run(e, [new("d", 3 * MS)]))
    assert tr.value == 2.0


def test_feed_silence_from_events_and_from_the_clock(engine_for: Make) -> None:
    e = engine_for(rule("feed_silence_ms", scope="firm", max=500, match={"source": "router"}))
    assert run(e, [heartbeat("router", 0), heartbeat("router", 400 * MS)]) == []
    assert e.tick(T0 + 800 * MS) == []  # 400 ms since the last heartbeat
    tr = only(e.tick(T0 + 901 * MS))
    assert (tr.scope, tr.to, tr.value) == ("firm", "HALTED", pytest.approx(501.0))
    # a source that never spoke is silent since the engine started
    e2 = engine_for(rule("feed_silence_ms", scope="firm", max=500, match={"source": "ghost"}))
    assert len(run(e2, [heartbeat("router", 0), heartbeat("router", 600 * MS)])) == 1


def test_feed_silence_any_event(engine_for: Make) -> None:
    e = engine_for(rule("feed_silence_ms", scope="firm", max=100))
    assert run(e, [new("a", 0), mark(1.0, 90 * MS)]) == []
    assert len(run(e, [new("b", 200 * MS)])) == 1


def test_alerts_fire_on_the_edge_and_rearm(engine_for: Make) -> None:
    e = engine_for(rule("order_qty", action="alert", max=10))
    out = run(
        e, [new("a", 0, qty=11), new("b", 0, qty=12), new("c", 0, qty=5), new("d", 0, qty=13)]
    )
    alerts = [t for t in out if t.kind == "alert"]
    assert [t.value for t in alerts] == [11.0, 13.0]  # once per excursion above the limit
    # the order of 5 re-arms it (rearm 0: as soon as a value is within): the first alert
    # is resolved, so a pager closes it
    resolves = [t for t in out if t.kind == "resolve"]
    assert [(t.value, t.ends) for t in resolves] == [(5.0, alerts[0].id)]


def test_a_band_alert_resolves_against_the_bound_it_crossed(engine_for: Make) -> None:
    # net_notional band [-1,000, 1,000]: a sale of 11 @100 leaves it below the lower bound
    e = engine_for(rule("net_notional", action="alert", min=-1000, max=1000))
    out = run(e, [fill("s", 0, qty=11, side="sell"), fill("b", MS, qty=2)])
    alert, resolve = out
    assert (alert.kind, alert.value, alert.limit) == ("alert", -1100.0, -1000.0)
    # back to -900, inside: the resolve names the lower bound, not the upper one
    assert (resolve.kind, resolve.value, resolve.limit) == ("resolve", -900.0, -1000.0)
    assert resolve.ends == alert.id
    # above the upper bound and back: the upper one
    out = run(e, [fill("c", 2 * MS, qty=21), fill("d", 3 * MS, qty=5, side="sell")])
    assert [(t.kind, t.value, t.limit) for t in out] == [
        ("alert", 1200.0, 1000.0),
        ("resolve", 700.0, 1000.0),
    ]


def test_escalation_only_goes_up(engine_for: Make) -> None:
    e = engine_for(
        rule("order_qty", action="reduce_only", max=10),
        rule("order_notional", action="halt", max=5000),
    )
    out = run(
        e,
        [
            new("a", 0, qty=11, price=1),
            new("b", 0, qty=20, price=1000),
            new("c", 0, qty=11, price=1),
        ],
    )
    assert [(t.from_, t.to) for t in out] == [("ACTIVE", "REDUCE_ONLY"), ("REDUCE_ONLY", "HALTED")]


def test_match_limits_a_rule_to_named_keys(engine_for: Make) -> None:
    e = engine_for(
        rule("order_qty", max=10, match={"strategy": "S2"}),
        rule("order_notional", scope="strategy", max=10, match={"account": "B"}),
    )
    assert run(e, [new("a", 0, qty=50, price=1)]) == []  # S in account A: neither rule applies
    out = run(
        e,
        [
            new("b", 0, qty=50, price=1, strategy="S2"),
            new("c", 0, qty=50, price=1, strategy="SB", account="B"),
        ],
    )
    assert [(t.rule, t.scope) for t in out] == [
        ("order_qty-rule", "strategy:S2"),
        ("order_notional-rule", "strategy:SB"),
    ]


def test_a_strategy_may_trade_in_a_second_account(engine_for: Make) -> None:
    """Issue 10 (case 14): a strategy under a second account is applied, not rejected."""
    e = engine_for(rule("open_orders", max=10))
    result = e.apply([new("a", 0), new("b", 0, account="OTHER"), new("c", 0)])
    assert result.applied == 3 and result.bad == []
    assert e.scope_values("strategy:S")["open_orders"] == 3.0  # across both accounts
    assert e.scope_values("account:OTHER")["open_orders"] == 1.0


def test_capacity_grows_with_new_keys(engine_for: Make) -> None:
    e = engine_for(rule("position_qty", scope="account", max=1e9))
    events: list[Event] = [
        fill(f"o{i}", i, qty=1, account=f"A{i}", strategy=f"S{i}", symbol=f"Y{i % 700}")
        for i in range(5000)
    ]
    run(e, events)
    assert len(e.positions()) == 5000 * 2 + 700  # account + strategy pairs, plus firm per symbol
    assert e.position("account:A4999", "Y99") == 1.0
    assert e.scope_values("firm")["open_orders"] == 0.0


@pytest.mark.parametrize("how", ["at-once", "queued-event", "queued-tick"])
def test_one_mark_breaching_thousands_of_holders_loses_nothing(engine_for: Make, how: str) -> None:
    """More output than the buffer holds: the kernel pauses, drains and resumes.

    Whether the mark revalues at once (first move of its epoch) or waits for the
    next epoch, entered by an event or by a clock tick.
    """
    e = engine_for(
        rule("gross_notional", scope="account", max=150, action="alert"),
        rule("gross_notional", scope="strategy", max=150).replace("gross_notional-rule", "g2"),
    )
    run(
        e,
        [mark(100.0)]
        + [fill(f"o{i}", 1, qty=1, account=f"A{i}", strategy=f"S{i}") for i in range(3000)],
    )
    if how == "at-once":
        out = run(e, [mark(200.0, 100 * MS)])
    else:
        assert run(e, [mark(200.0, MS)]) == []
        out = (
            run(e, [heartbeat("hb", 100 * MS)]) if how == "queued-event" else e.tick(T0 + 100 * MS)
        )
    assert len(out) == 6000
    assert {t.scope for t in out if t.kind == "alert"} == {f"account:A{i}" for i in range(3000)}
    assert all(e.killswitch.state(f"strategy:S{i}") == "HALTED" for i in range(3000))


def test_order_ids_are_recycled_without_mixing_state() -> None:
    """Closed orders are remembered for the redelivery horizon, then their ids reused."""
    from riskguard.limits import parse  # noqa: PLC0415
    from riskguard.settings import EngineSettings  # noqa: PLC0415

    limits = parse("version = 1\n[[rule]]\n" + rule("open_orders", scope="firm", max=1e9))
    e = Engine(limits, event_time=True, settings=EngineSettings(dedupe_horizon_s=0.0005))
    for round_ in range(5):
        run(e, [new(f"r{round_}-{i}", round_ * MS) for i in range(100)])
        run(e, [cancel(f"r{round_}-{i}", round_ * MS + 1) for i in range(100)])
    # each round's ids are free once the next round is past the 0.5 ms horizon
    assert e.keys.n_orders == 200  # reused, not grown to 500
    run(e, [new("x", 10 * MS), fill("x", 10 * MS, qty=4), cancel("r0-1", 11 * MS)])
    assert e.scope_values("firm")["open_orders"] == 1.0


def test_reload_keeps_unchanged_windows_and_latched_states(engine_for: Make) -> None:
    from riskguard.limits import parse  # noqa: PLC0415

    e = engine_for(rule("order_rate", window_ms=1000, max=5), rule("order_qty", max=10))
    assert run(e, [new(f"a{i}", i * MS) for i in range(4)] + [new("big", 5 * MS, qty=50)])
    assert e.killswitch.state("strategy:S") == "HALTED"
    e.killswitch.resume("strategy:S", "ops", "limits being raised")
    body = rule("order_rate", window_ms=1000, max=6).replace("order_rate-rule", "rate2")
    e.replace_limits(parse("version = 1\n[[rule]]\n" + body))
    (tr,) = run(e, [new("b", 10 * MS), new("c", 11 * MS)])  # 5 earlier orders still counted
    assert (tr.rule, tr.value) == ("rate2", 7.0)


def test_consumer_lag_live_only(engine_for: Make) -> None:
    e = engine_for(rule("consumer_lag_ms", scope="firm", max=500))
    assert e.apply([new("a", 0)], wall_ns=T0 + 400 * MS).transitions == []  # 400 ms behind
    (tr,) = e.apply([new("b", 10 * MS)], wall_ns=T0 + 611 * MS).transitions  # 601 ms behind
    assert (tr.scope, tr.to, tr.value) == ("firm", "HALTED", pytest.approx(601.0))
    assert e.tick(T0 + 10**12) == []  # the clock alone never measures lag
    replay = engine_for(rule("consumer_lag_ms", scope="firm", max=1))
    assert replay.apply([new("a", 0)]).transitions == []  # no wall time: not evaluated
