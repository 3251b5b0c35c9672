"""The metric spec (riskguard.limits.vocabulary) is the one definition: docs and code follow it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from riskguard.limits.vocabulary import (
    COUNTER_CODES,
    COUNTER_KINDS,
    METRICS,
    MetricSpec,
    metrics_moved_by,
)
from riskguard.vocabulary import EVENT_TYPES

LIMITS_MD = Path(__file__).resolve().parents[2] / "docs" / "limits.md"
HEADER = "| metric | window | definition | evaluated on |"
SAME_AS = re.compile(r"^as `(\w+)`$")


def docs_metric_table() -> list[list[str]]:
    """The rows of the metric table in docs/limits.md, as stripped cells.

    The table runs from its header to the first line that is not a table row, so a
    blank line inside it cuts it short (and the metric names then disagree).
    """
    lines = LIMITS_MD.read_text().splitlines()
    assert lines.count(HEADER) == 1, f"one metric table headed {HEADER!r} in {LIMITS_MD}"
    start = lines.index(HEADER) + 2  # header and |---| separator
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 4, line
        rows.append(cells)
    return rows


def docs_columns() -> dict[str, tuple[str, str]]:
    """metric name -> (window cell, evaluated-on cell with ``as `other``` resolved)."""
    table: dict[str, tuple[str, str]] = {}
    for name_cell, window, _definition, evaluated in docs_metric_table():
        name = name_cell.strip("`")
        assert name_cell == f"`{name}`" and name not in table, name_cell
        table[name] = (window, evaluated)
    resolved = {}
    for name, (window, cell) in table.items():
        same = SAME_AS.match(cell)
        if same:
            assert same[1] in table, f"{name}: 'as `{same[1]}`' names no row"
        resolved[name] = (window, table[same[1]][1] if same else cell)
    return resolved


def evaluated_on_words(spec: MetricSpec) -> str:
    """The docs' wording of when ``spec`` is evaluated."""
    parts = ["every event (before it counts)"] if spec.every_event else []
    parts += spec.evaluated_on
    if spec.exposure:
        parts.append("and the revaluation of a held symbol")
    if spec.on_tick:
        parts.append("and the clock tick")
    if spec.live_only:
        parts.append("live runs only")
    return ", ".join(parts)


def window_words(spec: MetricSpec) -> str:
    """The docs' wording of the window column of ``spec``."""
    words = "yes" if spec.windowed else "no"
    return words + (", firm only" if spec.scopes == ("firm",) else "")


def test_docs_table_lists_every_metric_once() -> None:
    assert sorted(docs_columns()) == sorted(METRICS)


@pytest.mark.parametrize("name", list(METRICS))
def test_docs_columns_follow_the_spec(name: str) -> None:
    spec = METRICS[name]
    window, evaluated = docs_columns()[name]
    assert window == window_words(spec), f"docs/limits.md window column of {name}"
    assert evaluated == evaluated_on_words(spec), f"docs/limits.md evaluated-on of {name}"


def test_every_metric_is_evaluated_at_some_point() -> None:
    for spec in METRICS.values():
        assert spec.evaluated_on or spec.every_event, spec.name


def test_moved_by_inverts_evaluated_on() -> None:
    for t in EVENT_TYPES:
        moved = {m.name for m in METRICS.values() if t in m.evaluated_on and not m.listed}
        assert metrics_moved_by(t) == moved
    assert metrics_moved_by("mark") == metrics_moved_by("heartbeat") == frozenset()
    with pytest.raises(ValueError, match="unknown event type"):
        metrics_moved_by("quote")


def test_counter_codes_are_positions_in_counter_kinds() -> None:
    for name, (num, den) in COUNTER_CODES.items():
        counters = METRICS[name].counters
        assert counters is not None
        assert COUNTER_KINDS[num] == counters[0]
        assert (None if den is None else COUNTER_KINDS[den]) == counters[1]
    assert set(COUNTER_CODES) == {m.name for m in METRICS.values() if m.windowed}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"evaluated_on": ("quote",)}, "unknown event type"),
        ({"evaluated_on": ("fill", "new")}, "order of EVENT_TYPES"),
        ({"evaluated_on": ("new", "new")}, "order of EVENT_TYPES"),
        ({"windowed": True}, "counters exactly when"),
        ({"counters": ("new", None)}, "counters exactly when"),
        ({"windowed": True, "counters": ("orders", None)}, "counter kinds"),
        ({"on_tick": True}, "every_event"),
    ],
)
def test_inconsistent_spec_is_refused(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "name": "x",
        "code": 99,
        "windowed": False,
        "scopes": ("firm",),
        "unit": "orders",
        "definition": "x",
    }
    with pytest.raises(ValueError, match=message):
        MetricSpec(**{**base, **fields})  # type: ignore[arg-type]


def test_docs_name_the_metrics_that_take_bounds_below_zero() -> None:
    text = " ".join(LIMITS_MD.read_text().split())
    found = re.search(r"which is all of them except (.*?): a `max` below 0", text)
    assert found, "docs/limits.md: the sentence on bounds below 0 is gone"
    named = set(re.findall(r"`(\w+)`", found[1]))
    assert named == {m.name for m in METRICS.values() if m.signed}
