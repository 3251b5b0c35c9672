"""Apache Kafka's distribution without starting it: version, cache, Java, the fetch
command without Maven, and the skip-or-fail contract of its tests (no Java needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from riskguard.apache_kafka import (
    HOW_TO_ENABLE,
    ApacheKafkaBroker,
    KafkaUnavailableError,
    cache_dir,
    classpath,
    fetch,
    java_binary,
    kafka_version,
)
from riskguard.apache_kafka.dist import POM, java_major
from riskguard.broker import EmbeddedBroker
from riskguard.brokers import make_broker
from riskguard.cli import main
from tests.integration.apache_kafka_fixtures import in_ci

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_java_no_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An environment with neither ``java`` nor ``mvn`` and an empty jar cache."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("RISKGUARD_KAFKA_HOME", str(tmp_path / "kafka"))
    java_binary.cache_clear()
    yield tmp_path / "kafka"
    java_binary.cache_clear()


def test_version_is_the_poms_and_a_kraft_only_release() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pinned = ET.parse(POM).getroot().findtext("m:properties/m:kafka.version", namespaces=ns)
    assert kafka_version() == pinned
    assert int(kafka_version().split(".")[0]) >= 4  # 4.x: KRaft only, no ZooKeeper


def test_pom_pins_every_version() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(POM).getroot()
    for dep in root.iterfind(".//m:dependency", ns):
        assert dep.findtext("m:version", namespaces=ns), ET.tostring(dep)
    for plugin in root.iterfind(".//m:plugin", ns):
        assert plugin.findtext("m:version", namespaces=ns), ET.tostring(plugin)


def test_cache_dir_honours_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RISKGUARD_KAFKA_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "riskguard" / f"apache-kafka-{kafka_version()}"
    monkeypatch.setenv("RISKGUARD_KAFKA_HOME", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_402"', 8),
        ("no version here", None),
    ],
)
def test_java_major(text: str, major: int | None) -> None:
    assert java_major(text) == major


def test_missing_or_incomplete_jars_say_how_to_fetch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RISKGUARD_KAFKA_HOME", str(tmp_path))
    with pytest.raises(KafkaUnavailableError, match="--kind apache-kafka --fetch"):
        classpath()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "kafka_2.13.jar").write_bytes(b"")
    (tmp_path / "classpath.txt").write_text("kafka_2.13.jar\nkafka-clients.jar\n")
    with pytest.raises(KafkaUnavailableError, match=r"incomplete \(missing kafka-clients.jar\)"):
        classpath()


def test_without_java_nothing_is_fetched_or_started(no_java_no_maven: Path) -> None:
    with pytest.raises(KafkaUnavailableError, match="needs Java") as caught:
        fetch()
    assert HOW_TO_ENABLE in str(caught.value)
    with pytest.raises(KafkaUnavailableError):
        ApacheKafkaBroker().start()
    assert not no_java_no_maven.exists()


def test_fetch_command_without_maven_says_so_and_succeeds(
    no_java_no_maven: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's one install command must keep working on a machine without Maven."""
    assert main(["broker", "--kind", "apache-kafka", "--fetch"]) == 0
    err = capsys.readouterr().err
    assert "Apache Kafka not fetched" in err and "apt-get install" in err
    assert main(["broker", "--fetch"]) == 2  # --fetch is for apache-kafka only


def test_make_broker_kinds() -> None:
    assert isinstance(make_broker(), EmbeddedBroker)  # Tansu stays the default
    kafka = make_broker("apache-kafka", port=19092)
    assert isinstance(kafka, ApacheKafkaBroker) and kafka.bootstrap_servers == "127.0.0.1:19092"
    assert not kafka.running()
    with pytest.raises(ValueError, match="unknown broker kind"):
        make_broker("zookeeper")  # type: ignore[arg-type]


def test_scram_users_are_checked() -> None:
    with pytest.raises(ValueError, match="SCRAM user"):
        ApacheKafkaBroker(scram_users={"alice": "pass,word]"})
    with pytest.raises(Exception, match="no SASL listener"):
        _ = ApacheKafkaBroker().sasl_bootstrap_servers


@pytest.mark.parametrize(
    ("value", "ci"), [("true", True), ("1", True), ("yes", True), ("", False), ("false", False)]
)
def test_ci_detection(monkeypatch: pytest.MonkeyPatch, value: str, ci: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


@pytest.mark.parametrize("ci", ["", "true"], ids=["skips-locally", "fails-in-ci"])
def test_apache_kafka_tests_skip_locally_and_fail_in_ci_without_java(
    ci: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PATH": str(tmp_path),  # neither java nor mvn
        "RISKGUARD_KAFKA_HOME": str(tmp_path / "kafka"),
        "CI": ci,
    }
    env.pop("JAVA_HOME", None)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-n", "0", "-rsfE", "-p", "no:cacheprovider"),
            *("tests/integration/test_apache_kafka.py", "-k", "broker_command"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    if ci:
        assert done.returncode == 1, out
        assert "CI is set: these tests may not skip" in out and "1 error" in out, out
    else:
        assert done.returncode == 0, out
        assert "1 skipped" in out and "To enable these tests" in out, out


def test_ci_runs_exactly_the_readme_install_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    install = next(b for b in blocks if "pip install" in b)
    test = next(b for b in blocks if "pytest" in b)
    assert "riskguard broker --kind apache-kafka --fetch" in install
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd ", "export "))
    ]
    assert ci == [install, test]
    assert 'export CI="${CI:-true}"' in (ROOT / ".ci" / "run").read_text()
