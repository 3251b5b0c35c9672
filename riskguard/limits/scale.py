"""Which rules group mode (``[scale] mode = "group"``, docs/deployment.md) judges, and where.

In group mode each instance owns the accounts of its input partitions, so it sees the
whole of an account's flow and the whole of any one order, and only part of a firm, a
symbol, a venue or a strategy trading in several accounts. A rule is then one of:

- **local**: scope ``account``, or a metric judged on one order at a time
  (:data:`PER_ORDER_METRICS`, any scope). The instance owning the account judges it,
  in its kernel, as in single mode.
- **summed**: a scope spanning partitions and a metric that is a sum over accounts
  (:data:`SUMMED_METRICS`). Each instance publishes its part of the value to the
  aggregation topic; the sums are judged by one instance
  (:mod:`riskguard.aggregate`), ``scale.aggregate_interval_ms`` later at most.
- **refused**: any other (a drawdown, a gross exposure or a largest position nets or
  peaks across accounts: the firm's value is not the sum of its accounts' values), and
  a strategy rule with ``match.account``: it selects strategies by their *home* account,
  the first account each traded in, and a strategy trading in accounts of several
  partitions has a different first account on each instance (one that reads everything
  may pick either), so the instances would judge or sum the wrong strategies (a per-order
  metric too).

Used by ``riskguard run`` (at start and on every reload) and by ``riskguard validate
--group``.
"""

from __future__ import annotations

from typing import Final

from riskguard.limits.load import LimitsError
from riskguard.limits.model import Limits, Rule

#: Metrics judged on one order (or one listed symbol) at a time: one instance sees the
#: whole of what they measure whatever the rule's scope, so they are allowed at any scope.
PER_ORDER_METRICS: Final = frozenset(
    {"order_qty", "order_notional", "price_deviation", "restricted"}
)

#: Metrics whose value for a scope spanning partitions is the sum of the instances'
#: values (counts in a window, working orders, signed notional, P&L: each is a sum over
#: events or positions, and every account lives in one partition). ``cancel_ratio``
#: sums its cancels and its new orders apart, and divides the sums.
SUMMED_METRICS: Final = frozenset(
    {
        "order_rate",
        "message_rate",
        "reject_rate",
        "cancel_ratio",
        "fill_notional_rate",
        "fill_count",
        "open_orders",
        "open_order_notional",
        "net_notional",
        "pnl",
    }
)

#: Why a metric is not a sum over accounts (the refusal's words).
_NOT_A_SUM: Final = {
    "gross_notional": "nets positions per symbol across accounts before taking |.|",
    "potential_gross_notional": "nets positions per symbol across accounts before taking |.|",
    "position_qty": "nets positions per symbol across accounts",
    "drawdown": "peaks on the firm-wide P&L path, not on each account's",
    "duplicate_orders": "compares orders across accounts",
    "parent_overfill_ratio": "is a largest ratio, not a sum",
    "position_break_qty": "is a largest break, not a sum",
    "feed_silence_ms": "is measured by each instance on its own partitions",
    "consumer_lag_ms": "is measured by each instance on its own partitions",
}


def _by_home_account(rule: Rule) -> bool:
    """A strategy rule selecting strategies by their home account (``match.account``;
    a restricted-list entry's ``match.account`` selects events, not strategies)."""
    return (
        rule.scope == "strategy" and rule.metric != "restricted" and bool(rule.match.get("account"))
    )


def is_local(rule: Rule) -> bool:
    """Whether the instance owning an account judges ``rule`` alone (see the module)."""
    local = rule.scope == "account" or rule.metric in PER_ORDER_METRICS
    return local and not _by_home_account(rule)


def is_summed(rule: Rule) -> bool:
    """Whether ``rule`` is judged on the instances' summed values (see the module)."""
    return not is_local(rule) and rule.metric in SUMMED_METRICS and not _by_home_account(rule)


def _why_refused(rule: Rule) -> str:
    if _by_home_account(rule):
        return (
            "selects strategies by their home account (match.account: the first account "
            "each traded in), which differs between instances for a strategy trading in "
            "accounts of several partitions"
        )
    return _NOT_A_SUM.get(rule.metric, "is not a sum over accounts")


def summed_rules(limits: Limits) -> tuple[Rule, ...]:
    """The rules of ``limits`` judged on sums, in file order."""
    return tuple(r for r in limits.rules if is_summed(r))


def check_group_limits(limits: Limits) -> None:
    """Refuse rules group mode cannot judge right.

    Raises :class:`LimitsError` listing every rule that is neither local nor summed
    (see the module), each with why its value is not a sum over accounts.
    """
    problems = [
        f"rule {r.name!r}: {r.metric} at scope {r.scope!r} spans input partitions and "
        f"{_why_refused(r)}: group mode cannot judge "
        "it; run this rule in single mode, or scope it to accounts (docs/deployment.md, "
        "Which rules group mode judges)"
        for r in limits.all_rules
        if not is_local(r) and not is_summed(r)
    ]
    if problems:
        raise LimitsError(limits.source, problems)
