"""Process settings: defaults < TOML file < environment < command line. Frozen and strict.

Limits live apart, in their own reviewed file (``limits``). Secrets (the API token,
SASL passwords, notifier keys) are never accepted on the command line, are read
from a file or the environment, and are redacted in every repr.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from riskguard import setting_origin as helpers
from riskguard.setting_origin import default_state_dir
from riskguard.vocabulary import LEVELS

SECRET_FIELDS = frozenset({"token", "sasl_plain_password", "routing_key", "ssl_password"})


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the file and the key."""


class _Redacted(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    def __repr__(self) -> str:
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            shown.append(f"{name}={'***' if name in SECRET_FIELDS and value else repr(value)}")
        fields = ", ".join(shown)
        return f"{type(self).__name__}({fields})"

    __str__ = __repr__


class KafkaSettings(_Redacted, frozen=True, forbid_unknown_fields=True):
    """Where events come from and where decisions go. Passed through to aiokafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    input_topics: tuple[str, ...] = ("trading.events",)
    group_id: str = "riskguard"
    control_topic: str = "riskguard.control"
    dead_letter_topic: str = "riskguard.dead-letter"
    #: Apache Kafka's default: it answers a fetch as soon as a record arrives, so a long
    #: wait costs no latency and spares the broker empty fetches (bench/fetch_wait.py).
    #: On the bundled Tansu broker, which holds a fetch for half its wait, set 1
    #: (``riskguard demo`` and the tests do; see brokers.TANSU_FETCH_MAX_WAIT_MS).
    fetch_max_wait_ms: int = 500
    max_records: int = 500
    #: Bounds every producer wait: a halt publish must never hang for aiokafka's 40 s.
    request_timeout_ms: int = 1500
    #: Consumers need longer: a JoinGroup request blocks for the whole group rebalance,
    #: so a 1.5 s timeout would never let the group form. Fetches stay bounded by
    #: ``fetch_max_wait_ms`` and the poll timeout, not by this.
    consumer_request_timeout_ms: int = 30_000
    #: Apache Kafka: set true for idempotent producers (Tansu rejects InitProducerId).
    idempotent_producer: bool = False
    #: riskguard creates its topics when missing, and repairs the compaction of its
    #: control and aggregation topics (riskguard.ingest.topic_shape); false: it touches
    #: none of them (they are managed elsewhere) and a wrong shape is only paged.
    create_topics: bool = True
    input_partitions: int = 4
    #: How often (s) the topics' shape is checked besides at start and after an outage:
    #: compaction of the control and aggregation topics, input partitions not fewer than
    #: seen (``topic-shape`` alert). 0: only at start and after an outage.
    topic_check_interval_s: float = 60.0
    #: Consumers refresh the topics' metadata at least this often (ms): partitions added
    #: to an input topic are read (single mode) or rebalanced (group mode) this soon,
    #: and partitions gone are no longer read (aiokafka's default: 5 minutes).
    metadata_max_age_ms: int = 10_000
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None

    def __post_init__(self) -> None:
        helpers.bootstrap_addresses(self.bootstrap_servers)  # ValueError: not host:port
        if not self.input_topics or not all(t.strip() for t in self.input_topics):
            raise ValueError("input_topics: give at least one topic, none of them empty")
        interval = self.topic_check_interval_s
        if not (math.isfinite(interval) and 0 <= interval <= 86_400):
            raise ValueError("topic_check_interval_s must be a number of seconds from 0 to 86400")
        if not 100 <= self.metadata_max_age_ms <= 3_600_000:
            raise ValueError("metadata_max_age_ms must be between 100 and 3600000")

    def client_options(self, *, consumer: bool = False) -> dict[str, Any]:
        """Keyword arguments common to aiokafka producers, consumers and admin clients."""
        timeout = self.consumer_request_timeout_ms if consumer else self.request_timeout_ms
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "request_timeout_ms": timeout,
            "security_protocol": self.security_protocol,
        }
        if consumer:
            opts["metadata_max_age_ms"] = self.metadata_max_age_ms
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context  # noqa: PLC0415

            opts["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=self.ssl_password,
            )
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_plain_username
            opts["sasl_plain_password"] = self.sasl_plain_password
        return opts


class HttpSettings(_Redacted, frozen=True, forbid_unknown_fields=True):
    """The control API and the web console. Loopback by default.

    People are named in ``users_file`` (``docs/operators.md``): each has a role and the
    SHA-256 of their own token. ``token`` / ``token_file`` is the optional break-glass
    token: it acts as the identity ``break-glass`` (role ``risk-admin``) and is audited
    as such. ``four_eyes`` lists the scope levels whose resume needs a second
    risk-admin's approval within ``approval_timeout_s`` seconds.
    """

    host: str = "127.0.0.1"
    port: int = 8321
    token: str | None = None
    token_file: str | None = None
    users_file: str | None = None
    four_eyes: tuple[str, ...] = ("firm", "account")
    approval_timeout_s: float = 600.0
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    max_body_bytes: int = 16_384

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ValueError(
                "host is empty, which would bind every interface: give an address "
                "(127.0.0.1, the default: this host only; 0.0.0.0 or :: for every "
                "interface, on purpose)"
            )
        if not 0 <= self.port <= 65_535:
            raise ValueError(f"port must be 0 to 65535 (0: any free port), got {self.port}")
        unknown = [level for level in self.four_eyes if level not in LEVELS]
        if unknown:
            raise ValueError(
                f"four_eyes: unknown scope level(s) {', '.join(map(repr, unknown))}; "
                f"use {', '.join(LEVELS)}"
            )
        if not (math.isfinite(self.approval_timeout_s) and 1 <= self.approval_timeout_s <= 86_400):
            raise ValueError("approval_timeout_s must be a number of seconds, 1 to 86400")
        if not 1_024 <= self.max_body_bytes <= 1_048_576:
            raise ValueError("max_body_bytes must be between 1024 and 1048576")

    def resolved_token(self) -> str | None:
        """The break-glass token from ``token`` (env) or ``token_file``; None when unset.

        Raises :class:`SettingsError` naming the setting and the path when the file
        cannot be read.
        """
        if self.token:
            return self.token
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip() or None
            except OSError as exc:
                raise SettingsError(
                    f"http.token_file: cannot read {self.token_file}: {exc.strerror}"
                ) from exc
        return None


class NotifierSettings(_Redacted, frozen=True, forbid_unknown_fields=True):
    """One alert sink: ``pagerduty``, ``slack``, ``alertmanager`` or ``webhook``."""

    kind: Literal["pagerduty", "slack", "alertmanager", "webhook"]
    url: str
    name: str = ""
    routing_key: str | None = None
    routing_key_file: str | None = None
    timeout_s: float = 5.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        helpers.check_url(self.url)

    @property
    def label(self) -> str:
        """Name used in metrics and logs."""
        return self.name or self.kind


class RuntimeSettings(_Redacted, frozen=True, forbid_unknown_fields=True):
    """Timers of the sidecar, and where it keeps its files.

    ``audit_log``, ``journal`` and ``snapshot_dir`` are relative to ``state_dir``
    unless absolute (:meth:`resolve`); ``state_dir`` itself defaults to
    :func:`default_state_dir`, never the current directory.
    """

    heartbeat_interval_ms: int = 250
    #: The loop must have polled within this long for riskguard to call itself healthy.
    stall_budget_ms: int = 2000
    #: Reload limits when their file changes (SIGHUP always reloads).
    watch_limits: bool = True
    #: No successful publish to the broker for this long: not ready, and alert.
    broker_budget_ms: int = 3000
    #: At start, keep trying to reach a broker this long before giving up (exit 2).
    broker_wait_s: float = 15.0
    #: After SIGTERM, a graceful stop (batch, commit, snapshot, flush) gets this long;
    #: then riskguard exits anyway (exit 1), whatever the broker does.
    stop_timeout_s: float = 10.0
    tick_interval_ms: int = 100
    commit_interval_ms: int = 1000
    #: Marks and REDUCE_ONLY positions for the gates' pre-trade checks go to the control
    #: topic at most once per key per this many ms (only when they changed).
    gate_publish_interval_ms: int = 100
    #: Folder of the audit log, journal and snapshots (created if missing). Empty: the
    #: default of :func:`default_state_dir` ($STATE_DIRECTORY under systemd, else
    #: $XDG_STATE_HOME/riskguard or ~/.local/state/riskguard).
    state_dir: str = ""
    audit_log: str = "audit.jsonl"
    #: fsynced local copy of every scope's latest state; re-asserted before consuming
    journal: str = "journal.jsonl"
    #: Session start (ISO 8601, e.g. "2026-11-27T00:00:00Z"). With no snapshot, input is
    #: read from here (offsets_for_times) instead of from the beginning, and events
    #: stamped earlier are skipped, so positions are "since session start" on any broker.
    #: A snapshot taken under another start of day is not loaded: state is rebuilt.
    start_of_day: str = ""
    #: engine snapshots with the offsets they reflect (snapshot_interval_s 0 disables them)
    snapshot_dir: str = "snapshots"
    snapshot_interval_s: float = 30.0
    snapshot_keep: int = 3
    #: This instance's name on the control topic (heartbeats, transitions, four-eyes
    #: steps; env RISKGUARD_INSTANCE). Each instance of an active-active pair needs its
    #: own (docs/deployment.md). Empty: the host name (the pod's under Kubernetes),
    #: stable across restarts; a second riskguard on the same host and control topic
    #: under the same name is refused at start (riskguard.ingest.naming).
    instance: str = ""
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.log_level.lower() not in helpers.LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(helpers.LOG_LEVELS)}")
        if not 1 <= self.gate_publish_interval_ms <= 60_000:
            raise ValueError("gate_publish_interval_ms must be between 1 and 60000")
        for name in ("broker_wait_s", "stop_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 3600):
                raise ValueError(f"{name} must be a number of seconds from 0 to 3600")

    @property
    def state_path(self) -> Path:
        """``state_dir``, or the default folder when it is empty (``~`` expanded)."""
        return Path(self.state_dir).expanduser() if self.state_dir else default_state_dir()

    def resolve(self, path: str) -> Path:
        """``path`` (``~`` expanded) if absolute, else the same path inside :attr:`state_path`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.state_path / p

    @property
    def audit_path(self) -> Path:
        """Where the audit log is written."""
        return self.resolve(self.audit_log)

    @property
    def journal_path(self) -> Path:
        """Where the halt journal is kept."""
        return self.resolve(self.journal)

    @property
    def snapshot_path(self) -> Path:
        """The folder of engine snapshots."""
        return self.resolve(self.snapshot_dir)


class EngineSettings(_Redacted, frozen=True, forbid_unknown_fields=True):
    """How the engine treats other people's timestamps and redeliveries (docs/events.md)."""

    #: An event stamped more than this ahead of the clock is skewed: applied at the
    #: corrected time (live: the wall clock; replay: the latest trusted event time).
    max_clock_skew_ms: int = 5_000
    #: An event more than this behind the clock counts in windows as now, not in its own.
    max_lateness_ms: int = 1_000
    #: How long (event time) a closed order and an execution are remembered, so that a
    #: redelivered new, cancel, replace or fill changes nothing and a bust finds its
    #: execution. 6 h covers a trading session's busts and any Kafka redelivery.
    dedupe_horizon_s: float = 21_600.0
    #: At most this many closed orders and this many executions are remembered (the
    #: oldest go first), whatever the horizon.
    dedupe_max_ids: int = 1_000_000

    def __post_init__(self) -> None:
        day_ms = 86_400_000
        if not 0 <= self.max_clock_skew_ms <= day_ms:
            raise ValueError(f"max_clock_skew_ms must be between 0 and {day_ms}")
        if not 0 <= self.max_lateness_ms <= day_ms:
            raise ValueError(f"max_lateness_ms must be between 0 and {day_ms}")
        if not (math.isfinite(self.dedupe_horizon_s) and 0 <= self.dedupe_horizon_s <= 7 * 86_400):
            raise ValueError("dedupe_horizon_s must be a finite number of seconds, 0 to 604800")
        if not 1 <= self.dedupe_max_ids <= 100_000_000:
            raise ValueError("dedupe_max_ids must be between 1 and 100000000")

    @property
    def skew_ns(self) -> int:
        """``max_clock_skew_ms`` in ns."""
        return self.max_clock_skew_ms * 1_000_000

    @property
    def lateness_ns(self) -> int:
        """``max_lateness_ms`` in ns."""
        return self.max_lateness_ms * 1_000_000

    @property
    def horizon_ns(self) -> int:
        """``dedupe_horizon_s`` in ns."""
        return int(self.dedupe_horizon_s * 1e9)


def session_start_ns(text: str) -> int | None:
    """Parse ``runtime.start_of_day`` to ns since the epoch (None when unset)."""
    if not text:
        return None
    from datetime import datetime  # noqa: PLC0415 - only needed when configured

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SettingsError(f"runtime.start_of_day: not an ISO 8601 time: {text!r}") from exc
    if when.tzinfo is None:
        raise SettingsError(f"runtime.start_of_day: give a time zone (e.g. 'Z'): {text!r}")
    return int(when.timestamp() * 1_000_000) * 1000


class ScaleSettings(_Redacted, frozen=True, forbid_unknown_fields=True):
    """How several instances share the input (docs/deployment.md, Scale-out).

    ``mode = "single"`` (the default): every instance reads every input partition (one
    instance, or an active-active pair deciding the same thing twice). ``mode =
    "group"``: the instances of ``kafka.group_id`` share the input partitions through
    Kafka's consumer-group protocol; each holds the state of the partitions it owns, and
    restores one it gains from its checkpoint. A dead member's partitions move to the
    others once the broker stops hearing from it: within ``session_timeout_ms``.
    """

    mode: Literal["single", "group"] = "single"
    #: group mode: the broker declares a silent member dead after this long (ms); within
    #: the broker's group.min/max.session.timeout.ms (6 s to 30 min on Apache Kafka).
    session_timeout_ms: int = 10_000
    #: group mode: how often a member tells the broker it is alive (ms); under a third
    #: of ``session_timeout_ms``.
    heartbeat_interval_ms: int = 1_000
    #: group mode: the compacted topic where each instance publishes its part of the cross-
    #: partition rules' values (one partition, keyed by group and instance; created with
    #: the other topics when ``kafka.create_topics``).
    aggregate_topic: str = "riskguard.aggregate"
    #: group mode: an instance publishes its parts at most this often (ms), and only
    #: when they changed; a cross-partition rule is judged this much later at most,
    #: plus one produce-to-consume hop (docs/deployment.md, Cross-partition rules).
    aggregate_interval_ms: int = 200
    #: group mode: the judging member raises the ``sums-incomplete`` alert when the
    #: aggregation records have not covered every input partition once for this long
    #: (ms): cross-partition rules are not judged meanwhile (a rebalance, a member that
    #: cannot publish). ``sums-complete`` ends it.
    aggregate_alert_ms: int = 15_000
    #: group mode: join with a static membership id (KIP-345; the ``runtime.instance``
    #: name): a member restarted within ``session_timeout_ms`` gets its partitions back
    #: without a rebalance and restores them from its snapshot. A member stopped for good
    #: keeps its partitions until ``session_timeout_ms`` passes (it does not leave the
    #: group); false: it leaves at once, and every restart rebalances the whole group.
    static_membership: bool = True
    #: group mode: each partition's checkpoints, ``<checkpoint_dir>/<topic>.<p>`` (relative:
    #: in ``runtime.state_dir``), shared storage for members on several hosts.
    checkpoint_dir: str = "partitions"

    def __post_init__(self) -> None:
        if self.aggregate_alert_ms < 1:
            raise ValueError("aggregate_alert_ms must be at least 1")
        if not 1 <= self.aggregate_interval_ms <= 60_000:
            raise ValueError("aggregate_interval_ms must be between 1 and 60000")
        if not self.aggregate_topic:
            raise ValueError("aggregate_topic must not be empty")
        if self.session_timeout_ms < 1:
            raise ValueError("session_timeout_ms must be at least 1")
        if not 1 <= self.heartbeat_interval_ms * 3 <= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")

    @property
    def group(self) -> bool:
        """Partitions are shared through the consumer group."""
        return self.mode == "group"


class Settings(_Redacted, frozen=True, forbid_unknown_fields=True):
    """All process settings."""

    limits: str = "rules/example.toml"
    kafka: KafkaSettings = KafkaSettings()
    http: HttpSettings = HttpSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    engine: EngineSettings = EngineSettings()
    scale: ScaleSettings = ScaleSettings()
    notifier: tuple[NotifierSettings, ...] = ()


def check_files(settings: Settings) -> None:
    """Every file a setting names (``*file`` settings: tokens, keys, certificates) can be read.

    Raises :class:`SettingsError` naming the first unreadable one by setting and path,
    e.g. ``http.token_file = '/run/secrets/token': cannot read: No such file or
    directory``, so ``riskguard run`` fails before connecting to anything.
    """
    sections: list[tuple[str, Any]] = [("kafka", settings.kafka), ("http", settings.http)]
    sections += [(f"notifier[{i}]", n) for i, n in enumerate(settings.notifier)]
    for prefix, section in sections:
        for name in section.__struct_fields__:
            value = getattr(section, name)
            if not name.endswith("file") or not isinstance(value, str) or not value:
                continue
            try:
                with Path(value).expanduser().open("rb"):
                    pass
            except OSError as exc:
                raise SettingsError(
                    f"{prefix}.{name} = {value!r}: cannot read: {exc.strerror or exc}"
                ) from exc


#: Environment variables read on top of the file (name -> dotted setting).
ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrap_servers",
    "RISKGUARD_KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrap_servers",
    "RISKGUARD_KAFKA_GROUP_ID": "kafka.group_id",
    "RISKGUARD_KAFKA_INPUT_TOPICS": "kafka.input_topics",
    "RISKGUARD_KAFKA_CONTROL_TOPIC": "kafka.control_topic",
    "RISKGUARD_KAFKA_DEAD_LETTER_TOPIC": "kafka.dead_letter_topic",
    "RISKGUARD_KAFKA_FETCH_MAX_WAIT_MS": "kafka.fetch_max_wait_ms",
    "RISKGUARD_KAFKA_SASL_PLAIN_USERNAME": "kafka.sasl_plain_username",
    "RISKGUARD_KAFKA_SASL_PLAIN_PASSWORD": "kafka.sasl_plain_password",
    "RISKGUARD_LIMITS": "limits",
    "RISKGUARD_HTTP_HOST": "http.host",
    "RISKGUARD_HTTP_PORT": "http.port",
    "RISKGUARD_HTTP_TOKEN": "http.token",
    "RISKGUARD_HTTP_TOKEN_FILE": "http.token_file",
    "RISKGUARD_HTTP_USERS_FILE": "http.users_file",
    "RISKGUARD_STATE_DIR": "runtime.state_dir",
    "RISKGUARD_AUDIT_LOG": "runtime.audit_log",
    "RISKGUARD_JOURNAL": "runtime.journal",
    "RISKGUARD_SNAPSHOT_DIR": "runtime.snapshot_dir",
    "RISKGUARD_START_OF_DAY": "runtime.start_of_day",
    "RISKGUARD_LOG_LEVEL": "runtime.log_level",
    "RISKGUARD_INSTANCE": "runtime.instance",
    "RISKGUARD_SCALE_MODE": "scale.mode",
    "RISKGUARD_SCALE_AGGREGATE_INTERVAL_MS": "scale.aggregate_interval_ms",
    "RISKGUARD_SCALE_CHECKPOINT_DIR": "scale.checkpoint_dir",
}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the TOML file at ``path``, then ``env``, then CLI ``overrides``.

    Raises :class:`SettingsError` naming where the bad value came from: the command-line
    flag (``flags`` maps a dotted setting of ``overrides`` to its flag, e.g.
    ``{"http.port": "--http-port"}``), the environment variable, or the file.
    """
    tree: dict[str, Any] = {}
    given: dict[str, str] = {}  # dotted setting -> the flag or variable that set it last
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            tree = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise SettingsError(f"{source}: cannot read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{source}: TOML syntax: {exc}") from exc
    for name, dotted in ENV.items():
        value = (os.environ if env is None else env).get(name)
        if value is None:
            continue
        given[dotted] = f"${name}"
        if dotted.endswith("input_topics"):
            _set(tree, dotted, [t.strip() for t in value.split(",") if t.strip()])
        elif dotted.endswith((".port", "_ms")):
            _set(tree, dotted, helpers.whole_number(value))
        else:
            _set(tree, dotted, value)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        given.pop(dotted, None)  # the override wins: named when its flag is known
        if flags and dotted in flags:
            given[dotted] = flags[dotted]
        _set(tree, dotted, value)
    try:
        return msgspec.convert(tree, Settings, str_keys=True)
    except msgspec.ValidationError as exc:
        raise SettingsError(helpers.origin(str(exc), given, source)) from exc
