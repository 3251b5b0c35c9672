"""The numba kernel and the plain-Python reference agree on random event streams.

Streams mix every event type over a few keys so that orders are replaced,
cancelled, rejected and overfilled, positions flip, marks arrive out of order,
order ids are reused after they close, strategies trade in several accounts,
fills carry fees and are corrected or busted, prices go negative, events are
redelivered, late or stamped far ahead, and operators resume halted scopes. Since wire
schema v1.2 they also carry reference data (contract sizes, symbols priced in other
currencies, exchange rates that arrive late and move, and copies of earlier rates and
instruments delivered again, often after newer ones), opening and broker positions,
venues, and rules with warning levels, re-arming, side and venue filters, a venue
scope and a restricted list. Each stream is cut into random batches, which must not
change the result either.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine, Result
from riskguard.killswitch import Transition
from riskguard.limits import Limits, parse
from riskguard.settings import EngineSettings
from riskguard.state.codes import OWN_TIME_NS
from riskguard.state.reference import ReferenceModel
from riskguard.testing import capture_transitions
from riskguard.vocabulary import money
from tests.builders import MS, T0, rules_toml

ACCOUNTS = ["A0", "A1", "A2"]
STRATEGIES = {"S0": "A0", "S1": "A0", "S2": "A1", "S3": "A2"}
SYMBOLS = ["X0", "X1", "X2"]
VENUES = [None, None, "XNAS", "ARCX"]
PRICES = [9.5, 10.0, 10.5, 11.0, 12.25, -2.5, 0.0]
QTYS = [1.0, 5.0, 10.0, 20.0, 45.0, 0.1, 0.3]
#: small bounds, so that skewed and late events happen within a short stream
SETTINGS = EngineSettings(max_clock_skew_ms=50, max_lateness_ms=20)

RULES = [
    "\n".join(
        [
            'name="rate"',
            'metric="order_rate"',
            'scope="strategy"',
            "window_ms=50",
            "max=3",
            'action="reduce_only"',
        ]
    ),
    "\n".join(
        [
            'name="msgs"',
            'metric="message_rate"',
            'scope="account"',
            "window_ms=20",
            "max=4",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="rej"',
            'metric="reject_rate"',
            'scope="firm"',
            "window_ms=100",
            "max=3",
            'action="halt"',
        ]
    ),
    "\n".join(
        [
            'name="cxl"',
            'metric="cancel_ratio"',
            'scope="account"',
            "window_ms=100",
            "max=0.5",
            "min_orders=2",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="filln"',
            'metric="fill_notional_rate"',
            'scope="symbol"',
            "window_ms=30",
            "max=900",
            'action="halt"',
        ]
    ),
    "\n".join(
        [
            'name="qty"',
            'metric="order_qty"',
            'scope="strategy"',
            'match={strategy=["S0","S2"]}',
            "max=40",
            'action="halt"',
        ]
    ),
    "\n".join(
        [
            'name="notional"',
            'metric="order_notional"',
            'scope="account"',
            "max=450",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="collar"',
            'metric="price_deviation"',
            'scope="symbol"',
            "max=0.1",
            'action="reduce_only"',
        ]
    ),
    "\n".join(
        [
            'name="pos"',
            'metric="position_qty"',
            'scope="account"',
            "max=60",
            'action="reduce_only"',
        ]
    ),
    "\n".join(
        [
            'name="pos-firm"',
            'metric="position_qty"',
            'scope="firm"',
            "max=90",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="gross"',
            'metric="gross_notional"',
            'scope="strategy"',
            'match={account="A0"}',
            "max=700",
            'action="halt"',
        ]
    ),
    "\n".join(
        [
            'name="net"',
            'metric="net_notional"',
            'scope="symbol"',
            "max=500",
            "min=-500",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="pnl"',
            'metric="pnl"',
            'scope="account"',
            "min=-30",
            'action="halt"',
        ]
    ),
    "\n".join(
        [
            'name="dd"',
            'metric="drawdown"',
            'scope="firm"',
            "max=40",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="open"',
            'metric="open_orders"',
            'scope="symbol"',
            "max=2",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="overfill"',
            'metric="parent_overfill_ratio"',
            'scope="strategy"',
            "max=1.0",
            'action="halt"',
        ]
    ),
    "\n".join(
        [
            'name="dups"',
            'metric="duplicate_orders"',
            'scope="strategy"',
            "window_ms=40",
            "max=0",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="warned-gross"',
            'metric="gross_notional"',
            'scope="account"',
            "max=2000",
            "warn_at=[0.25, 0.5, 0.75]",
            'action="halt"',
        ]
    ),
    "\n".join(
        [
            'name="potential"',
            'metric="potential_gross_notional"',
            'scope="strategy"',
            "max=900",
            "warn_at=[0.5]",
            "rearm=0.1",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="working"',
            'metric="open_order_notional"',
            'scope="firm"',
            "max=600",
            "rearm=0.05",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="break"',
            'metric="position_break_qty"',
            'scope="account"',
            "max=5",
            "warn_at=[0.5]",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="fills"',
            'metric="fill_count"',
            'scope="venue"',
            "window_ms=30",
            "max=3",
            'action="halt"',
        ]
    ),
    "\n".join(
        [
            'name="buys"',
            'metric="order_rate"',
            'scope="account"',
            'match={side="buy", venue=["XNAS","ARCX"]}',
            "window_ms=40",
            "max=2",
            "warn_at=[0.5]",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="venue-open"',
            'metric="open_orders"',
            'scope="venue"',
            'match={venue="XNAS"}',
            "max=2",
            'action="reduce_only"',
        ]
    ),
    "\n".join(
        [
            'name="silence"',
            'metric="feed_silence_ms"',
            'scope="firm"',
            'match={source=["hb1","hb2"]}',
            "max=30",
            'action="alert"',
        ]
    ),
    "\n".join(
        [
            'name="quiet"',
            'metric="feed_silence_ms"',
            'scope="firm"',
            "max=25",
            'action="halt"',
        ]
    ),
]
RESTRICTED = """
[[restricted]]
symbols = ["X2"]
reason = "pending news"
accounts = ["A1"]

