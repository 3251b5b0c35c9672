"""The validated, immutable form of a limits file."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit. A breach is ``value > max`` or ``value < min``; either bound may be absent."""

    name: str
    metric: str
    scope: str
    action: str
    max: float | None = None
    min: float | None = None
    window_ms: int | None = None
    match: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    min_orders: int = 1
    description: str = ""
    warn_at: tuple[float, ...] = ()
    """Warning levels, ascending fractions of the limit (of ``max``; of ``min`` for a rule
    with only a lower bound): one alert per level crossed."""
    rearm: float | None = None
    """Fraction of the limit's magnitude the value must fall back below a level before its
    alert re-arms. None: 0.05 for warning levels, 0 for the rule's own alert."""
    reason: str = ""
    """Restricted-list entries: why the symbols are restricted (shown in the evidence)."""

    WARN_REARM = 0.05
    """Default re-arm of warning levels (docs/limits.md, Warnings)."""

    @property
    def warn_rearm(self) -> float:
        """The re-arm fraction of this rule's warning levels."""
        return self.WARN_REARM if self.rearm is None else self.rearm

    @property
    def alert_rearm(self) -> float:
        """The re-arm fraction of this rule's own alert (``action = "alert"``)."""
        return 0.0 if self.rearm is None else self.rearm

    def event_filter(self, name: str) -> tuple[str, ...]:
        """The ``match.side`` / ``match.venue`` values selecting events (empty: every event).

        A venue-scope rule's ``match.venue`` names its own scopes instead.
        """
        if name == "venue" and self.scope == "venue":
            return ()
        return self.match.get(name, ())

    @property
    def upper(self) -> float:
        """The upper bound, +inf when absent (never breached)."""
        return math.inf if self.max is None else self.max

    @property
    def lower(self) -> float:
        """The lower bound, -inf when absent (never breached)."""
        return -math.inf if self.min is None else self.min

    def limit_for(self, value: float) -> float:
        """The bound that ``value`` violates (or the upper one, when it violates none)."""
        if self.min is not None and value < self.min:
            return self.min
        return self.upper if self.max is not None else self.lower

    def utilisation(self, value: float) -> float:
        """How close ``value`` is to the bound: 1.0 is at the limit, above 1.0 breaches."""
        best = -math.inf
        if self.max is not None and self.max > 0 and value > -math.inf:
            best = max(best, value / self.max)
        if self.min is not None and self.min < 0 and value < math.inf:
            best = max(best, value / self.min)
        if self.min is not None and self.min > 0 and value > 0:
            best = max(best, self.min / value)
        return best


@dataclass(frozen=True, slots=True)
class Limits:
    """A whole limits file: rules in file order, plus where it came from."""

    version: int
    rules: tuple[Rule, ...]
    source: str = "<memory>"
    digest: str = ""
    revalue_ms: int = 100
    """Marks move holders' exposures at most once per symbol per this many ms (0: every mark)."""
    cancel_deadline_ms: int = 1000
    """After a halt (or reduce-only) asks the trading system to cancel working orders, any
    named order still working this many ms after the decision raises the paging
    ``cancel-incomplete`` alert (0: no deadline, no alert)."""
    base_currency: str = "USD"
    """ISO 4217 code every notional, P&L and fee is converted to."""
    restricted: tuple[Rule, ...] = ()
    """Restricted-list entries, as rules of metric ``restricted`` (``match.symbol`` the
    symbols; ``match.account`` / ``match.strategy`` optional filters; ``reason``)."""

    @property
    def all_rules(self) -> tuple[Rule, ...]:
        """The [[rule]] entries, then the [[restricted]] entries."""
        return self.rules + self.restricted

    def rule(self, name: str) -> Rule:
        """The rule called ``name``; ``KeyError`` when there is none."""
        for r in self.all_rules:
            if r.name == name:
                return r
        raise KeyError(name)
