"""Which rules group mode (``[scale] mode = "group"``, docs/deployment.md) can judge.

In group mode each instance owns the accounts of its input partitions, so it sees the
whole of an account's flow and the whole of any one order, and only part of a firm, a
symbol, a venue or a strategy trading in several accounts. Used by ``riskguard run``
(at start and on every reload) and by ``riskguard validate --group``.
"""

from __future__ import annotations

from riskguard.limits.load import LimitsError
from riskguard.limits.model import Limits

#: Metrics judged on one order (or one listed symbol) at a time: one instance sees the
#: whole of what they measure whatever the rule's scope, so they are allowed at any scope.
PER_ORDER_METRICS = frozenset({"order_qty", "order_notional", "price_deviation", "restricted"})


def check_group_limits(limits: Limits) -> None:
    """Refuse rules group mode cannot judge right.

    Allowed: every rule of scope ``account`` (an account lives in one partition), and
    rules of :data:`PER_ORDER_METRICS` at any scope. Raises :class:`LimitsError` listing
    every other rule (a firm, strategy, symbol or venue total would be judged on the
    part of the flow one instance owns).
    """
    problems = [
        f"rule {r.name!r}: {r.metric} at scope {r.scope!r} spans input partitions; "
        "[scale] mode = \"group\" judges only scope 'account' (and per-order metrics "
        f"{', '.join(sorted(PER_ORDER_METRICS))} at any scope): run it in single mode, "
        "or scope it to accounts"
        for r in limits.all_rules
        if r.scope != "account" and r.metric not in PER_ORDER_METRICS
    ]
    if problems:
        raise LimitsError(limits.source, problems)