[[restricted]]
name = "watch"
symbols = ["X1", "X2"]
strategies = ["S3"]
reason = "compliance watch"
action = "alert"
"""
LIMITS = parse(rules_toml(*RULES) + RESTRICTED)
# Revaluation epochs: the default, every price move at once, and a short one that
# queues and flushes often within a stream.
LIMITS_BY_REVALUE = {
    100: LIMITS,
    0: parse(rules_toml(*RULES).replace("version = 1", "version = 1\nrevalue_ms = 0") + RESTRICTED),
    7: parse(rules_toml(*RULES).replace("version = 1", "version = 1\nrevalue_ms = 7") + RESTRICTED),
}


@st.composite
def streams(draw: Any) -> tuple[list[wire.Event | tuple[str, str]], list[int]]:
    n = draw(st.integers(1, 126))  # 120 and one kind in 21 more, for the reference data copies
    t = 0
    out: list[wire.Event | tuple[str, str]] = []
    fills: list[wire.Fill] = []
    for _ in range(n):
        t += draw(st.sampled_from([0, 1, 2, 5, 10, 40])) * MS
        shift = draw(st.sampled_from([0, 0, 0, 0, -3 * MS, -60 * MS, 200 * MS, 3_600_000 * MS]))
        ts = max(0, T0 + t + shift)
        kind = draw(
            st.sampled_from(
                [
                    "new",
                    "new",
                    "new",
                    "fill",
                    "fill",
                    "fill",
                    "amend",
                    "cancel",
                    "replace",
                    "reject",
                    "mark",
                    "mark",
                    "parent",
                    "heartbeat",
                    "resume",
                    "tick",
                    "again",
                    "refdata again",
                    "instrument",
                    "fx",
                    "open",
                    "broker",
                ]
            )
        )
        strategy = draw(st.sampled_from(sorted(STRATEGIES)))
        account = STRATEGIES[strategy]
        if draw(st.integers(0, 10)) == 0:
            account = draw(st.sampled_from(ACCOUNTS))  # a strategy in a second account
        keys = {"account": account, "strategy": strategy, "symbol": draw(st.sampled_from(SYMBOLS))}
        oid = f"o{draw(st.integers(0, 7))}"
        side = draw(st.sampled_from(["buy", "sell"]))
        qty = draw(st.sampled_from(QTYS))
        price = draw(st.sampled_from(PRICES))
        pid = draw(st.sampled_from([None, "P0", "P1"]))
        ev: wire.Event | tuple[str, str]
        refdata = [x for x in out if isinstance(x, wire.Fx | wire.Instrument)]
        if kind == "again" and out:  # a redelivery of an earlier event, as it was
            ev = draw(st.sampled_from(out))
        elif kind == "refdata again" and refdata:  # a copy of a rate or instrument, often late
            ev = draw(st.sampled_from(refdata))
        elif kind in {"new", "again"}:
            ev = wire.NewOrder(
                ts=ts,
                order_id=oid,
                side=side,
                qty=qty,
                price=draw(st.sampled_from([price, price, None])),
                parent_id=pid,
                venue=draw(st.sampled_from(VENUES)),
                **keys,
            )
        elif kind == "fill" or (kind == "amend" and not fills):
            ev = wire.Fill(
                ts=ts,
                order_id=oid,
                exec_id=f"e{len(out)}",
                side=side,
                qty=qty,
                price=price,
                parent_id=draw(st.sampled_from([None, None, pid])),
                fee=draw(st.sampled_from([None, None, 0.5, -0.25])),
                venue=draw(st.sampled_from(VENUES)),
                **keys,
            )
            fills.append(ev)
        elif kind == "amend":
            orig = draw(st.sampled_from(fills))
            bust = draw(st.booleans())
            ev = wire.Fill(
                ts=ts,
                order_id=orig.order_id,
                exec_id=f"e{len(out)}",
                account=orig.account,
                strategy=orig.strategy,
                symbol=orig.symbol,
                exec_type="bust" if bust else "correct",
                ref_exec_id=draw(st.sampled_from([orig.exec_id, orig.exec_id, "nope"])),
                side=None if bust else orig.side,
                qty=None if bust else qty,
                price=None if bust else price,
                fee=None if bust else draw(st.sampled_from([None, 1.0])),
            )
        elif kind == "cancel":  # v1.3: some the venue's own (an IOC remainder, an expiry)
            ev = wire.CancelOrder(ts=ts, order_id=oid, unsolicited=draw(st.booleans()), **keys)
        elif kind == "reject":
            ev = wire.RejectOrder(ts=ts, order_id=oid, **keys)
        elif kind == "replace":
            ev = wire.ReplaceOrder(
                ts=ts,
                order_id=oid,
                side=side,
                qty=qty,
                price=price,
                unsolicited=draw(st.booleans()),
                **keys,
            )
        elif kind == "mark":
            ev = wire.Mark(ts=ts, symbol=keys["symbol"], price=price)
        elif kind == "parent":
            ev = wire.ParentOrder(ts=ts, parent_id=pid or "P0", side=side, qty=qty, **keys)
        elif kind == "heartbeat":
            ev = wire.Heartbeat(ts=ts, source=draw(st.sampled_from(["hb1", "hb2"])))
        elif kind == "instrument":  # before or after the symbol trades (then refused)
            ev = wire.Instrument(
                ts=ts,
                symbol=keys["symbol"],
                multiplier=draw(st.sampled_from([1.0, 50.0, 0.5])),
                currency=draw(st.sampled_from([None, "EUR", "JPY", "USD"])),
            )
        elif kind in {"fx", "refdata again"}:
            ev = wire.Fx(
                ts=ts,
                currency=draw(st.sampled_from(["EUR", "EUR", "JPY", "USD"])),
                rate=draw(st.sampled_from([1.1, 1.25, 0.0067, 1.0])),
            )
        elif kind in {"open", "broker"}:
            ev = wire.Position(
                ts=ts,
                account=account,
                strategy=draw(st.sampled_from([None, strategy])),
                symbol=keys["symbol"],
                qty=draw(st.sampled_from([0.0, 10.0, -5.0, 0.3])),
                kind=kind,
                price=draw(st.sampled_from([None, price])),
            )
        elif kind == "tick":  # the live clock moves on without an event
            ev = ("tick", str(T0 + t))
        else:
            ev = (
                "resume",
                draw(
                    st.sampled_from(
                        [
                            "firm",
                            f"account:{account}",
                            f"strategy:{strategy}",
                            f"symbol:{keys['symbol']}",
                            "venue:XNAS",
                        ]
                    )
                ),
            )
        out.append(ev)
    cuts = sorted(draw(st.lists(st.integers(0, len(out)), max_size=6)))
    return out, cuts


def run_both(
    stream: list[wire.Event | tuple[str, str]],
    cuts: list[int],
    limits: Limits = LIMITS,
    own_time: bool = False,
) -> tuple[Engine, ReferenceModel, list[Transition], Result]:
    """Feed ``stream`` to both models, cutting the engine's input at ``cuts``;
    ``own_time``: as while a backlog is read (every event at its own time, one older
    than a window's ring in none of its windows)."""
    engine = Engine(limits, event_time=True, settings=SETTINGS)
    ref = ReferenceModel(limits, SETTINGS)
    if own_time:
        engine.count_at_own_time(True)
        ref.lateness_ns = OWN_TIME_NS
    total = Result()
    bounds = [0, *cuts, len(stream)]

    def apply(batch: list[wire.Event]) -> None:
        r = engine.apply(batch)
        total.applied += r.applied
        total.bad += r.bad
        total.duplicates += r.duplicates
        total.skewed += r.skewed
        total.late += r.late
        total.jumps += r.jumps

    with capture_transitions(engine) as seen:
        for lo, hi in itertools.pairwise(bounds):
            batch: list[wire.Event] = []
            for item in stream[lo:hi]:
                if isinstance(item, tuple) and item[0] == "tick":
                    apply(batch)
                    batch = []
                    engine.tick(int(item[1]))
                    ref.tick(int(item[1]))
                elif isinstance(item, tuple):
                    apply(batch)
                    batch = []
                    engine.killswitch.resume(item[1], "tester", "property test")
                    ref.resume(item[1])
                else:
                    batch.append(item)
                    ref.apply_one(item)
            apply(batch)
    total.skewed += engine.unsettled_skew()  # still ahead at the end: skewed
    return engine, ref, seen, total


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_same(
    engine: Engine, ref: ReferenceModel, transitions: list[Transition], total: Result
) -> None:
    rules = {r.name for r in engine.limits.all_rules}
    decided = [t for t in transitions if t.kind != "manual" and t.rule in rules]
    got = [(t.scope, t.rule, t.from_, t.to, t.kind, t.ts, t.level, t.symbol) for t in decided]
    want = [
        (t.scope, t.rule, t.from_, t.to, t.kind, t.ts, t.level, t.symbol) for t in ref.transitions
    ]
    assert got == want
    unpriced = {t.reason.split()[1] for t in transitions if t.rule == "fx-rate-missing"}
    assert unpriced == ref.noted
    values = [t.value for t in decided]
    assert all(close(a, b.value) for a, b in zip(values, ref.transitions, strict=True))
    assert (total.duplicates, len(total.skewed), total.late, total.jumps) == (
        ref.duplicates,
        ref.skewed + ref.ahead_run,
        ref.late,
        ref.jumps,
    )
    assert sorted(b.reason for b in total.bad) == sorted(ref.bad)
    positions = engine.positions()
    assert set(positions) == set(ref.lots)
    for key, (pos, cost, real) in positions.items():
        lot = ref.lots[key]
        assert pos == lot.qty, key  # quantities are exact (decimal sums)
        # positions() gives money as it is judged (rounded to 1e-6)
        assert close(cost, money(lot.cost)) and close(real, money(lot.real)), key
    for scope in set(engine.keys.scope_names) | set(ref.books):
        got_v = engine.scope_values(scope)
        book = ref.book(scope)
        assert got_v["open_orders"] == book.open_orders, scope
        assert got_v["unvalued"] == book.unknown, scope
        if book.unknown:
            assert math.isnan(got_v["pnl"]), scope  # unknown, never a partial sum
            continue
        for name, want_v in (
            ("gross_notional", book.gross),
            ("net_notional", book.net),
            ("pnl", book.pnl),
            ("drawdown", max(0.0, book.peak - book.pnl)),
            ("fees", book.fees),
            ("potential_gross_notional", book.potential),
            ("open_order_notional", book.open_notional),
        ):
            rounded = money(want_v)  # money is reported as it is judged
            assert close(got_v[name], rounded), (scope, name, got_v[name], rounded)
    for peak in engine.peaks():
        if peak.rule.metric == "restricted":
            continue
        n, hi, lo = ref.peaks[peak.rule.name]
        assert peak.evaluations == n, peak.rule.name
        if n:
            assert peak.high is not None and peak.low is not None
            assert close(peak.high, hi) and close(peak.low, lo), peak.rule.name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from(sorted(LIMITS_BY_REVALUE)), st.booleans())
