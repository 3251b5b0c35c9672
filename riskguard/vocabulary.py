"""The trading vocabulary shared by every part of riskguard: one definition, no numpy.

What a trading state, an action, a scope and an event type *are*, with the integer
codes the numba kernel uses for them, and :class:`Transition`, the record of one
kill-switch decision. Everything else imports these names; nothing redefines them.
The gate (:mod:`riskguard.gate`) depends on this module and msgspec only, so a
trading process that embeds it never loads numpy, numba or the engine.

Codes are dense, ordered and stable: a state's code is its strictness (a breach can
only raise it), an action's code is the state it leads to (``alert`` is 0: no state
change), a level's code is its position in :data:`LEVELS`, and an event type's code
is its position in :data:`EVENT_TYPES`. numba freezes module-level integers at
compile time, so the kernel reads ``HALTED`` or ``T_FILL`` here at no cost.
"""

from __future__ import annotations

import math
import time
from typing import Final, Literal

import msgspec

# Trading states, by strictness --------------------------------------------------
State = Literal["ACTIVE", "REDUCE_ONLY", "HALTED"]
STATES: Final[tuple[State, ...]] = ("ACTIVE", "REDUCE_ONLY", "HALTED")
ACTIVE: Final = 0
REDUCE_ONLY: Final = 1
HALTED: Final = 2
STATE_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(STATES)}

# Actions a rule (or an operator) can take -----------------------------------------
#: ``alert`` pages without a state change; the others latch the state of their name.
ACTIONS: Final = ("alert", "reduce_only", "halt")
A_ALERT: Final = 0
ACTION_CODE: Final[dict[str, int]] = {"alert": A_ALERT, "reduce_only": REDUCE_ONLY, "halt": HALTED}

# Scope levels ------------------------------------------------------------------------
#: Scope levels, widest first. Scope strings are ``firm`` or ``<level>:<key>``. A venue is
#: an ISO 10383 MIC; a venue scope covers the orders sent to that venue.
LEVELS: Final = ("firm", "account", "strategy", "symbol", "venue")
L_FIRM: Final = 0
L_ACCOUNT: Final = 1
L_STRATEGY: Final = 2
L_SYMBOL: Final = 3
L_VENUE: Final = 4
LEVEL_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(LEVELS)}
MAX_KEY_LEN: Final = 256


class ScopeError(ValueError):
    """A scope string that is not ``firm`` or ``account|strategy|symbol:<key>``."""


def parse_scope(scope: str) -> tuple[int, str]:
    """Split ``"strategy:smars"`` into ``(L_STRATEGY, "smars")``; ``"firm"`` is ``(L_FIRM, "")``.

    Levels: firm, account, strategy, symbol, venue.

    Raises :class:`ScopeError` for anything else (unknown level, empty or over-long key).
    """
    if scope == "firm":
        return L_FIRM, ""
    level, sep, key = scope.partition(":")
    code = LEVEL_CODE.get(level, L_FIRM) if sep else L_FIRM
    if code == L_FIRM or not key or len(key) > MAX_KEY_LEN:
        raise ScopeError(
            f"invalid scope {scope!r}: use 'firm', 'account:<id>', 'strategy:<id>', "
            "'symbol:<id>' or 'venue:<MIC>'"
        )
    return code, key


def format_scope(level: int, key: str) -> str:
    """The scope string of ``key`` at ``level``, e.g. ``"account:A1"``; the firm is ``"firm"``."""
    return "firm" if level == L_FIRM else f"{LEVELS[level]}:{key}"


def order_scopes(
    account: str, strategy: str, symbol: str, venue: str | None = None
) -> tuple[str, ...]:
    """The scopes an order belongs to, widest first: firm, account, strategy, symbol, and
    its venue's when it names one."""
    scopes = ("firm", f"account:{account}", f"strategy:{strategy}", f"symbol:{symbol}")
    return scopes if venue is None else (*scopes, f"venue:{venue}")


# Event types (wire schema) -----------------------------------------------------------
#: Event type tags, in kernel code order (``T_*``); ``docs/events.md`` documents each.
#: v1.2 adds reference data (``instrument``, ``fx``) and ``position`` observations.
EVENT_TYPES: Final = (
    "parent",
    "new",
    "replace",
    "cancel",
    "reject",
    "fill",
    "mark",
    "heartbeat",
    "instrument",
    "fx",
    "position",
)
T_PARENT: Final = 0
T_NEW: Final = 1
T_REPLACE: Final = 2
T_CANCEL: Final = 3
T_REJECT: Final = 4
T_FILL: Final = 5
T_MARK: Final = 6
T_HEARTBEAT: Final = 7
T_INSTRUMENT: Final = 8
T_FX: Final = 9
T_POSITION: Final = 10
TYPE_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(EVENT_TYPES)}


