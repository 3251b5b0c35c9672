"""The shape of riskguard's topics: checked, repaired where riskguard may, paged where not.

A broker that lost its data comes back empty, and whoever writes first re-creates a
topic: a producer's auto-creation gives the broker's defaults (one partition, no
compaction), not riskguard's (:func:`riskguard.ingest.topics.ensure_topics`). Two shapes
matter to the kill switch:

- **The control topic and the aggregation topic must be compacted**
  (``cleanup.policy=compact``). Under the default ``delete`` policy the broker deletes a
  standing halt's only record once it is older than ``retention.ms`` (7 days by default):
  a gate started after that finds no halt and opens. Repaired in place when
  ``kafka.create_topics`` lets riskguard manage its topics (AlterConfigs, keeping the
  topic's other settings); otherwise, or when the broker refuses (the bundled Tansu
  does), paged.
- **An input topic must not lose partitions.** A topic re-created with fewer partitions
  than this instance saw hashes accounts to other partitions, and in group mode fewer
  members can share the input. aiokafka's clients (riskguard's own consumer among them)
  ask for metadata with auto-creation allowed, so on a broker that auto-creates topics
  the first to ask after a data loss re-creates the input with the broker's default
  partitions. While it holds no event, riskguard adds the partitions back (no account
  has been placed yet, so none moves); once it holds events, adding partitions would
  move accounts under their producers' feet: paged, not repaired.

:class:`TopicWatch` checks at start, each time the broker is back from an outage, and
every ``kafka.topic_check_interval_s``. Problems left raise the ``topic-shape`` system
alert (severity ``error``, one line per problem); ``topic-shape-ok`` ends it once a check
finds none. Metrics ``riskguard_topic_problems`` and ``riskguard_topic_repairs_total``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code
from aiokafka.structs import TopicPartition

from riskguard import log
from riskguard.ingest.connect import started
from riskguard.ingest.ports import TransitionSink
from riskguard.ingest.topics import CONTROL_TOPIC_CONFIG
from riskguard.metrics import Metrics
from riskguard.settings import KafkaSettings
from riskguard.vocabulary import Transition, system_alert

#: Kafka's ``ConfigSource`` of a setting made on the topic itself (KIP-226); the others
#: are broker-wide or defaults, which an AlterConfigs of the topic must not copy in.
DYNAMIC_TOPIC_CONFIG = 1
#: Kafka's error code for a topic the broker does not have.
UNKNOWN_TOPIC_OR_PARTITION = 3


@dataclass(frozen=True, slots=True)
class TopicProblem:
    """One topic whose shape differs from what riskguard needs."""

    topic: str
    setting: str
    """``cleanup.policy``, ``partitions`` or ``exists``."""
    found: str
    wanted: str
    why: str
    """What goes wrong while it stays so (one clause)."""
    repaired: bool = False

    def line(self) -> str:
        """One line for a page or a log: topic, setting, found and wanted, and why."""
        done = "; repaired" if self.repaired else ""
        found = f"{self.setting} is {self.found}, wanted {self.wanted}"
        return f"{self.topic}: {found} ({self.why}){done}"


class TopicWatch:
    """Check (and repair) the shape of riskguard's topics; page what is left.

    ``extra`` names the topics riskguard adds beside the input, control and dead-letter
    topics, with the settings it creates them with (group mode's aggregation topic: all
    compacted). ``state`` gives a scope's trading state (the firm's, for the alerts).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        extra: Mapping[str, Mapping[str, str]],
        outbox: TransitionSink,
        state: Callable[[str], str],
        metrics: Metrics,
    ) -> None:
        self.kafka = kafka
        self.extra = {topic: dict(configs) for topic, configs in extra.items()}
        self.compacted = {kafka.control_topic: dict(CONTROL_TOPIC_CONFIG), **self.extra}
        """Topics that must be compacted, with the settings riskguard creates them with."""
        self.outbox = outbox
        self.state = state
        self.metrics = metrics
        self.partitions: dict[str, int] = {}
        """The most partitions seen of each input topic (while running)."""
        self.problems: list[TopicProblem] = []
        """What the latest check found (repaired ones included)."""
        self.checks = 0
        self.last_error: str | None = None
        """Why the latest check could not be made (None: it was made)."""
        self._alert: Transition | None = None
        self._log = log.get("topics")

    async def check(self) -> list[TopicProblem]:
        """Describe the topics, repair what may be repaired, and raise or end the alert.

        Returns the problems found. A broker that cannot be asked (an outage, a refused
        request) is logged and leaves the previous finding in place; nothing is raised.
        """
        try:
            found = await self._inspect()
        except (KafkaError, TimeoutError, OSError) as exc:
            self.last_error = repr(exc)
            self._log.warning("topic shapes not checked", error=self.last_error)
            return self.problems
        except Exception as exc:  # an answer not understood: the kill switch runs on
            self.last_error = repr(exc)
            self._log.exception("topic shapes not checked: unexpected answer")
            return self.problems
        said = {p.line() for p in self.problems}
        self.last_error, self.problems = None, found
        self.checks += 1
        left = [p for p in found if not p.repaired]
        self.metrics.topic_problems.set(len(left))
        for p in found:
            if p.line() not in said:  # a problem standing is logged once, paged once
                say = self._log.warning if p.repaired else self._log.error
                say("topic shape", problem=p.line(), repaired=p.repaired)
        await self._page(left)
        return found

    async def run(self) -> None:
        """Forever: :meth:`check` every ``kafka.topic_check_interval_s`` (0: never here;
        the checks at start and after an outage still run)."""
        interval = self.kafka.topic_check_interval_s
        while interval > 0:
            await asyncio.sleep(interval)
            await self.check()

    async def _inspect(self) -> list[TopicProblem]:
        admin = AIOKafkaAdminClient(**self.kafka.client_options())
        await admin.start()
        try:
            problems = await self._input_partitions(admin)
            for topic, configs in self.compacted.items():
                problem = await self._compaction(admin, topic, configs)
                if problem is not None:
                    problems.append(problem)
            return problems
        finally:
            await admin.close()

    async def _input_partitions(self, admin: AIOKafkaAdminClient) -> list[TopicProblem]:
        problems: list[TopicProblem] = []
        for meta in await admin.describe_topics(list(self.kafka.input_topics)):
            topic, count = meta["topic"], len(meta.get("partitions") or ())
            seen = self.partitions.get(topic, 0)
            code = meta.get("error_code") or 0
            if code == UNKNOWN_TOPIC_OR_PARTITION:
                problems.append(TopicProblem(topic, "exists", "no", "yes", "no event can be read"))
            elif code or count == 0:  # being created or moved (no leader yet): next check
                continue
            elif count < seen:
                problem = TopicProblem(
                    topic,
                    "partitions",
                    str(count),
                    f"{seen} (as before)",
                    "re-created after data loss: accounts hash to other partitions, fewer "
                    "group members can share the input",
                )
                problems.append(await self._add_partitions(admin, problem, count, seen))
                count = seen if problems[-1].repaired else count
            self.partitions[topic] = max(seen, count)
        return problems

    async def _add_partitions(
        self, admin: AIOKafkaAdminClient, problem: TopicProblem, count: int, wanted: int
    ) -> TopicProblem:
        """Give an input topic its partitions back while it holds no event yet (a
        re-creation by a client's metadata request, e.g. riskguard's own consumer on a
        broker that auto-creates topics): no account has been placed, so none moves. One
        that holds events is left as it is (adding partitions would move accounts under
        their producers' feet) and paged."""
        if not self.kafka.create_topics:
            return problem
        if await self._holds_events(problem.topic, count):
            return replace(problem, why=f"{problem.why}; it holds events: not repaired")
        try:
            resp = await admin.create_partitions({problem.topic: NewPartitions(wanted)})
            refused = _refusal({"resources": resp.to_object().get("topic_errors", ())})
        except KafkaError as exc:  # a broker without CreatePartitions
            refused = repr(exc)
        if refused:
            return replace(problem, why=f"{problem.why}; the broker refused the repair: {refused}")
        self.metrics.topic_repairs.inc()
        return replace(problem, repaired=True)

    async def _holds_events(self, topic: str, count: int) -> bool:
        """Whether any of the ``count`` partitions of ``topic`` has a record (an end
        offset above 0)."""
        reader = await started(AIOKafkaConsumer(**self.kafka.client_options(consumer=True)))
        try:
            ends = await reader.end_offsets([TopicPartition(topic, p) for p in range(count)])
            return any(end > 0 for end in ends.values())
        finally:
            await reader.stop()

    async def _compaction(
        self, admin: AIOKafkaAdminClient, topic: str, configs: Mapping[str, str]
    ) -> TopicProblem | None:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = _entries(response.to_object())
        if entries is None:  # no such topic: ensure_topics creates it, if allowed
            return None
        policy = entries.get("cleanup.policy", ("delete", 0))[0]
        if policy == "compact":
            return None
        problem = TopicProblem(
            topic,
            "cleanup.policy",
            policy or "(empty)",
            "compact",
            "the broker deletes a standing halt's only record after retention.ms: gates "
            "started later open",
        )
        if not self.kafka.create_topics:
            return problem
        wanted = {k: v for k, (v, source) in entries.items() if source == DYNAMIC_TOPIC_CONFIG}
        wanted.update(configs)
        wanted["cleanup.policy"] = "compact"
        try:
            [altered] = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs=wanted)]
            )
            refused = _refusal(altered.to_object())
        except KafkaError as exc:  # a broker without AlterConfigs (the bundled Tansu)
            refused = repr(exc)
        if refused:
            return replace(problem, why=f"{problem.why}; the broker refused the repair: {refused}")
        self.metrics.topic_repairs.inc()
        return replace(problem, repaired=True)

    async def _page(self, left: list[TopicProblem]) -> None:
        if left and self._alert is None:
            self._alert = system_alert(
                "topic-shape",
                "topic_problems",
                self.state("firm"),
                value=float(len(left)),
                limit=0.0,
                reason="; ".join(p.line() for p in left),
            )
            await self.outbox.send([self._alert])
        elif not left and self._alert is not None:
            ended, self._alert = self._alert, None
            done = system_alert(
                "topic-shape-ok",
                "topic_problems",
                self.state("firm"),
                value=0.0,
                reason="riskguard's topics have the shape it needs again",
            )
            await self.outbox.send([msgspec.structs.replace(done, ends=ended.id)])

    def status(self) -> dict[str, Any]:
        """For ``/v1/status`` (``topics``): the latest finding, and the alert it raised."""
        return {
            "checks": self.checks,
            "problems": [p.line() for p in self.problems if not p.repaired],
            "repaired": [p.line() for p in self.problems if p.repaired],
            "last_error": self.last_error,
            "alert": self._alert.id if self._alert else None,
            "input_partitions": dict(self.partitions),
        }


def _refusal(response: dict[str, Any]) -> str:
    """The first error of an AlterConfigs response (``to_object()``), or ""."""
    for resource in response.get("resources", ()):
        if resource.get("error_code"):
            return f"error {resource['error_code']}: {resource.get('error_message') or ''}".strip()
    return ""


def _entries(response: dict[str, Any]) -> dict[str, tuple[str, int]] | None:
    """A DescribeConfigs response's (``to_object()``) entries: name -> (value, Kafka's
    ``ConfigSource``); None when the topic has none (it does not exist). Raises
    ``KafkaError`` for an error on the resource."""
    for resource in response.get("resources", ()):
        if resource.get("error_code"):
            raise for_code(resource["error_code"])(
                f"DescribeConfigs of {resource.get('resource_name')}"
            )
        entries = resource.get("config_entries") or ()
        if not entries:
            return None
        return {
            e["config_names"]: (
                e.get("config_value") or "",
                e.get("config_source", 5 if e.get("is_default") else DYNAMIC_TOPIC_CONFIG),
            )
            for e in entries
        }
    return None
