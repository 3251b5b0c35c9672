"""The per-order rules a gate's ``check()`` evaluates (docs/control-topic.md, "The
pre-trade check", steps 4 and 5): which rules apply to an order, its value of a rule's
metric, the scope a rule is kept at for it, and whether a breach would change nothing.

Pure functions of the order and the :class:`~riskguard.control.view.ControlView`; no
I/O, no numpy (the gate imports this).
"""

from __future__ import annotations

from dataclasses import dataclass

from riskguard.control.view import ControlView, OrderRule
from riskguard.vocabulary import money, price_deviation

__all__ = ["Order", "in_force", "rule_scope", "value"]


@dataclass(frozen=True, slots=True)
class Order:
    """The order a check judges, its strategy's home account, and its symbol's reference
    price, contract size and FX rate (None: no rate yet)."""

    account: str
    strategy: str
    home: str
    symbol: str
    side: str
    venue: str | None
    qty: float
    price: float | None
    ref: float | None
    multiplier: float
    rate: float | None

    def key(self, name: str, level: str) -> str | None:
        """The order's value of match field ``name`` for a rule at ``level`` (None: the
        order has none). A strategy rule's ``account`` is the strategy's home account."""
        if name == "account":
            return self.home if level == "strategy" else self.account
        if name == "strategy":
            return self.strategy
        if name == "symbol":
            return self.symbol
        if name == "side":
            return self.side
        if name == "venue":
            return self.venue
        return _UNKNOWN_FIELD


_UNKNOWN_FIELD = "\x00unknown match field"
"""A match field this gate does not know: it does not narrow the rule."""


def value(rule: OrderRule, order: Order) -> float | None:
    """The order's value of the rule's metric; None when the rule does not apply or
    cannot be evaluated. A rule naming ``venue``, or kept at the venue scope, does not
    apply to an order that names none (riskguard keeps a venue rule per venue: an order
    to no venue has no venue scope); match fields this gate does not know do not narrow
    the rule."""
    if order.venue is None and rule.record.scope == "venue":
        return None
    for name, keys in rule.match:
        key = order.key(name, rule.record.scope)
        if key is not _UNKNOWN_FIELD and key not in keys:
            return None
    metric = rule.record.metric
    if metric == "order_qty":
        return order.qty
    if metric == "order_notional":
        px = order.price if order.price is not None else order.ref
        if px is None or order.rate is None:
            return None
        return money(order.qty * order.multiplier * order.rate * abs(px))
    if metric == "price_deviation":
        price, ref = order.price, order.ref
        if price is None or ref is None or ref == 0.0:
            return None
        return price_deviation(price, ref)
    return None  # a metric this gate does not know: riskguard judges it after sending


def rule_scope(level: str, account: str, strategy: str, symbol: str, venue: str | None) -> str:
    """The scope a rule at ``level`` is kept at for this order (e.g. ``strategy:s1``,
    ``venue:XNAS``)."""
    if level == "venue" and venue is not None:
        return f"venue:{venue}"
    if level == "account":
        return f"account:{account}"
    if level == "strategy":
        return f"strategy:{strategy}"
    if level == "symbol":
        return f"symbol:{symbol}"
    return level  # firm, or a level this gate does not know


def in_force(view: ControlView, where: str, action: str) -> bool:
    """Whether a breach of a ``reduce_only`` rule kept at ``where`` changes nothing: the
    scope is REDUCE_ONLY already, and step 3 let the order through (it reduces that
    scope's position). riskguard then moves no state for it: refusing it would stop the
    unwinding a reduce-only action exists to allow (a restricted name, a collar)."""
    if action != "reduce_only":
        return False
    record = view.states.get(where)
    return record is not None and record.state == "REDUCE_ONLY"
