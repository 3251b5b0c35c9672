"""Group mode's parts of one sidecar, started and stopped together.

- :class:`~riskguard.ingest.group.GroupOwnership`: the input partitions this member
  owns, and the state rebuilt for them on every rebalance;
- :class:`~riskguard.ingest.aggregation.Aggregation`: the cross-partition rules, summed
  through the aggregation topic and judged by the owner of the first input partition.

docs/deployment.md, "Scale-out (group mode)".
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer

from riskguard.ingest.aggregation import MAX_RECORD_BYTES, TOPIC_CONFIG, Aggregation
from riskguard.ingest.closing import stop_consumer
from riskguard.ingest.consume import ConsumeLoop
from riskguard.ingest.group import GroupOwnership, Renumbered
from riskguard.ingest.ports import TransitionSink
from riskguard.ingest.pretrade import PreTradeFeed
from riskguard.ingest.producers import RenewingProducer
from riskguard.metrics import Metrics
from riskguard.settings import Settings

Task = tuple[str, Coroutine[Any, Any, None]]


class GroupMode:
    """A group member's :class:`GroupOwnership` and :class:`Aggregation`.

    ``progress``, ``renumbered`` and ``ready`` are :class:`GroupOwnership`'s;
    ``outbox`` takes the decisions on summed rules; ``feed`` publishes the summed
    positions of REDUCE_ONLY scopes spanning partitions.
    """

    def __init__(
        self,
        settings: Settings,
        instance: str,
        intake: ConsumeLoop,
        progress: Callable[[], int],
        renumbered: Sequence[Renumbered],
        ready: Callable[[str], None],
        outbox: TransitionSink,
        feed: PreTradeFeed,
        metrics: Metrics,
    ) -> None:
        self.kafka = settings.kafka
        self.ownership = GroupOwnership(
            settings.scale, intake, progress, renumbered, ready, instance=instance, sink=outbox
        )
        self.aggregation = Aggregation(
            settings.scale,
            settings.kafka.group_id,
            instance,
            intake,
            lambda: self.ownership.restored_s is not None,
            outbox,
            feed,
            metrics,
        )
        self.reader: AIOKafkaConsumer | None = None
        self.producer: RenewingProducer | None = None
        self._input: AIOKafkaConsumer | None = None

    def consumer_options(self) -> dict[str, Any]:
        """aiokafka options of the input consumer (liveness towards the group)."""
        return self.ownership.consumer_options()

    def topics(self) -> dict[str, dict[str, str]]:
        """The topic group mode adds, with its configs (for topic creation)."""
        return {self.aggregation.scale.aggregate_topic: dict(TOPIC_CONFIG)}

    async def start(self, consumer: AIOKafkaConsumer, client_id: str) -> list[Task]:
        """Join the group with ``consumer`` (the input consumer, started); follow the
        aggregation topic with a reader of its own and publish with a producer of its
        own (records up to :data:`MAX_RECORD_BYTES`, gzip-compressed). Returns the
        background tasks to run (name, coroutine). Raises aiokafka's ``KafkaError`` when
        the aggregation topic cannot be reached."""
        self._input = consumer
        self.ownership.subscribe(consumer, self.kafka.input_topics)
        self.producer = RenewingProducer(
            self.aggregation.metrics,
            **self.kafka.client_options(),
            acks="all",
            linger_ms=0,
            enable_idempotence=self.kafka.idempotent_producer,
            compression_type="gzip",
            max_request_size=MAX_RECORD_BYTES,
            client_id=f"{client_id}-aggregate",
        )
        await self.producer.start()
        self.reader = AIOKafkaConsumer(
            **self.kafka.client_options(consumer=True),
            enable_auto_commit=False,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
            max_partition_fetch_bytes=MAX_RECORD_BYTES,
            client_id=f"{client_id}-aggregate",
        )
        await self.reader.start()
        await self.aggregation.open(self.producer, self.reader, self.whole)
        return [
            ("aggregate-publish", self.aggregation.publish()),
            ("aggregate-follow", self.aggregation.follow()),
        ]

    def whole(self) -> frozenset[str]:
        """Every partition of the input topics the input consumer's metadata knows."""
        if self._input is None:
            return frozenset()
        return frozenset(
            f"{topic}/{p}"
            for topic in self.kafka.input_topics
            for p in self._input.partitions_for_topic(topic) or ()
        )

    async def stop(self) -> None:
        """Stop the aggregation reader and producer (the input consumer is the
        sidecar's)."""
        reader, producer, self.reader, self.producer = self.reader, self.producer, None, None
        if reader is not None:
            await stop_consumer(reader)
        if producer is not None:
            await producer.stop()

    def status(self) -> dict[str, Any]:
        """``/v1/status`` ``scale``: the partitions owned, the rebuilds, and ``aggregate``."""
        return {**self.ownership.status(), "aggregate": self.aggregation.status()}
