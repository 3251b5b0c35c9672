"""Read and validate a limits file, collecting every problem before giving up.

A limits file is reviewed by people and swapped in while money is at risk, so
validation is strict: unknown keys are errors, every error names the file, the
rule (by name and position) and the field, and nothing is half-accepted.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any

from riskguard.limits.model import Limits, Rule
from riskguard.limits.vocabulary import (
    EVENT_MATCH_FIELDS,
    LISTED_METRICS,
    MATCH_FIELDS,
    METRICS,
    NONNEGATIVE_METRICS,
    SCOPES,
)
from riskguard.vocabulary import ACTIONS

TOP_KEYS = frozenset(
    {"version", "revalue_ms", "cancel_deadline_ms", "base_currency", "rule", "restricted"}
)
CURRENCY = re.compile(r"^[A-Z]{3}$")
MIC = re.compile(r"^[A-Z0-9]{4}$")
MAX_WARN_LEVELS = 4
RESTRICTED_KEYS = frozenset(
    {"name", "symbols", "reason", "accounts", "strategies", "action", "description"}
)
REVALUE_MAX_MS = 60_000
DEFAULT_REVALUE_MS = 100
CANCEL_DEADLINE_MAX_MS = 600_000
DEFAULT_CANCEL_DEADLINE_MS = 1000
RULE_KEYS = frozenset(
    {
        "name",
        "metric",
        "scope",
        "match",
        "max",
        "min",
        "window_ms",
        "action",
        "min_orders",
        "description",
        "warn_at",
        "rearm",
    }
)
MAX_WINDOW_MS = 24 * 3600 * 1000


class LimitsError(ValueError):
    """A limits file that cannot be used. ``problems`` lists every error found; the
    message is one line for one problem (``<source>: <problem>``), else a count and a line
    each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f"{source}: {problems[0]}")
            return
        super().__init__(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))


class LimitsUnreadableError(LimitsError):
    """The limits file could not be read at all (missing, a folder, no permission).

    Its message is one line: ``<path>: cannot read file: <reason>``.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(source, problems)
        self.args = (f"{source}: {'; '.join(problems)}",)


def load(path: str | Path) -> Limits:
    """Load and validate the limits file at ``path``.

    Raises :class:`LimitsUnreadableError` when it cannot be read, and
    :class:`LimitsError` (every problem listed) when it is not valid.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise LimitsUnreadableError(str(p), [f"cannot read file: {exc.strerror or exc}"]) from exc
    return parse(data, source=str(p))


