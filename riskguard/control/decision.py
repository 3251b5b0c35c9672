"""The gate's decisions: may this order go, and which cancel requests are due?

Pure functions of a :class:`~riskguard.control.view.ControlView`, the heartbeat
timeout and an :class:`~riskguard.control.view.Instant`: no I/O, no clock of their
own. :class:`riskguard.gate.Gate` answers through them, and so do the language-neutral
test vectors (``docs/control-topic-vectors.json``); ``docs/control-topic.md`` is
the contract they implement.

* :func:`health`: riskguard alive and ready, any one of its instances (the fail-closed
  part of every answer);
* :func:`allows`: the scopes' states, the router saying whether the order reduces;
* :func:`check`: the pre-trade check: states, REDUCE_ONLY judged from riskguard's
  published positions, and the per-order rules (``order_qty``, ``order_notional``,
  ``price_deviation``);
* :func:`due_cancels` and :class:`DisconnectWatch`: what to hand to ``on_cancel``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from riskguard.control import order_rules
from riskguard.control.records import StateRecord
from riskguard.control.view import ControlView, Instant
from riskguard.events import MAX_PRICE, MAX_QTY, MIN_QTY
from riskguard.evidence import evidence, number, sentence
from riskguard.vocabulary import STATE_CODE, STATES, order_scopes

__all__ = [
    "Verdict",
    "allows",
    "check",
    "health",
    "heartbeat_age_ns",
]

VerdictState = Literal["ACTIVE", "REDUCE_ONLY", "HALTED", "UNKNOWN"]
#: Rank of a state no v1 reader knows: stricter than HALTED (fail closed).
_UNKNOWN_RANK = len(STATES)
#: Per-order metrics a v1 gate evaluates; a rule on any other metric is skipped.
ORDER_METRICS = ("order_qty", "order_notional", "price_deviation")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one ``allows`` or ``check`` call. Truthy when the order may be sent.

    ``state`` is the strictest state of the order's scopes (``UNKNOWN`` when failing
    closed: no fresh, ready heartbeat, no rules yet for ``check``, or a scope in a state
    this reader does not know); ``scope`` names the scope that decided, ``None`` when
    none did. A per-order rule's refusal keeps the scopes' ``state`` and names the scope
    the rule is kept at in ``scope``, the rule in ``rule``, its ``metric``, the order's
    ``value`` (in the metric's unit: quantity, currency, or a ratio) and the ``limit``
    it crossed. ``alerts`` names the ``alert`` rules the order breaches (it is still
    allowed; ``reason`` gives their evidence). ``instances`` (from :func:`health`) names
    the riskguard instances alive and ready, sorted. ``cause`` is the key
    :attr:`riskguard.gate.Gate.refusals` counts.
    """

    allowed: bool
    reason: str
    state: VerdictState
    scope: str | None = None
    rule: str | None = None
    metric: str | None = None
    value: float | None = None
    limit: float | None = None
    alerts: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def cause(self) -> str:
        """``rule:<name>`` for a per-order rule, ``fail_closed`` (no heartbeat, stale,
        not ready, no rules yet), else the state that decided (``HALTED``,
        ``REDUCE_ONLY``, ``UNKNOWN``), ``ACTIVE`` when allowed."""
        if self.rule is not None:
            return f"rule:{self.rule}"
        if self.state == "UNKNOWN" and self.scope is None:
            return "fail_closed"
        return self.state


# health ------------------------------------------------------------------------------
def heartbeat_age_ns(view: ControlView, at: Instant) -> int | None:
    """Age at ``at``, in ns, of the youngest latest heartbeat of any riskguard instance;
    ``None`` before any heartbeat (:meth:`~riskguard.control.view.Pulse.age_ns`)."""
    ages = [pulse.age_ns(at) for pulse in view.heartbeats.values()]
    return min(ages) if ages else None


