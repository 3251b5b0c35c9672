"""The ops files parse, and they reference only metrics riskguard exports."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import msgspec

from riskguard.metrics import Metrics
from riskguard.settings import EngineSettings, KafkaSettings, load_settings

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


def test_example_settings_show_the_topic_watch_settings_at_their_defaults() -> None:
    kafka = tomllib.loads((OPS / "riskguard.toml").read_text())["kafka"]
    defaults = msgspec.to_builtins(KafkaSettings())
    for name in ("topic_check_interval_s", "metadata_max_age_ms"):
        assert kafka[name] == defaults[name], name


def test_kubernetes_waits_out_the_first_compile_and_keeps_state_and_kernels() -> None:
    pod = (OPS / "kubernetes" / "trading-pod.yaml").read_text()
    container = pod.split("- name: riskguard\n", 1)[1].split("\n  volumes:", 1)[0]
    assert re.search(r"startupProbe:\n\s+httpGet: \{path: /readyz", container)
    assert re.search(r"livenessProbe:\n\s+httpGet: \{path: /livez", container)
    cache = re.search(r"\{name: NUMBA_CACHE_DIR, value: (\S+)\}", container)
    state = re.search(r'"--state-dir", "([^"]+)"', container)
    assert cache and state
    mounts = re.findall(r"\{name: ([\w-]+), mountPath: ([^,}]+)", container)
    by_path = {path: name for name, path in mounts}
    assert by_path[cache[1]] == by_path[state[1]] == "state"
    volumes = pod.split("\n  volumes:", 1)[1]
    assert re.search(r"- name: state\n\s+persistentVolumeClaim:", volumes)
    assert "emptyDir" not in volumes  # nothing riskguard keeps is lost with the pod


def test_the_kubernetes_pair_runs_two_named_instances_each_with_its_own_state() -> None:
    pair = (OPS / "kubernetes" / "riskguard-pair.yaml").read_text()
    sts = pair.split("\n---\n", 1)[0]
    assert "kind: StatefulSet" in sts and re.search(r"\n  replicas: 2\n", sts)
    env = dict(re.findall(r"\{name: (\w+), value: \"?([^\"}]+)\"?\}", sts))
    assert env["RISKGUARD_INSTANCE"] == "$(POD_NAME)"  # each its own name on the topic
    assert env["RISKGUARD_KAFKA_GROUP_ID"] == "riskguard-$(POD_NAME)"
    assert "fieldPath: metadata.name" in sts
    assert re.search(r"startupProbe:\n\s+httpGet: \{path: /readyz", sts)
    assert re.search(r"livenessProbe:\n\s+httpGet: \{path: /livez", sts)
    mounts = re.findall(r"\{name: ([\w-]+), mountPath: ([^,}]+)", sts)
    state = re.search(r'"--state-dir", "([^"]+)"', sts)
    cache = re.search(r"\{name: NUMBA_CACHE_DIR, value: (\S+)\}", sts)
    assert state and cache and {("state", state[1]), ("state", cache[1])} <= set(mounts)
    # the state volume is one claim per pod, never shared and never lost with the pod
    claims = sts.split("volumeClaimTemplates:", 1)[1]
    assert re.search(r"- metadata: \{name: state\}", claims)
    assert "persistentVolumeClaim" not in sts and "emptyDir" not in sts
    assert "kind: PodDisruptionBudget" in pair and "maxUnavailable: 1" in pair
    # the instances' names are the env var riskguard reads
    assert load_settings(env={"RISKGUARD_INSTANCE": "riskguard-0"}).runtime.instance == (
        "riskguard-0"
    )


def test_systemd_and_the_example_settings_agree_on_the_state_directory() -> None:
    unit = (OPS / "systemd" / "riskguard.service").read_text()
    assert "StateDirectory=riskguard" in unit  # $STATE_DIRECTORY: riskguard's default
    assert (
        "NUMBA_CACHE_DIR=/var/cache/riskguard/numba" in unit and "CacheDirectory=riskguard" in unit
    )
    rt = load_settings(OPS / "riskguard.toml", env={}).runtime
    assert rt.state_path == Path("/var/lib/riskguard")
    assert rt.journal_path == Path("/var/lib/riskguard/journal.jsonl")
    assert rt.snapshot_path == Path("/var/lib/riskguard/snapshots")


def test_the_kubernetes_group_runs_members_of_one_group_under_stable_names() -> None:
    group = (OPS / "kubernetes" / "riskguard-group.yaml").read_text()
    sts = group.split("\n---\n", 1)[0]
    assert "kind: StatefulSet" in sts and re.search(r"\n  replicas: 3\n", sts)
    env = dict(re.findall(r"\{name: (\w+), value: \"?([^\"}]+)\"?\}", sts))
    assert env["RISKGUARD_INSTANCE"] == "$(POD_NAME)"  # stable: its static membership id
    assert env["RISKGUARD_KAFKA_GROUP_ID"] == "riskguard"  # one group shared by all
    assert env["RISKGUARD_SCALE_MODE"] == "group"
    # a member gaining a partition restores it from the checkpoint any member wrote
    shared = env["RISKGUARD_SCALE_CHECKPOINT_DIR"]
    assert f"{{name: checkpoints, mountPath: {shared}}}" in sts
    assert "claimName: riskguard-checkpoints" in sts
    claim = group.split("name: riskguard-checkpoints\n", 1)[1].split("\n---\n", 1)[0]
    assert "accessModes: [ReadWriteMany]" in claim
    assert load_settings(env={"RISKGUARD_SCALE_CHECKPOINT_DIR": shared}).scale.checkpoint_dir == (
        shared
    )
    claims = sts.split("volumeClaimTemplates:", 1)[1]  # snapshots survive a restart
    assert re.search(r"- metadata: \{name: state\}", claims)
    assert "kind: PodDisruptionBudget" in group and "maxUnavailable: 1" in group
    settings = load_settings(
        env={"RISKGUARD_SCALE_MODE": "group", "RISKGUARD_KAFKA_GROUP_ID": "riskguard"}
    )
    assert settings.scale.group and settings.scale.static_membership