# Transitions -------------------------------------------------------------------------
class Transition(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One kill-switch event, with the evidence for it.

    ``kind`` is ``auto`` (a rule breached), ``manual`` (an operator halted or
    resumed), ``alert`` (an alert-action rule breached, a warning level was crossed,
    or a system alert: no state change, so ``from`` equals ``to``) or ``resolve`` (an
    alert re-armed: ``ends`` names the alert it resolves). ``level`` is the warning
    level (a fraction of the limit) of a warning and its resolve; ``symbol`` the symbol
    a per-position metric was measured in (or a restricted order's). ``ts`` is the event time of the
    triggering event in ns since the epoch, UTC (for manual ones, the decision
    time); ``decided_ns`` is when riskguard decided. A resume carries in ``ends``
    the id of the transition it lifts; a four-eyes resume carries in ``approved_by``
    the risk-admin who approved it (``operator`` is the one who asked). ``value`` and
    ``limit`` are in the metric's unit (``docs/limits.md``). ``instance`` names the
    riskguard instance that decided it (``runtime.instance``; None in a replay): with
    two instances running active-active, both may decide the same automatic
    transition, under the same ``id`` (:func:`transition_id`).
    """

    id: str
    scope: str
    from_: str = msgspec.field(name="from")
    to: str
    kind: str
    ts: int
    decided_ns: int
    rule: str | None = None
    metric: str | None = None
    value: float | None = None
    limit: float | None = None
    level: float | None = None
    symbol: str | None = None
    operator: str | None = None
    reason: str | None = None
    ends: str | None = None
    approved_by: str | None = None
    instance: str | None = None

    @property
    def is_alert(self) -> bool:
        """True for an alert or its resolve (no state change)."""
        return self.kind in ("alert", "resolve")


def transition_id(scope: str, at_ns: int, to: str) -> str:
    """A stable id for a transition: ``<scope>@<at_ns>:<to>``.

    ``at_ns`` is the decision time of a manual transition or a system alert, and the
    event time of what triggered an automatic one (the triggering event's; for a feed
    silence, when the silence began), never the wall clock of the decision: two
    riskguard instances deciding the same breach on the same input give it the same id,
    so gates and notifiers see one halt (``docs/deployment.md``).
    """
    return f"{scope}@{at_ns}:{to}"


def system_alert(
    rule: str,
    metric: str,
    firm_state: str,
    *,
    value: float | None = None,
    limit: float | None = None,
    reason: str | None = None,
    now_ns: int | None = None,
) -> Transition:
    """An alert about riskguard itself (broker lost, limits rejected), scoped to the firm.

    ``now_ns`` defaults to the wall clock.
    """
    if now_ns is None:
        now_ns = time.time_ns()
    return Transition(
        id=transition_id("firm", now_ns, f"ALERT:{rule}"),
        scope="firm",
        from_=firm_state,
        to=firm_state,
        kind="alert",
        ts=now_ns,
        decided_ns=now_ns,
        rule=rule,
        metric=metric,
        value=value,
        limit=limit,
        reason=reason,
    )


MONEY_DECIMALS: Final = 6
"""Money is judged and shown to a millionth of a currency unit (below 1e9 units): binary
rounding residue of decimal sums must never decide a breach at a round limit."""


def money(x: float) -> float:
    """``x`` rounded to MONEY_DECIMALS decimals, half away from zero, while |x| < 1e9 (above,
    float precision is far finer than any amount that matters); NaN and inf unchanged.

    The kernel's :func:`riskguard.state.quantities.money` is the same rule in numba.
    """
    if not math.isfinite(x) or abs(x) >= 1e9:
        return x
    if x < 0.0:
        return -(math.floor(-x * 1e6 + 0.5) / 1e6)
    return math.floor(x * 1e6 + 0.5) / 1e6


def nanos(x: float) -> float:
    """``x`` x 1e9 as an exact integer when ``x`` is (to float error) a decimal of at most
    9 places below 1e6 in size, else NaN.

    Ratios of such decimals are judged as the quotient of these integers
    (:func:`price_deviation`, ``parent_overfill_ratio``): the float nearest to the
    decimal ratio, so a ratio equal to a decimal limit is that limit exactly (34.965
    against 33.3 is 5 %: |34.965 - 33.3| / 33.3 in floats is 0.05000000000000019). The
    kernel's :func:`riskguard.state.quantities.nanos` is the same rule in numba.
    """
    if not abs(x) < 1e6:
        return math.nan
    scaled = x * 1e9
    whole = float(math.floor(scaled + 0.5))
    return whole if abs(scaled - whole) <= 1e-6 + 4e-16 * abs(scaled) else math.nan


def price_deviation(price: float, ref: float) -> float:
    """|price - ref| / |ref| (``ref`` != 0), exact for decimal prices (:func:`nanos`)."""
    p, r = nanos(price), nanos(ref)
    if math.isnan(p) or math.isnan(r) or r == 0.0:
        return abs(price - ref) / abs(ref)
    return abs(p - r) / abs(r)