def health(view: ControlView, heartbeat_timeout_ms: int, at: Instant) -> Verdict:
    """Whether riskguard is alive and ready at ``at`` (the fail-closed part of ``allows``).

    Each riskguard instance is judged by its own latest heartbeat: live when its age is
    below ``heartbeat_timeout_ms`` and it says ``ready: true``. Allowed while any
    instance is live (``instances`` names the live ones, sorted); refused (state
    ``UNKNOWN``) with no heartbeat yet, or when none is live: every heartbeat is
    ``heartbeat_timeout_ms`` old or more, or the fresh ones say ``ready: false``.
    """
    pulses = view.heartbeats  # one read: the view replaces the mapping whole
    if not pulses:
        return Verdict(False, "fail closed: no heartbeat from riskguard yet", "UNKNOWN")
    timeout_ns = heartbeat_timeout_ms * 1_000_000
    live: list[str] = []
    unready: list[str] = []
    newest_ts = max(pulse.record.ts for pulse in pulses.values())
    for name, pulse in pulses.items():
        if pulse.age_ns(at) >= timeout_ns:
            continue
        (live if pulse.record.ready else unready).append(name)
    if live:
        live.sort()
        named = ", ".join(live)
        return Verdict(True, f"riskguard alive ({named})", "ACTIVE", instances=tuple(live))
    if unready:
        unready.sort()
        verb = "is" if len(unready) == 1 else "are"
        return Verdict(
            False, f"fail closed: riskguard {', '.join(unready)} {verb} not ready", "UNKNOWN"
        )
    silent_ms = (at.wall_ns - newest_ts) / 1e6
    return Verdict(
        False,
        f"fail closed: riskguard silent for {silent_ms:,.0f} ms "
        f"(timeout {heartbeat_timeout_ms} ms)",
        "UNKNOWN",
    )


# scopes ------------------------------------------------------------------------------
def _strictest(view: ControlView, scopes: Iterable[str]) -> StateRecord | None:
    """The strictest non-ACTIVE state record of ``scopes`` (the widest on a tie)."""
    worst: StateRecord | None = None
    for scope in scopes:
        record = view.states.get(scope)
        if (
            record is not None
            and record.state != "ACTIVE"
            and (worst is None or _rank(record) > _rank(worst))
        ):
            worst = record
    return worst


def _refuse_state(worst: StateRecord) -> Verdict | None:
    """The refusal of a HALTED or unknown strictest state; None for REDUCE_ONLY."""
    why = evidence(worst.transition)
    if worst.state == "HALTED":
        return Verdict(False, f"{worst.scope} is HALTED ({why})", "HALTED", worst.scope)
    if worst.state != "REDUCE_ONLY":
        return Verdict(
            False,
            f"fail closed: {worst.scope} is in unknown state {worst.state!r} ({why})",
            "UNKNOWN",
            worst.scope,
        )
    return None


def _side(side: str) -> float:
    if side == "buy":
        return 1.0
    if side == "sell":
        return -1.0
    raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")


def _mic(venue: str | None) -> None:
    """A venue must be an ISO 10383 MIC as riskguard's events carry it (four upper-case
    letters or digits): riskguard discards an event naming another, so a gate taking
    ``"xnas"`` would let an order through a halt of ``venue:XNAS`` that riskguard never
    sees. Raises ``ValueError``."""
    if venue is not None and not (
        len(venue) == 4 and venue.isascii() and venue.isalnum() and venue == venue.upper()
    ):
        raise ValueError(f"venue must be an ISO 10383 MIC such as 'XNAS', got {venue!r}")


def allows(
    view: ControlView,
    heartbeat_timeout_ms: int,
    at: Instant,
    account: str,
    strategy: str,
    symbol: str,
    side: Literal["buy", "sell"],
    reduces_position: bool,
    venue: str | None = None,
) -> Verdict:
    """May this order be sent at ``at``? Checks health, then firm, account, strategy, symbol
    and, for an order to a venue (ISO 10383 MIC), ``venue:<MIC>``.

    The strictest of those scopes' states decides (the widest on a tie). HALTED
    refuses; REDUCE_ONLY allows only orders with ``reduces_position=True``; a state
    this reader does not know refuses (``UNKNOWN``). Raises ``ValueError`` when
    ``side`` is not ``"buy"`` or ``"sell"``, or ``venue`` is not a MIC.
    """
    _side(side)
    _mic(venue)
    alive = health(view, heartbeat_timeout_ms, at)
    if not alive:
        return alive
    worst = _strictest(view, order_scopes(account, strategy, symbol, venue))
    if worst is None:
        return Verdict(True, "allowed", "ACTIVE")
    refused = _refuse_state(worst)
    if refused is not None:
        return refused
    if reduces_position:
        return Verdict(
            True,
            f"{worst.scope} is REDUCE_ONLY; order reduces position",
            "REDUCE_ONLY",
            worst.scope,
        )
    why = evidence(worst.transition)
    return Verdict(False, f"{worst.scope} is REDUCE_ONLY ({why})", "REDUCE_ONLY", worst.scope)