def toml_text(value: Any) -> str:
    """``value`` as it is written in TOML (``true``, ``'x'``, ``[1, 2]``, a table), for
    messages about a limits file: never Python's ``True`` or ``None``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # a TOML literal string when it can be one
        if "'" not in value and "\n" not in value:
            return f"'{value}'"
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a table"
    return str(value)


def _got(value: Any) -> str:
    """``got <value>`` in TOML words, or ``it is missing``."""
    return "it is missing" if value is None else f"got {toml_text(value)}"


def parse(data: bytes | str, source: str = "<memory>") -> Limits:
    """Validate limits given as TOML text."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise LimitsError(source, [f"file is not UTF-8 (byte {exc.start})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise LimitsError(source, [f"TOML syntax: {exc}"]) from exc
    problems: list[str] = []
    for key in sorted(set(doc) - TOP_KEYS):
        allowed = ", ".join(sorted(TOP_KEYS))
        problems.append(f"unknown top-level key {key!r} (allowed: {allowed})")
    version = doc.get("version")
    if isinstance(version, bool) or version != 1:
        problems.append(f"'version' must be 1, {_got(version)}")
    revalue = doc.get("revalue_ms", DEFAULT_REVALUE_MS)
    if isinstance(revalue, bool) or not isinstance(revalue, int):
        problems.append(f"'revalue_ms' must be an integer number of milliseconds, {_got(revalue)}")
    elif not 0 <= revalue <= REVALUE_MAX_MS:
        problems.append(f"'revalue_ms' must be between 0 and {REVALUE_MAX_MS}, got {revalue}")
    base = doc.get("base_currency", "USD")
    if not isinstance(base, str) or not CURRENCY.match(base):
        problems.append(f"'base_currency' must be an ISO 4217 code such as 'USD', got {base!r}")
    deadline = doc.get("cancel_deadline_ms", DEFAULT_CANCEL_DEADLINE_MS)
    if isinstance(deadline, bool) or not isinstance(deadline, int):
        problems.append(
            f"'cancel_deadline_ms' must be an integer number of milliseconds, got {deadline!r}"
        )
    elif not 0 <= deadline <= CANCEL_DEADLINE_MAX_MS:
        problems.append(
            f"'cancel_deadline_ms' must be between 0 and {CANCEL_DEADLINE_MAX_MS}, got {deadline}"
        )
    entries = doc.get("rule", [])
    if not isinstance(entries, list):
        problems.append("'rule' must be an array of tables ([[rule]])")
        entries = []
    listed = doc.get("restricted", [])
    if not isinstance(listed, list):
        problems.append("'restricted' must be an array of tables ([[restricted]])")
        listed = []
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries, 1):
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name in seen:
            problems.append(f"rule {name!r} (#{i}): field 'name': duplicate of rule #{seen[name]}")
        elif isinstance(name, str):
            seen[name] = i
        rule = _rule(entry, i, problems)
        if rule is not None:
            rules.append(rule)
    restricted: list[Rule] = []
    for i, entry in enumerate(listed, 1):
        item = _restricted(entry, i, problems)
        if item is None:
            continue
        if item.name in seen:
            problems.append(
                f"restricted {item.name!r} (#{i}): field 'name': "
                f"the name of rule #{seen[item.name]}"
            )
        seen[item.name] = i
        restricted.append(item)
    if problems:
        raise LimitsError(source, problems)
    return Limits(
        1,
        tuple(rules),
        source,
        hashlib.sha256(raw).hexdigest(),
        revalue,
        deadline,
        base_currency=str(base),
        restricted=tuple(restricted),
    )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _rule(entry: Any, i: int, problems: list[str]) -> Rule | None:
    if not isinstance(entry, dict):
        problems.append(f"rule #{i}: must be a table")
        return None
    name = entry.get("name")
    label = f"rule {name!r} (#{i})" if isinstance(name, str) and name else f"rule #{i}"
    before = len(problems)

    def bad(fld: str, msg: str) -> None:
        problems.append(f"{label}: field {fld!r}: {msg}")

    for key in sorted(set(entry) - RULE_KEYS):
        bad(key, f"unknown field (allowed: {', '.join(sorted(RULE_KEYS))})")
    if not isinstance(name, str) or not name.strip():
        bad("name", "required, a non-empty string")
    metric = entry.get("metric")
    spec = METRICS.get(metric) if isinstance(metric, str) else None
    if metric in LISTED_METRICS:
        spec = None
        bad("metric", f"{metric!r} comes from [[{metric}]] entries, not from a [[rule]]")
    elif spec is None:
        what = "required" if metric is None else f"unknown metric {toml_text(metric)}"
        names = ", ".join(m for m in METRICS if m not in LISTED_METRICS)
        bad("metric", f"{what} (one of: {names})")
    scope = entry.get("scope")
    if scope not in SCOPES:
        bad("scope", f"must be one of {', '.join(SCOPES)}, {_got(scope)}")
    elif spec is not None and scope not in spec.scopes:
        bad("scope", f"metric {metric!r} supports scopes {', '.join(spec.scopes)}, not {scope!r}")
    action = entry.get("action")
    if action not in ACTIONS:
        bad("action", f"must be one of {', '.join(ACTIONS)}, {_got(action)}")
    hi, lo = entry.get("max"), entry.get("min")
    for fld, v in (("max", hi), ("min", lo)):
        if v is not None and not _number(v):
            bad(fld, f"must be a finite number, {_got(v)}")
    if hi is None and lo is None:
        bad("max", "a rule needs 'max' (upper bound), 'min' (lower bound) or both")
    elif hi is not None and lo is not None and _number(hi) and _number(lo) and lo > hi:
        bad("min", f"min ({lo}) is above max ({hi}): the rule would always breach")
    if spec is not None and spec.name in NONNEGATIVE_METRICS:
        if hi is not None and _number(hi) and hi < 0:
            bad(
                "max",
                f"{hi} is below 0, and {metric!r} never is: the rule would breach on "
                "every evaluation (max = 0 refuses any)",
            )
        if lo is not None and _number(lo) and lo < 0:
            bad("min", f"{lo} is below 0, and {metric!r} never is: the rule could never breach")
    window = entry.get("window_ms")
    if spec is not None:
        if spec.windowed:
            if window is None:
                bad("window_ms", f"required for windowed metric {metric!r}")
            elif (
                isinstance(window, bool)
                or not isinstance(window, int)
                or not (1 <= window <= MAX_WINDOW_MS)
            ):
                bad("window_ms", f"must be an integer from 1 to {MAX_WINDOW_MS}, {_got(window)}")
        elif window is not None:
            bad("window_ms", f"not allowed: metric {metric!r} is not windowed")
    min_orders = entry.get("min_orders", 1)
    if "min_orders" in entry and metric != "cancel_ratio":
        bad("min_orders", "only allowed for metric 'cancel_ratio'")
    elif isinstance(min_orders, bool) or not isinstance(min_orders, int) or min_orders < 1:
        bad("min_orders", f"must be an integer >= 1, {_got(min_orders)}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        bad("description", "must be a string")
    match = _match(entry.get("match"), scope, metric, bad)
    warn_at = _warn_at(entry.get("warn_at"), hi, lo, bad)
    rearm = entry.get("rearm")
    if rearm is not None and (not _number(rearm) or not 0 <= rearm < 1):
        bad("rearm", f"must be a fraction of the limit, 0 up to (not including) 1, got {rearm!r}")
    if len(problems) > before:
        return None
    assert isinstance(name, str) and isinstance(metric, str)
    return Rule(
        name=name,
        metric=metric,
        scope=str(scope),
        action=str(action),
        max=None if hi is None else float(hi),
        min=None if lo is None else float(lo),
        window_ms=window,
        match=match,
        min_orders=int(min_orders),
        description=description,
        warn_at=warn_at,
        rearm=None if rearm is None else float(rearm),
    )


def _warn_at(raw: Any, hi: Any, lo: Any, bad: Any) -> tuple[float, ...]:
    """Validated warning levels: ascending fractions in (0, 1), at most MAX_WARN_LEVELS."""
    if raw is None:
        return ()
    if (
        not isinstance(raw, list)
        or not raw
        or not all(_number(f) and 0 < f < 1 for f in raw)
        or len(raw) > MAX_WARN_LEVELS
    ):
        bad(
            "warn_at",
            f"must be a list of 1 to {MAX_WARN_LEVELS} fractions of the limit between 0 and 1, "
            f"e.g. [0.5, 0.75, 0.9], got {raw!r}",
        )
        return ()
    if any(b <= a for a, b in itertools.pairwise(raw)):
        bad("warn_at", f"levels must be strictly ascending, got {raw!r}")
        return ()
    upper = _number(hi) and hi > 0
    lower = _number(lo) and lo < 0
    if not (upper or lower):
        bad("warn_at", "needs a positive 'max' or a negative 'min': levels are fractions of it")
        return ()
    return tuple(float(f) for f in raw)


def _strings(v: Any) -> list[str] | None:
    values = [v] if isinstance(v, str) else v
    if not isinstance(values, list) or not values:
        return None
    if not all(isinstance(x, str) and x for x in values):
        return None
    return list(dict.fromkeys(values))


def _restricted(entry: Any, i: int, problems: list[str]) -> Rule | None:
    """One [[restricted]] entry, as a rule of metric ``restricted`` at strategy scope."""
    if not isinstance(entry, dict):
        problems.append(f"restricted #{i}: must be a table")
        return None
    name = entry.get("name", f"restricted-{i}")
    label = f"restricted {name!r} (#{i})"
    before = len(problems)

    def bad(fld: str, msg: str) -> None:
        problems.append(f"{label}: field {fld!r}: {msg}")

    for key in sorted(set(entry) - RESTRICTED_KEYS):
        bad(key, f"unknown field (allowed: {', '.join(sorted(RESTRICTED_KEYS))})")
    if not isinstance(name, str) or not name.strip():
        bad("name", "must be a non-empty string")
    symbols = _strings(entry.get("symbols"))
    if symbols is None:
        bad("symbols", "required, a non-empty list of symbols")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        bad("reason", "required: why these symbols are restricted (shown in the evidence)")
    match: dict[str, tuple[str, ...]] = {"symbol": tuple(symbols or ())}
    for fld, key in (("accounts", "account"), ("strategies", "strategy")):
        if fld in entry:
            values = _strings(entry[fld])
            if values is None:
                bad(fld, "must be a non-empty list of names")
            else:
                match[key] = tuple(values)
    action = entry.get("action", "halt")
    if action not in ACTIONS:
        bad("action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        bad("description", "must be a string")
    if len(problems) > before:
        return None
    return Rule(
        name=str(name),
        metric="restricted",
        scope="strategy",
        action=str(action),
        max=0.0,
        match=MappingProxyType(match),
        description=description,
        reason=str(reason),
    )


def _match(raw: Any, scope: Any, metric: Any, bad: Any) -> MappingProxyType[str, tuple[str, ...]]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        bad("match", 'must be a table, e.g. { strategy = "smars" }')
        return MappingProxyType({})
    allowed = MATCH_FIELDS.get(scope, ()) if isinstance(scope, str) else ()
    if metric == "feed_silence_ms":
        allowed = ("source",)
    spec = METRICS.get(metric) if isinstance(metric, str) else None
    if spec is not None and spec.by_event:
        allowed = tuple(dict.fromkeys((*allowed, *EVENT_MATCH_FIELDS)))
    out: dict[str, tuple[str, ...]] = {}
    for key, value in raw.items():
        if key not in allowed and key in EVENT_MATCH_FIELDS:
            per_event = ", ".join(m.name for m in METRICS.values() if m.by_event)
            bad(
                f"match.{key}",
                f"selects orders and fills, so it applies only to metrics measured per order "
                f"or fill ({per_event}), not to {metric!r}",
            )
            continue
        if key not in allowed:
            what = ", ".join(allowed) if allowed else "none"
            bad(f"match.{key}", f"not a match field for scope {scope!r} (allowed: {what})")
            continue
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v for v in values)
        ):
            bad(f"match.{key}", "must be a non-empty string or a non-empty list of them")
            continue
        if key == "side" and not set(values) <= {"buy", "sell"}:
            bad("match.side", f"must be 'buy' or 'sell', got {value!r}")
            continue
        if key == "venue" and not all(MIC.match(v) for v in values):
            bad("match.venue", f"must be ISO 10383 MICs (4 capitals or digits), got {value!r}")
            continue
        out[key] = tuple(dict.fromkeys(values))
    return MappingProxyType(out)
