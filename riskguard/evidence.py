"""Evidence as people read it: a value shown against its limit, never "1 vs limit 1".

A breach is only convincing when the numbers on the page differ: a parent filled to
1.0000000000000002 of its quantity, shown with six significant digits, reads "1 vs
limit 1". :func:`versus` formats a value and its limit together with just enough
significant digits (6 at first, up to 17, which tells any two doubles apart) that
they look different when they are different; equal numbers always print equal.
:func:`evidence` is the one sentence for a transition that the gate's refusal reason,
the notifiers, ``riskguard status`` and the demo share.

Standard library and :mod:`riskguard.vocabulary` only: the gate imports this, and a
trading process that embeds the gate never loads numpy.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final

from riskguard.vocabulary import Transition

__all__ = [
    "MAX_DIGITS",
    "MIN_DIGITS",
    "evidence",
    "number",
    "percent",
    "ratio",
    "sentence",
    "versus",
    "when",
]

MIN_DIGITS: Final = 6
"""Significant digits shown when they suffice."""
MAX_DIGITS: Final = 17
"""Enough significant digits to tell any two distinct doubles apart."""


def _shortest(x: float) -> int:
    """The fewest significant digits that give ``x`` back exactly (at most 17)."""
    for digits in range(1, MAX_DIGITS):
        if float(f"{x:.{digits}g}") == x:
            return digits
    return MAX_DIGITS


def number(x: float | None, digits: int = MIN_DIGITS) -> str:
    """``x`` with ``digits`` significant digits and thousands separators; ``"-"`` for None.

    Whole digits are never cut: 3,110,800 prints in full rather than as ``3.1108e+06``,
    and digits beyond the whole ones become decimals (``2,000,000.5``). Minus zero prints
    as ``0``. Non-finite values print as ``inf``, ``-inf`` or ``nan``.
    """
    if x is None:
        return "-"
    x += 0.0  # -0.0 -> 0.0
    if not math.isfinite(x) or x == 0.0:
        return f"{x:g}"
    digits = min(digits, _shortest(x))  # 0.3 stays 0.3 at 17 digits, not 0.29999999999999999
    whole = math.floor(math.log10(abs(x))) + 1  # digits before the decimal point
    if whole >= digits:
        return f"{x:,.0f}"
    return f"{x:,.{digits}g}"


def versus(value: float | None, limit: float | None) -> tuple[str, str]:
    """``value`` and ``limit`` formatted so that they differ on the page when they differ.

    Starts at :data:`MIN_DIGITS` significant digits and adds one at a time, up to
    :data:`MAX_DIGITS`, while the two texts are equal but the numbers are not. None
    prints as ``"-"``. Example: ``versus(1.0000000000000002, 1.0)`` is
    ``("1.0000000000000002", "1")``; ``versus(2011.194586, 2000.0)`` is
    ``("2,011.19", "2,000")``.
    """
    digits = MIN_DIGITS
    a, b = number(value, digits), number(limit, digits)
    if value is None or limit is None:
        return a, b
    while a == b and value != limit and digits < MAX_DIGITS:
        digits += 1
        a, b = number(value, digits), number(limit, digits)
    return a, b


def ratio(utilisation: float | None) -> str:
    """A peak / limit ratio with two decimals (``"-"`` for None), more when two decimals
    would show ``1.00`` for a ratio that is not exactly 1 (over or under the limit)."""
    if utilisation is None:
        return "-"
    utilisation += 0.0  # -0.0 -> 0.0
    text = f"{utilisation:.2f}"
    if text == "-0.00":
        text = "0.00"
    if text != "1.00" or utilisation == 1.0:
        return text
    digits = MIN_DIGITS
    while digits < MAX_DIGITS and number(utilisation, digits) == number(1.0, digits):
        digits += 1
    return number(utilisation, digits)


def sentence(
    rule: str | None,
    metric: str | None,
    value: float | None,
    limit: float | None,
    reason: str | None = None,
) -> str:
    """``rule R: metric V vs limit L`` (then ``; reason`` when there is one).

    The value-against-limit part is left out when both are None (a system alert such as
    a rejected limits reload carries only its reason).
    """
    text = f"rule {rule or '?'}: {metric or '?'}"
    if value is not None or limit is not None:
        v, lim = versus(value, limit)
        text += f" {v} vs limit {lim}"
    if reason:
        text += f"; {reason}"
    return text


def percent(level: float) -> str:
    """A warning level as people say it: 0.75 -> ``75%``, 0.125 -> ``12.5%``."""
    return f"{number(level * 100.0)}%"


def evidence(tr: Transition) -> str:
    """Why ``tr`` happened, in one line.

    ``by OPERATOR: REASON`` for an operator's decision; for a warning level ``rule R:
    metric V reached 75% of limit L``; for a resolve, the value it is back to; for an
    order in a restricted symbol, the symbol and the list's reason; else
    :func:`sentence` of its rule, metric, value, limit and reason. A per-position value
    names its symbol (``... in symbol ES``).
    """
    if tr.kind == "manual":
        return f"by {tr.operator}: {tr.reason}"
    where = f" in symbol {tr.symbol}" if tr.symbol and tr.metric != "restricted" else ""
    if tr.metric == "restricted":
        return f"rule {tr.rule}: order or fill in restricted symbol {tr.symbol}; {tr.reason}"
    if tr.kind == "resolve":
        v, lim = versus(tr.value, tr.limit)
        if tr.level is not None:
            below = f"below the {percent(tr.level)} warning of limit {lim}"
        else:
            below = f"within limit {lim}"
        return f"rule {tr.rule}: {tr.metric} back to {v}{where}, {below}"
    if tr.level is not None:
        v, lim = versus(tr.value, tr.limit)
        text = f"rule {tr.rule}: {tr.metric} {v}{where} reached {percent(tr.level)} of limit {lim}"
        return text + (f"; {tr.reason}" if tr.reason else "")
    if where:
        return sentence(tr.rule, tr.metric, tr.value, tr.limit, tr.reason).replace(
            " vs limit", f"{where} vs limit", 1
        )
    return sentence(tr.rule, tr.metric, tr.value, tr.limit, tr.reason)


def when(ns: int | None) -> str:
    """A time in ns since the epoch as people read it: ``2026-11-27 14:03:07.123 UTC``
    (UTC, millisecond resolution; ``"-"`` for None or a negative time)."""
    if ns is None or ns < 0:
        return "-"
    stamp = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{ns // 1_000_000 % 1000:03d} UTC"
