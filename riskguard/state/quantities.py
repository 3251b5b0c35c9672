"""Quantity and money arithmetic of the kernel: decimal sums that add up, equality of
quantities, money as it is judged.

numba helpers (:data:`riskguard.state.jit.helper`); the reference model spells the same
rules out in :mod:`riskguard.state.reference_defs`. See QTY_DECIMALS, QTY_EXACT_BELOW,
QTY_RTOL, MONEY_DECIMALS and MONEY_EXACT_BELOW in :mod:`riskguard.state.codes`.
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.state.codes import MONEY_EXACT_BELOW, QTY_EXACT_BELOW, QTY_RTOL
from riskguard.state.jit import helper


@helper
def snap(x):  # type: ignore[no-untyped-def]
    """A quantity sum rounded to QTY_DECIMALS decimals (while below QTY_EXACT_BELOW)."""
    if abs(x) >= QTY_EXACT_BELOW:
        return x
    return math.floor(x * 1e9 + 0.5) / 1e9


@helper
def near(a, b):  # type: ignore[no-untyped-def]
    """Whether quantities ``a`` and ``b`` are equal: exactly below QTY_EXACT_BELOW (sums
    there are exact decimals), within QTY_RTOL of the larger above it."""
    big = max(abs(a), abs(b))
    if big < QTY_EXACT_BELOW:
        return a == b
    return abs(a - b) <= QTY_RTOL * big


@helper
def money(x):  # type: ignore[no-untyped-def]
    """A money value as it is judged: rounded to MONEY_DECIMALS decimals (half away from
    zero) while below MONEY_EXACT_BELOW; NaN stays NaN."""
    if math.isnan(x) or abs(x) >= MONEY_EXACT_BELOW:
        return x
    if x < 0.0:
        return -(math.floor(-x * 1e6 + 0.5) / 1e6)
    return math.floor(x * 1e6 + 0.5) / 1e6


@helper
def nanos(x):  # type: ignore[no-untyped-def]
    """``x`` x 1e9 as an exact integer when ``x`` is (to float error) a decimal of at most
    9 places below 1e6 in size, else NaN: ratios of decimals are judged as quotients of
    these integers, the float nearest to the decimal ratio
    (:func:`riskguard.vocabulary.nanos` in Python)."""
    if not abs(x) < 1e6:
        return np.nan
    scaled = x * 1e9
    whole = math.floor(scaled + 0.5)
    if abs(scaled - whole) <= 1e-6 + 4e-16 * abs(scaled):
        return whole
    return np.nan


@helper
def price_deviation(price, ref):  # type: ignore[no-untyped-def]
    """|price - ref| / |ref| (``ref`` != 0), exact for decimal prices (:func:`nanos`)."""
    p = nanos(price)
    r = nanos(ref)
    if math.isnan(p) or math.isnan(r) or r == 0.0:
        return abs(price - ref) / abs(ref)
    return abs(p - r) / abs(r)


@helper
def fill_ratio(filled, qty):  # type: ignore[no-untyped-def]
    """filled / qty (``qty`` > 0), exact for decimal quantities (:func:`nanos`)."""
    f = nanos(filled)
    q = nanos(qty)
    if math.isnan(f) or math.isnan(q) or q == 0.0:
        return filled / qty
    return f / q
