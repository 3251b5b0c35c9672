"""The Apache Kafka distribution: Java, and the server jars fetched from Maven Central.

No tarball and no download from anywhere but Maven Central: ``pom.xml`` beside this
module pins ``org.apache.kafka:kafka_2.13`` and a log4j2 binding, and :func:`fetch`
runs ``mvn dependency:copy-dependencies`` to copy them, with every runtime
dependency, into the cache directory::

    ~/.cache/riskguard/apache-kafka-<version>/   ($XDG_CACHE_HOME is honoured;
        lib/*.jar                                  $RISKGUARD_KAFKA_HOME overrides
        classpath.txt   (written last: the jars,   the whole path)
                         in order; marks a complete fetch)

A fetch goes to a temporary directory beside the cache and is renamed into place,
so an interrupted or concurrent fetch never leaves a half-filled cache behind.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from riskguard.broker import BrokerError

POM = Path(__file__).with_name("pom.xml")
#: Kafka 4.x brokers need Java 17 or newer.
MIN_JAVA = 17
CLASSPATH_FILE = "classpath.txt"
HOW_TO_ENABLE = (
    "install a JDK (17 or newer) and Maven (Debian: apt-get install openjdk-17-jdk-headless "
    "maven), then fetch the jars: riskguard broker --kind apache-kafka --fetch "
    "(the README's install step does this when Maven is present)"
)


class KafkaUnavailableError(BrokerError):
    """Java, Maven or the Kafka jars are missing; the message says how to get them.

    Failures of a present Maven (network, a bad pom) are plain :class:`BrokerError`.
    """


@functools.cache
def kafka_version() -> str:
    """The pinned Kafka version, read from ``pom.xml`` (e.g. ``"4.4.0"``)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{POM}: no <kafka.version> property")
    return (node.text or "").strip()


def cache_dir() -> Path:
    """Where the jars of the pinned version live (it need not exist yet)."""
    override = os.environ.get("RISKGUARD_KAFKA_HOME")
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "riskguard" / f"apache-kafka-{kafka_version()}"


@functools.cache
def java_binary() -> str:
    """Path of a ``java`` of version :data:`MIN_JAVA` or newer.

    ``$JAVA_HOME/bin/java`` first, then ``java`` on ``PATH``.

    Raises:
        KafkaUnavailableError: no Java, or one too old for Kafka 4.
    """
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else None
    if not candidate or not os.access(candidate, os.X_OK):
        candidate = shutil.which("java")
    if candidate is None:
        raise KafkaUnavailableError(f"Apache Kafka needs Java, and none was found: {HOW_TO_ENABLE}")
    try:
        done = subprocess.run(
            [candidate, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaUnavailableError(f"{candidate} -version failed: {exc}") from exc
    major = java_major(done.stderr + done.stdout)
    if major is None or major < MIN_JAVA:
        raise KafkaUnavailableError(
            f"Apache Kafka {kafka_version()} needs Java {MIN_JAVA}+, {candidate} is "
            f"{major or 'of unknown version'}: {HOW_TO_ENABLE}"
        )
    return candidate


def java_major(version_text: str) -> int | None:
    """The major version in ``java -version`` output (``"1.8.0_402"`` -> 8, ``"17.0.15"`` -> 17)."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if found is None:
        return None
    first = int(found.group(1))
    return int(found.group(2) or 0) if first == 1 else first


def classpath() -> list[Path]:
    """The fetched jars, in a fixed order.

    Raises:
        KafkaUnavailableError: nothing fetched yet, or a jar has gone missing since.
    """
    home = cache_dir()
    listing = home / CLASSPATH_FILE
    if not listing.is_file():
        raise KafkaUnavailableError(
            f"Apache Kafka {kafka_version()} jars are not in {home}: {HOW_TO_ENABLE}"
        )
    jars = [home / "lib" / name for name in listing.read_text().split()]
    missing = [j.name for j in jars if not j.is_file()]
    if missing or not jars:
        raise KafkaUnavailableError(
            f"{home} is incomplete (missing {', '.join(missing) or 'every jar'}): "
            f"delete it and fetch again: riskguard broker --kind apache-kafka --fetch"
        )
    return jars


def fetched() -> bool:
    """True when the pinned version's jars are complete in the cache."""
    try:
        classpath()
    except KafkaUnavailableError:
        return False
    return True


def maven_binary() -> str:
    """Path of ``mvn``.

    Raises:
        KafkaUnavailableError: Maven is not installed.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailableError(f"Maven (mvn) is not installed: {HOW_TO_ENABLE}")
    return mvn


def fetch(timeout_s: float = 900.0) -> Path:
    """Copy the pinned Kafka jars from Maven Central into :func:`cache_dir` (if missing).

    Returns the cache directory. Raises :class:`KafkaUnavailableError` without Java or
    Maven, and :class:`BrokerError` when Maven fails (the message ends with Maven's
    last output lines).
    """
    home = cache_dir()
    if fetched():
        return home
    java_binary()  # Maven needs it, and a clear message beats Maven's
    mvn = maven_binary()
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
    try:
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging / 'lib'}",
        ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"Maven did not finish within {timeout_s:.0f} s") from exc
        jars = sorted(p.name for p in (staging / "lib").glob("*.jar"))
        if done.returncode != 0 or not jars:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise BrokerError(
                f"Maven could not fetch Apache Kafka {kafka_version()} "
                f"(exit {done.returncode}):\n{tail}"
            )
        (staging / CLASSPATH_FILE).write_text("\n".join(jars) + "\n")
        staging.chmod(0o755)  # mkdtemp made it private; the jars are public anyway
        try:
            staging.rename(home)
        except OSError as exc:
            if not fetched():  # else another process finished first: keep its copy
                raise BrokerError(
                    f"cannot move the jars into {home}: {exc}; delete it and fetch again"
                ) from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return home
