"""Create riskguard's topics if they are missing (when the settings allow it)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from riskguard import log
from riskguard.settings import KafkaSettings

#: The control topic's settings: compacted (the newest record per key stays for good;
#: riskguard.ingest.topic_shape repairs the policy), records left uncompacted a minute.
CONTROL_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


async def ensure_topics(
    kafka: KafkaSettings, extra: Mapping[str, Mapping[str, str]] | None = None
) -> list[str]:
    """Create the input, control (compacted) and dead-letter topics, and the one-partition
    topics of ``extra`` (name -> topic configs: group mode's aggregation topic); returns
    those created."""
    if not kafka.create_topics:
        return []
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(t, kafka.input_partitions, 1) for t in kafka.input_topics]
        wanted.append(
            NewTopic(
                kafka.control_topic,
                1,
                1,
                topic_configs=dict(CONTROL_TOPIC_CONFIG),
            )
        )
        wanted.append(NewTopic(kafka.dead_letter_topic, 1, 1))
        wanted += [
            NewTopic(t, 1, 1, topic_configs=dict(configs)) for t, configs in (extra or {}).items()
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another instance won the race
                await admin.create_topics(missing)
            log.get("topics").info("created topics", topics=[t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()