# the pre-trade check -----------------------------------------------------------------
def check(
    view: ControlView,
    heartbeat_timeout_ms: int,
    at: Instant,
    account: str,
    strategy: str,
    symbol: str,
    side: Literal["buy", "sell"],
    qty: float,
    price: float | None = None,
    reference_price: float | None = None,
    venue: str | None = None,
    filled: float = 0.0,
    prior_qty: float | None = None,
) -> Verdict:
    """Should this order be sent at ``at``? The pre-trade check, in this order:

    1. health (as :func:`health`); 2. no rules record read yet: refused (fail closed);
    3. the scopes' states (firm, account, strategy, symbol, and ``venue:<MIC>`` for an
       order to a venue): HALTED or an unknown state refuses as in :func:`allows`;
       each REDUCE_ONLY scope refuses an order that would open, increase or flip its
       published position (:meth:`ControlView.position`, 0 when none is current; a
       symbol or venue scope's is the firm's in the order's symbol) with the quantity
       still to fill, ``qty - filled``, once the working orders on its side published
       with it fill too (:meth:`ControlView.leaves`; less ``prior_qty - filled``, the
       replaced order's own) (a replace leaving nothing to fill passes, and
       so does a replace lowering the order's quantity, ``qty < prior_qty``: it can
       only take the scope's worst-case position back toward where it was);
    4. the restricted list: an order in a listed symbol (by a listed account or
       strategy, when the entry names any) is refused, or noted for an ``alert`` entry
       (and for a ``reduce_only`` one whose scope is REDUCE_ONLY already: the order
       passed step 3, it reduces; riskguard moves nothing for it);
    5. the per-order rules matching the order (its keys, and a rule's ``side`` and
       ``venue`` when it names them; a strategy rule's ``account``: the strategy's home
       account, from its home record, else the order's account), in published order:
       a breach of an ``alert`` rule is noted (so is a ``reduce_only`` rule's kept at
       a scope REDUCE_ONLY already, as in step 4), of any other action refuses.

    ``qty`` > 0 (units), ``price`` the limit price (None: a market order),
    ``reference_price`` the price to judge against (None: riskguard's published mark),
    ``filled`` for a replace the quantity the order has filled already (FIX CumQty; 0
    for a new order): ``qty`` is the replace's new total, as riskguard judges the
    per-order rules on it, and what may still fill is ``qty - filled``; ``prior_qty``
    for a replace the order's total quantity before it (its current FIX OrderQty;
    None for a new order, or when the router does not say).
    ``order_notional`` = qty * abs(price) * multiplier * rate, from the symbol's mark
    record, else its instrument record (1 and 1 without either, riskguard's own default
    for a symbol no ``instrument`` event described; a market order at abs(reference);
    not evaluated without a price, or while riskguard has no rate for the currency),
    rounded to a millionth as riskguard judges money; ``price_deviation`` =
    abs(price - ref) / abs(ref) (not evaluated for a market order, without a reference,
    or at a reference of 0). Raises ``ValueError`` for a side other than buy/sell, a
    ``qty`` not finite and > 0, a ``filled`` not finite and >= 0, a ``prior_qty`` not
    None and not finite and > 0, a non-finite price, a
    ``qty`` outside 1e-9 to 1e12 or a price beyond +-1e12 (riskguard discards such events
    as ``out_of_range``: it would never see the order, docs/events.md), or a venue that
    is not an ISO 10383 MIC (``XNAS``). Quantities are judged as riskguard
    books them (:func:`booked_qty`): 0.1 + 0.2 is an ``order_qty`` of 0.3.
    """
    sign = _side(side)
    _mic(venue)
    if not (qty > 0 and math.isfinite(qty)):
        raise ValueError(f"qty must be a finite number > 0, got {qty!r}")
    if not MIN_QTY <= qty <= MAX_QTY:  # riskguard would discard its events: never see it
        raise ValueError(
            f"qty {qty!r} is outside {MIN_QTY:g} to {MAX_QTY:g}: riskguard discards such "
            "events as out_of_range and would never see this order"
        )
    if not (filled >= 0 and math.isfinite(filled)):
        raise ValueError(f"filled must be a finite number >= 0, got {filled!r}")
    if prior_qty is not None and not (prior_qty > 0 and math.isfinite(prior_qty)):
        raise ValueError(f"prior_qty must be None or a finite number > 0, got {prior_qty!r}")
    for name, px in (("price", price), ("reference_price", reference_price)):
        if px is not None and not math.isfinite(px):
            raise ValueError(f"{name} must be finite or None, got {px!r}")
        if px is not None and abs(px) > MAX_PRICE:
            raise ValueError(
                f"{name} {px!r} is beyond +-{MAX_PRICE:g}: riskguard discards such events "
                "as out_of_range and would never see this order"
            )
    alive = health(view, heartbeat_timeout_ms, at)
    if not alive:
        return alive
    if view.rules is None:
        return Verdict(False, "fail closed: no per-order rules from riskguard yet", "UNKNOWN")
    scopes = order_scopes(account, strategy, symbol, venue)
    worst = _strictest(view, scopes)
    state: VerdictState = "ACTIVE"
    decided: str | None = None
    reason = "allowed"
    if worst is not None:
        refused = _refuse_state(worst)
        if refused is not None:
            return refused
        leaves = _leaves(qty, filled)
        lowered = _lowered(qty, prior_qty, filled)
        own = 0.0 if prior_qty is None else _leaves(prior_qty, filled)
        for scope in scopes:  # widest first: every REDUCE_ONLY scope must agree
            record = view.states.get(scope)
            if record is not None and record.state == "REDUCE_ONLY":
                if lowered is not None:
                    said = f"{scope} is REDUCE_ONLY; {lowered}"
                    verdict = Verdict(True, said, "REDUCE_ONLY", scope)
                else:
                    verdict = _reduce_only(view, record, symbol, side, sign * leaves, own)
                if not verdict:
                    return verdict
                if decided is None:
                    decided, reason = scope, verdict.reason
        state = "REDUCE_ONLY"
    mark = view.marks.get(symbol)
    ref = reference_price
    if ref is None:
        ref = None if mark is None else mark.price
    notes: list[str] = []
    alerts: list[str] = []
    for entry in view.rules.restricted:
        if symbol not in entry.symbols:
            continue
        if (entry.accounts and account not in entry.accounts) or (
            entry.strategies and strategy not in entry.strategies
        ):
            continue
        said = f"rule {entry.name}: {symbol} is on the restricted list; {entry.reason}"
        where = f"strategy:{strategy}"
        if entry.action == "alert":
            notes.append(f"alert at {where}: {said}")
            alerts.append(entry.name)
            continue
        if order_rules.in_force(view, where, entry.action):
            notes.append(f"{where} already REDUCE_ONLY and the order reduces it: {said}")
            continue
        return Verdict(
            False,
            f"refused before sending at {where}: {said} (action {entry.action})",
            state,
            where,
            entry.name,
            "restricted",
            1.0,
            0.0,
        )
    money = mark if mark is not None else view.instruments.get(symbol)
    size = 1.0 if money is None else money.multiplier
    rate = 1.0 if money is None else money.rate
    booked = booked_qty(qty)  # the per-order rules judge the qty riskguard will book
    known = view.homes.get(strategy)  # none yet: this order's account will be its home
    home = account if known is None else known.account
    order = order_rules.Order(
        account, strategy, home, symbol, side, venue, booked, price, ref, size, rate
    )
    for rule in view.order_rules:
        value = order_rules.value(rule, order)
        if value is None:
            continue
        if value > rule.upper:
            limit = rule.upper
        elif value < rule.lower:
            limit = rule.lower
        else:
            continue
        r = rule.record
        said = sentence(r.name, r.metric, value, limit)
        where = order_rules.rule_scope(r.scope, account, strategy, symbol, venue)
        if r.action == "alert":
            notes.append(f"alert at {where}: {said}")
            alerts.append(r.name)
            continue
        if order_rules.in_force(view, where, r.action):
            notes.append(f"{where} already REDUCE_ONLY and the order reduces it: {said}")
            continue
        return Verdict(
            False,
            f"refused before sending at {where}: {said} (action {r.action})",
            state,
            where,
            r.name,
            r.metric,
            value,
            limit,
        )
    if notes:
        reason = f"{reason}; {'; '.join(notes)}"
    return Verdict(True, reason, state, decided, alerts=tuple(alerts))


