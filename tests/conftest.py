"""Shared fixtures: kernels compiled once per session, and an engine factory."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from riskguard.engine import Engine, warm_up
from riskguard.limits import parse
from riskguard.testing import FakeClock
from tests.builders import rules_toml


@pytest.fixture(scope="session", autouse=True)
def _compiled() -> None:
    warm_up()


@pytest.fixture
def engine_for() -> Callable[..., Engine]:
    """``engine_for(rule_body, ...)`` -> an Engine over those rules and a FakeClock."""

    def make(*rules: str, clock: FakeClock | None = None) -> Engine:
        return Engine(parse(rules_toml(*rules)), clock=clock or FakeClock())

    return make


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``-n 2 --dist loadgroup`` (pytest-xdist), every broker test runs on one
    worker: the session's brokers start once, and the CPU-bound tests share the other
    core."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.xdist_group("brokers"))
