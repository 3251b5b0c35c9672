"""The shape of riskguard's topics (riskguard.ingest.topic_shape), on both brokers.

A control topic that is not compacted loses a standing halt's only record to retention,
and gates started later open: riskguard sets compaction back where it may (Apache Kafka,
``kafka.create_topics``), keeping the topic's other settings, and pages ``topic-shape``
where it may not (the operator manages the topics; Tansu refuses AlterConfigs). An input
topic re-created with fewer partitions than seen gets them back while it is empty, and
is paged once it holds events; ``topic-shape-ok`` ends the page once they are back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from riskguard.broker import Broker
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL
from tests.integration.test_scale_out import until


def audited(settings: Settings, rule: str) -> list[dict[str, Any]]:
    """The transitions of ``rule`` in the sidecar's audit log."""
    path = settings.runtime.audit_path
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in (json.loads(line)["record"] for line in lines) if r.get("rule") == rule]


def with_(settings: Settings, **kafka: object) -> Settings:
    base = msgspec.to_builtins(settings)
    base["kafka"].update(kafka)
    return msgspec.convert(base, Settings)


async def topic_configs(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    [resource] = resp.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


async def test_a_control_topic_not_compacted_is_repaired_or_paged(
    broker: Broker, settings: Settings
) -> None:
    """The control topic exists with the broker's default policy (``delete``) and a
    retention of its own. Apache Kafka: riskguard sets ``compact`` back, the retention
    stays, nothing is paged. Tansu refuses the repair: ``topic-shape`` is paged, naming
    the topic, the setting and the refusal."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    settings.kafka.control_topic,
                    1,
                    1,
                    topic_configs={"cleanup.policy": "delete", "retention.ms": "86400000"},
                )
            ]
        )
        sidecar = Sidecar(settings, OVERFILL)
        await sidecar.start()
        try:
            topics = sidecar.status()["topics"]
            assert topics["checks"] >= 1
            if broker.kind == "apache-kafka":
                assert topics["problems"] == [], topics
                [line] = topics["repaired"]
                assert line.startswith(f"{settings.kafka.control_topic}: cleanup.policy is delete")
                configs = await topic_configs(admin, settings.kafka.control_topic)
                assert configs["cleanup.policy"] == "compact"
                assert configs["retention.ms"] == "86400000", "the topic's own settings stay"
                assert configs["min.compaction.lag.ms"] == "60000"
                repairs = "riskguard_topic_repairs_total"
                assert sidecar.metrics.registry.get_sample_value(repairs) == 1
                assert audited(settings, "topic-shape") == []
            else:
                [line] = topics["problems"]
                assert "cleanup.policy is delete, wanted compact" in line
                assert "the broker refused the repair" in line
                await until("paged", lambda: audited(settings, "topic-shape"), 10)
                [alert] = audited(settings, "topic-shape")
                assert alert["id"] == topics["alert"]
                assert "retention.ms" in alert["reason"]
                gauge = sidecar.metrics.registry.get_sample_value("riskguard_topic_problems")
                assert gauge == 1
        finally:
            await sidecar.stop()
    finally:
        await admin.close()


async def test_riskguard_does_not_touch_topics_it_does_not_manage(
    broker: Broker, settings: Settings
) -> None:
    """``kafka.create_topics = false``: the wrong policy is paged, not altered."""
    settings = with_(settings, create_topics=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(t, 1, 1)
                for t in (*settings.kafka.input_topics, settings.kafka.dead_letter_topic)
            ]
            + [
                NewTopic(
                    settings.kafka.control_topic, 1, 1, topic_configs={"cleanup.policy": "delete"}
                )
            ]
        )
        sidecar = Sidecar(settings, OVERFILL)
        await sidecar.start()
        try:
            [line] = sidecar.status()["topics"]["problems"]
            assert "refused" not in line
            await until("paged", lambda: audited(settings, "topic-shape"), 10)
            [alert] = audited(settings, "topic-shape")
            assert settings.kafka.control_topic in alert["reason"]
            configs = await topic_configs(admin, settings.kafka.control_topic)
            assert configs["cleanup.policy"] == "delete", "not riskguard's to change"
        finally:
            await sidecar.stop()
    finally:
        await admin.close()


async def recreate(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> None:
    """Delete ``topic`` and create it again with ``partitions`` (a broker's data loss,
    then an auto-creation)."""
    await admin.delete_topics([topic])
    for _ in range(100):  # deletion completes asynchronously on the broker
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
            break
        except TopicAlreadyExistsError:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"{topic} was not deleted in 10 s")
    for _ in range(100):
        [meta] = await admin.describe_topics([topic])
        if not meta["error_code"] and len(meta["partitions"]) == partitions:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic} has no leader 10 s after its creation")


# Apache Kafka alone: the test deletes and re-creates a topic, as a broker's data loss
# and an auto-creation do; the check itself is the same on both brokers.
@pytest.mark.parametrize("broker", ["apache-kafka"], indirect=True)
async def test_an_input_topic_that_lost_partitions_gets_them_back_while_empty_else_is_paged(
    broker: Broker, settings: Settings
) -> None:
    """riskguard saw 3 input partitions. Re-created with 1 and still empty: the
    partitions are added back (no account placed yet). Re-created with 1 and an event
    in it: paged, not repaired (adding partitions would move accounts); once someone
    puts the partitions back, ``topic-shape-ok`` ends the page, naming it."""
    settings = with_(settings, input_partitions=3, metadata_max_age_ms=1000)
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    [topic] = settings.kafka.input_topics
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        assert sidecar.status()["topics"]["input_partitions"] == {topic: 3}
        await recreate(admin, topic, 1)
        [problem] = await sidecar.topics.check()
        assert problem.repaired and problem.setting == "partitions" and problem.found == "1"
        [meta] = await admin.describe_topics([topic])
        assert len(meta["partitions"]) == 3, "the partitions were added back"
        assert sidecar.status()["topics"]["problems"] == []

        await recreate(admin, topic, 1)
        await producer.send_and_wait(topic, b"{}", key=b"acct-1")
        await sidecar.topics.check()
        [line] = sidecar.status()["topics"]["problems"]
        assert line.startswith(f"{topic}: partitions is 1, wanted 3 (as before)")
        assert line.endswith("it holds events: not repaired)")
        await until("paged", lambda: audited(settings, "topic-shape"), 10)
        [alert] = audited(settings, "topic-shape")
        only = {TopicPartition(topic, 0)}
        await until("gone partitions no longer read", lambda: sidecar.intake.assigned == only, 10)
        assert set(sidecar.checkpoints.applied) == only, "nor committed"
        await admin.create_partitions({topic: NewPartitions(3)})
        await sidecar.topics.check()
        assert sidecar.status()["topics"]["problems"] == []
        await until("page ended", lambda: audited(settings, "topic-shape-ok"), 10)
        [ok] = audited(settings, "topic-shape-ok")
        assert ok["ends"] == alert["id"]
        assert sidecar.metrics.registry.get_sample_value("riskguard_topic_problems") == 0
        assert sidecar.metrics.registry.get_sample_value("riskguard_topic_repairs_total") == 1
        await until("partitions read again", lambda: len(sidecar.intake.assigned) == 3, 10)
    finally:
        await producer.stop()
        await admin.close()
        await sidecar.stop()