def booked_qty(qty: float) -> float:
    """The quantity riskguard books for an order of ``qty`` (docs/events.md, Decimal
    quantities): rounded to 9 decimals below 1,000,000 units, so that a router's float sum
    (0.1 + 0.2 = 0.30000000000000004) is judged as the 0.3 riskguard will book; a
    quantity that rounds to 0 is kept as given."""
    if qty >= 1e6:
        return qty
    return math.floor(qty * 1e9 + 0.5) / 1e9 or qty


def _leaves(qty: float, filled: float) -> float:
    """What an order of ``qty`` (a replace's new total) with ``filled`` done may still
    fill, as riskguard books quantities (0: nothing; a replace at or below what filled
    closes the order)."""
    if filled == 0.0:
        return booked_qty(qty)
    left = booked_qty(qty) - booked_qty(filled)
    return booked_qty(left) if left > 0.0 else 0.0


def _lowered(qty: float, prior_qty: float | None, filled: float) -> str | None:
    """For a replace that lowers the order's quantity (``qty`` below ``prior_qty`` as
    riskguard books them), what it does in words; None for any other order. Whatever
    side and position, such a replace can only bring every position the order trades
    against back toward where it stood before the order: what may still fill shrinks
    (the order's side cannot change in a replace, FIX tag 54). A REDUCE_ONLY scope
    lets it through; refusing it would leave the larger order working."""
    if prior_qty is None or not booked_qty(qty) < booked_qty(prior_qty):
        return None
    before, after = _leaves(prior_qty, filled), _leaves(qty, filled)
    return f"the replace lowers what may still fill from {number(before)} to {number(after)}"