def test_kernel_matches_reference(
    case: tuple[list[wire.Event | tuple[str, str]], list[int]], revalue_ms: int, own_time: bool
) -> None:
    engine, ref, seen, total = run_both(*case, LIMITS_BY_REVALUE[revalue_ms], own_time)
    assert_same(engine, ref, seen, total)


@pytest.mark.parametrize("split", [1, 7, 1000])
def test_batching_does_not_change_results(split: int) -> None:
    """One long deterministic stream, cut three ways, gives identical transitions."""
    stream: list[wire.Event] = []
    t = 0
    for i in range(3000):
        t += (i % 7) * MS
        s = f"S{i % 4}"
        keys = {"account": STRATEGIES[s], "strategy": s, "symbol": SYMBOLS[i % 3]}
        if i % 5 == 4:
            stream.append(wire.Mark(ts=T0 + t, symbol=SYMBOLS[i % 3], price=PRICES[i % 5]))
        elif i % 3 == 0:
            stream.append(
                wire.NewOrder(
                    ts=T0 + t,
                    order_id=f"o{i % 11}",
                    side="buy",
                    qty=10.0,
                    price=PRICES[i % 4],
                    **keys,
                )
            )
        else:
            stream.append(
                wire.Fill(
                    ts=T0 + t,
                    order_id=f"o{i % 11}",
                    exec_id=str(i),
                    side="buy" if i % 2 else "sell",
                    qty=5.0,
                    price=PRICES[i % 4],
                    **keys,
                )
            )
    results = []
    for size in (split, len(stream)):
        engine = Engine(LIMITS, clock=lambda: 0)
        out = []
        for k in range(0, len(stream), size):
            out += [
                (x.scope, x.rule, x.to, x.ts)
                for x in engine.apply(stream[k : k + size]).transitions
            ]
        results.append((out, engine.positions()))
    assert results[0] == results[1]
    assert results[0][0], "the stream should breach something"
