"""Limits files: the model, the vocabulary and the validating loader."""

from riskguard.limits.load import LimitsError, LimitsUnreadableError, load, parse
from riskguard.limits.model import Limits, Rule
from riskguard.limits.vocabulary import METRICS, SCOPES
from riskguard.vocabulary import ACTIONS

__all__ = [
    "ACTIONS",
    "METRICS",
    "SCOPES",
    "Limits",
    "LimitsError",
    "LimitsUnreadableError",
    "Rule",
    "load",
    "parse",
]