def _closes(qty: float, position: float) -> bool:
    """Whether ``qty`` equals ``abs(position)`` as riskguard compares quantities: exactly
    below 1,000,000 units, within 1e-9 relative at or above."""
    big = max(qty, abs(position))
    return qty == abs(position) if big < 1e6 else abs(qty - abs(position)) <= 1e-9 * big


def _reduce_only(
    view: ControlView, record: StateRecord, symbol: str, side: str, signed_qty: float, own: float
) -> Verdict:
    """REDUCE_ONLY at ``record.scope``: allowed only if the order brings the position
    closer to zero without crossing it (position 0: every order opens one), counting
    the working orders on its side that riskguard published (they may fill first) less
    ``own``, what the order being replaced may still fill (counted among them). A symbol
    or venue scope's published position is the firm's in the symbol (positions are not
    kept per venue), and the reason says so."""
    scope = record.scope
    if signed_qty == 0.0:
        return Verdict(
            True, f"{scope} is REDUCE_ONLY; the order leaves nothing to fill", "REDUCE_ONLY", scope
        )
    position = view.position(scope, symbol)
    buys, sells = view.leaves(scope, symbol)
    working = max(booked_qty(sells if signed_qty < 0.0 else buys) - own, 0.0)
    working = booked_qty(working) if working > 0.0 else 0.0
    after = position + signed_qty
    qty = abs(signed_qty)
    noun = "the firm's position" if scope.startswith(("symbol:", "venue:")) else "position"
    reducing = position != 0.0 and signed_qty * position < 0.0
    room = abs(position) - working
    room = booked_qty(room) if reducing and room > 0.0 else 0.0
    closes = room > 0.0 and _closes(qty, room)
    if room > 0.0 and (qty < room or closes):
        alone = 0.0 if closes and not working else after
        said = f"{side} {number(qty)} reduces {noun} {number(position)} to {number(alone)}"
        if working:
            last = 0.0 if closes else booked_qty(room - qty) * (1.0 if position > 0.0 else -1.0)
            said += f" ({number(last)} once the working {side}s of {number(working)} fill too)"
        return Verdict(True, f"{scope} is REDUCE_ONLY; {said}", "REDUCE_ONLY", scope)
    if position == 0.0:
        what = f"{side} {number(qty)} would open a position ({noun} 0)"
    elif signed_qty * position > 0.0:
        what = f"{side} {number(qty)} would increase {noun} {number(position)} to {number(after)}"
    elif working:
        past = number(after + (working if signed_qty > 0.0 else -working))
        what = (
            f"{side} {number(qty)} would flip {noun} {number(position)} to {past} with the "
            f"working {side}s of {number(working)} (a replace: give prior_qty)"
        )
    else:
        what = f"{side} {number(qty)} would flip {noun} {number(position)} to {number(after)}"
    why = evidence(record.transition)
    return Verdict(False, f"{scope} is REDUCE_ONLY ({why}); {what}", "REDUCE_ONLY", scope)


def _rank(record: StateRecord) -> int:
    return STATE_CODE.get(record.state, _UNKNOWN_RANK)
