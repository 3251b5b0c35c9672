"""Group mode without a broker: which limits it refuses, its settings, and a partition
gained with no checkpoint (a fresh engine, standing states latched in it, read from its
start: one engine's state). Checkpoints and the engines' sums: tests/test_partitions.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.aggregate.contributions import window_totals
from riskguard.engine import Engine
from riskguard.ingest.connect import StartError, make_state_folders
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import LimitsError, load, parse
from riskguard.limits.scale import check_group_limits
from riskguard.settings import SettingsError, load_settings
from riskguard.testing import FakeClock
from tests.builders import T0, batches, rules_toml

ACCOUNT_RULES = rules_toml(
    'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
    'max = 5\naction = "halt"',
    'name = "acct-pos"\nmetric = "position_qty"\nscope = "account"\nmax = 50\naction = "halt"',
    'name = "fat-finger"\nmetric = "order_qty"\nscope = "firm"\nmax = 1000\naction = "halt"',
)


def test_group_mode_refuses_rules_over_several_partitions_that_are_not_sums() -> None:
    check_group_limits(parse(ACCOUNT_RULES))  # account scope, and per-order at firm scope
    text = ACCOUNT_RULES + (
        '\n[[rule]]\nname = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\n'
        'window_ms = 1000\nmax = 100\naction = "halt"\n'
        '\n[[rule]]\nname = "desk-drawdown"\nmetric = "drawdown"\nscope = "strategy"\n'
        'max = 5\naction = "halt"\n'
        '\n[[rule]]\nname = "sym-pos"\nmetric = "position_qty"\nscope = "symbol"\n'
        'max = 5\naction = "halt"\n'
    )
    with pytest.raises(LimitsError) as err:
        check_group_limits(parse(text, "limits.toml"))
    assert err.value.source == "limits.toml"
    assert len(err.value.problems) == 2  # the firm order rate is summed
    assert "'desk-drawdown': drawdown at scope 'strategy' spans input partitions" in str(err.value)
    assert "'sym-pos'" in str(err.value)


def test_a_sidecar_in_group_mode_refuses_them_at_start(tmp_path: object) -> None:
    limits = parse(
        rules_toml(
            'name = "venue-dups"\nmetric = "duplicate_orders"\nscope = "venue"\n'
            'window_ms = 1000\nmax = 100\naction = "halt"'
        )
    )
    grouped = load_settings(env={}, overrides={"scale.mode": "group"})
    with pytest.raises(LimitsError, match="'venue-dups'"):
        Sidecar(grouped, limits)
    assert Sidecar(load_settings(env={}), limits).group is None  # single mode: as before


def test_scale_settings_are_checked() -> None:
    assert load_settings(env={}).scale.mode == "single"
    assert load_settings(env={"RISKGUARD_SCALE_MODE": "group"}).scale.group
    with pytest.raises(SettingsError, match="heartbeat_interval_ms"):
        load_settings(
            env={},
            overrides={"scale.session_timeout_ms": 6000, "scale.heartbeat_interval_ms": 2500},
        )
    with pytest.raises(SettingsError, match="mode"):
        load_settings(env={}, overrides={"scale.mode": "sharded"})


def stream(seed: int, n: int) -> list[wire.Event]:
    """Orders and fills over four accounts and two symbols, 1 ms apart."""
    rng = random.Random(seed)
    out: list[wire.Event] = []
    for k in range(n):
        keys = {"account": f"a{rng.randrange(4)}", "strategy": "s", "symbol": rng.choice("XY")}
        side = rng.choice(("buy", "sell"))
        qty = float(rng.randrange(1, 9))
        t = T0 + k * 1_000_000
        out.append(wire.NewOrder(ts=t, order_id=f"o{k}", side=side, qty=qty, price=10.0, **keys))
        if rng.random() < 0.7:
            out.append(
                wire.Fill(
                    ts=t + 1,
                    order_id=f"o{k}",
                    side=side,
                    qty=qty,
                    price=10.0,
                    exec_id=f"x{k}",
                    **keys,
                )
            )
    return out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), cut=st.floats(0, 1))
def test_a_partition_gained_without_a_checkpoint_read_from_its_start_equals_one_engine(
    seed: int, n: int, cut: float
) -> None:
    """A rebalance part-way takes the partition away and gives it back with no
    checkpoint: its new engine is empty, every standing state is latched in it at once,
    and reading the partition from its start (judged up to the member's clock) gives
    exactly one engine's state, each decision made once."""
    limits = parse(ACCOUNT_RULES)
    events = stream(seed, n)
    tp = TopicPartition("in", 0)
    parts = PartitionEngines(Engine(limits, clock=FakeClock(T0), warm=False))
    parts.add(tp, parts.fresh())
    read = batches(events, 1, seed)
    got = []
    for batch, where in read[: int(cut * len(read))]:
        got += parts.apply(batch, where).transitions
    halted = parts.killswitch.halt("account:zz", "ops", "test")
    assert halted is not None
    parts.drop(tp)  # lost...
    engine = parts.fresh()
    parts.add(tp, engine)  # ...and gained again: no checkpoint usable
    assert engine.events_applied == 0 == parts.events_applied
    assert not any(q for q, _c, _r in engine.positions().values())
    sid = engine.keys.find_scope("account:zz")
    assert sid is not None and int(engine.store.state.scopes["state"][sid]) == 2  # HALTED
    assert parts.killswitch.state("account:zz") == "HALTED"
    assert parts.killswitch.standing()["account:zz"] == halted
    engine.judge_until(max(parts.last_event_ns, parts.judged_ns))
    engine.count_at_own_time(True)
    for batch, where in read:
        got += parts.apply(batch, where).transitions
    reference = Engine(limits, clock=FakeClock(T0), warm=False)
    want = reference.apply(events).transitions
    assert sorted(t.id for t in got) == sorted(t.id for t in want)  # each decided once
    assert engine.positions() == reference.positions() == parts.positions()
    assert engine.events_applied == reference.events_applied == len(events)
    for account in ("account:a0", "account:a1", "account:a2", "account:a3"):
        assert engine.scope_values(account) == reference.scope_values(account)


def test_history_read_behind_another_partition_counts_at_its_own_time_while_restoring() -> None:
    """A rebuild reads partitions at different speeds: one account's morning arrives after
    another partition's afternoon. Counted 'as now' (the live lateness rule) it fills the
    current window, and the first live order breaches; counted at its own time (what
    group mode does until restored) the window holds what it would in time order."""
    limits = parse(
        rules_toml(
            'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
            'max = 5\naction = "halt"'
        )
    )
    morning = [
        wire.NewOrder(ts=T0 + i * 50_000_000, order_id=f"m{i}", account="A1", strategy="S",
                      symbol="X", side="buy", qty=1.0, price=1.0)
        for i in range(10)
    ]  # fmt: skip
    afternoon = [
        wire.NewOrder(ts=T0 + 5_000_000_000 + i, order_id=f"a{i}", account="A2", strategy="S",
                      symbol="X", side="buy", qty=1.0, price=1.0)
        for i in range(3)
    ]  # fmt: skip
    now = T0 + 5_100_000_000

    def a1_window(engine: Engine) -> float:
        slot = int(engine.store.state.scopes["slot"][engine.keys.find_scope("account:A1")])
        counter = int(engine.rulebook.rules.rows["counter"][0])
        return float(window_totals(engine, counter, now)[slot])

    in_order = Engine(limits, event_time=True, warm=False)
    in_order.apply(sorted(morning + afternoon, key=lambda e: e.ts))
    as_now = Engine(limits, event_time=True, warm=False)
    as_now.apply(afternoon + morning)  # the live rule: the morning counts as now
    restoring = Engine(limits, event_time=True, warm=False)
    restoring.count_at_own_time(True)
    restoring.apply(afternoon + morning)
    restoring.count_at_own_time(False)
    assert a1_window(in_order) == 0.0  # the morning left the window long ago
    assert a1_window(as_now) == 10.0  # the fault
    assert a1_window(restoring) == a1_window(in_order)
    assert restoring.rulebook.rules.lateness_ns == in_order.rulebook.rules.lateness_ns


def test_counting_at_own_time_survives_a_limits_reload() -> None:
    """A limits reload while restoring (or catching up at start) keeps history counted at
    its own time; turned off, the live lateness bound is back, also after a reload."""
    limits = parse(
        rules_toml(
            'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
            'max = 5\naction = "halt"'
        )
    )
    engine = Engine(limits, event_time=True, warm=False)
    live = engine.rulebook.rules.lateness_ns
    engine.count_at_own_time(True)
    engine.replace_limits(limits)
    assert engine.rulebook.rules.lateness_ns > 10**18, "still history after the reload"
    engine.count_at_own_time(False)
    engine.replace_limits(limits)
    assert engine.rulebook.rules.lateness_ns == live == engine.settings.lateness_ns


def test_a_checkpoint_folder_that_cannot_be_made_is_refused_at_start(tmp_path: Path) -> None:
    """A member that cannot write scale.checkpoint_dir (a shared volume mounted read-only,
    a path under a file) is refused in one line at start, before it joins the group: it
    joined, took partitions from a healthy member, crashed at its first checkpoint and
    left their accounts judged by nobody until the session timeout."""
    (tmp_path / "a-file").write_text("")
    settings = load_settings(
        env={
            "RISKGUARD_SCALE_MODE": "group",
            "RISKGUARD_STATE_DIR": str(tmp_path / "state"),
            "RISKGUARD_SCALE_CHECKPOINT_DIR": str(tmp_path / "a-file" / "cp"),
        }
    )
    with pytest.raises(StartError, match=r"cannot create .*a-file/cp for scale\.checkpoint_dir"):
        make_state_folders(settings)
    single = load_settings(env={"RISKGUARD_STATE_DIR": str(tmp_path / "state")})
    make_state_folders(single)  # single mode does not need it
    assert not (tmp_path / "state" / "partitions").exists()


def test_the_group_example_limits_are_the_example_cut_to_what_group_mode_judges() -> None:
    """rules/example-group.toml is accepted in group mode, and keeps every rule of the
    example that group mode can judge as it is (the others re-scoped to accounts or left
    out, as its header says)."""
    root = Path(__file__).resolve().parents[1] / "rules"
    group = load(str(root / "example-group.toml"))
    check_group_limits(group)
    full = {r.name: r for r in load(str(root / "example.toml")).rules}
    kept = {r.name: r for r in group.rules}
    assert set(full) - set(kept) == {"router-silent", "riskguard-behind", "firm-drawdown"}
    assert set(kept) - set(full) == {"account-drawdown"}
    for name in ("parent-overfill", "duplicate-orders", "account-drawdown"):
        assert kept[name].scope == "account"
    same = set(kept) - {"parent-overfill", "duplicate-orders", "account-drawdown"}
    assert all(kept[n] == full[n] for n in same)
