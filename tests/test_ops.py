"""The ops files parse, and they reference only metrics riskguard exports."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import msgspec

from riskguard.metrics import Metrics
from riskguard.settings import EngineSettings, load_settings

OPS = Path(__file__).resolve().parents[1] / "ops"


def exported() -> set[str]:
    text = Metrics().exposition().decode()
    names = set(re.findall(r"^# TYPE (\w+) (\w+)", text, re.M))
    out = set()
    for name, kind in names:
        out.add(name)
        if kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return out


def test_alert_rules_and_dashboard_use_real_metrics() -> None:
    known = exported() | {"up"}
    rules = (OPS / "prometheus" / "riskguard-alerts.yml").read_text()
    dash = json.loads((OPS / "grafana" / "riskguard-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set(re.findall(r"\b(riskguard_\w+|up)\b", rules + " ".join(exprs)))
    assert used and used <= known, used - known
    for alert in (
        "RiskguardDown",
        "RiskguardFeedSilent",
        "RiskguardNotifierFailing",
        "RiskguardHaltInForce",
    ):
        assert f"alert: {alert}" in rules


def test_example_settings_load() -> None:
    data = tomllib.loads((OPS / "riskguard.toml").read_text())
    assert data["kafka"]["request_timeout_ms"] <= 2000
    settings = load_settings(OPS / "riskguard.toml", env={})
    assert len(settings.notifier) == 3 and settings.http.host == "127.0.0.1"


def test_example_settings_show_every_engine_setting_at_its_default() -> None:
    data = tomllib.loads((OPS / "riskguard.toml").read_text())
    defaults = msgspec.to_builtins(EngineSettings())
    assert data["engine"] == defaults
