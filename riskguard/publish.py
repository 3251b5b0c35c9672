"""Publishing events to riskguard's input topic: keys and partitions (for trading systems).

The producer contract (``docs/events.md``, "Keys and partitions"):

- events of an account (``parent``, ``new``, ``replace``, ``cancel``, ``reject``,
  ``fill``, ``position``) are keyed by ``account`` and go to that key's partition, the
  one Kafka's default partitioner picks (murmur2, as the Java client), so one account's
  events stay in order and, in group mode, with one instance;
- reference data (``mark``, ``fx``, ``instrument``) and heartbeats carry no account:
  they are keyed by symbol, currency or source and go to **every** partition, so every
  group-mode instance sees them (each once per partition it owns; the copies are
  redeliveries and change nothing). With ``broadcast=False`` they go to their key's
  partition only: enough for single mode, where one instance reads every partition.

Example::

    producer = AIOKafkaProducer(bootstrap_servers="kafka:9092")
    await producer.start()
    await publish(producer, "trading.events", [mark, fill])
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from riskguard import events as wire

BROADCAST = (wire.Mark, wire.Fx, wire.Instrument, wire.Heartbeat)
"""Event types without an account: sent to every partition (group mode needs them all)."""


class Route(NamedTuple):
    """Where one event goes: its Kafka ``key`` (UTF-8) and the input ``partitions``
    (ascending partition numbers) it is sent to, once to each."""

    key: bytes
    partitions: tuple[int, ...]


def key_of(event: wire.Event) -> str:
    """The Kafka key of ``event``: its ``account``; for reference data its ``symbol``
    (``mark``, ``instrument``) or ``currency`` (``fx``); for a heartbeat its ``source``."""
    if isinstance(event, wire.Fx):
        return event.currency
    if isinstance(event, wire.Heartbeat):
        return event.source
    if isinstance(event, wire.Mark | wire.Instrument):
        return event.symbol
    return event.account


def partition_of(key: bytes, partitions: int) -> int:
    """The partition (0 to ``partitions`` - 1) Kafka's default partitioner gives ``key``
    (murmur2, as the Java client and aiokafka). Raises :class:`ValueError` when
    ``partitions`` < 1."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def route(event: wire.Event, partitions: int, *, broadcast: bool = True) -> Route:
    """Where to send ``event`` on an input topic of ``partitions`` partitions.

    Account events go to their account's partition; ``mark``, ``fx``, ``instrument``
    and ``heartbeat`` to all ``partitions`` (``broadcast=False``: to their key's
    partition only). Raises :class:`ValueError` when ``partitions`` < 1.
    """
    key = key_of(event).encode()
    if broadcast and isinstance(event, BROADCAST):
        if partitions < 1:
            raise ValueError(f"a topic has at least one partition, not {partitions}")
        return Route(key, tuple(range(partitions)))
    return Route(key, (partition_of(key, partitions),))


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    events: Iterable[wire.Event],
    *,
    partitions: int | None = None,
    broadcast: bool = True,
    wait: bool = True,
) -> int:
    """Send ``events`` in order, each to its :func:`route`; returns the records sent
    (an event sent to every partition counts once per partition).

    ``producer`` is started. ``partitions`` is the topic's partition count (None: asked
    of the broker, ``producer.partitions_for``). ``wait``: return once the broker has
    acknowledged every record, raising the first delivery error (aiokafka's
    ``KafkaError``); else once every record is queued in the producer (its ``flush``
    or ``stop`` delivers them). Per partition the records keep the order of ``events``.
    Raises :class:`ValueError` when the topic has no partitions (unknown topic).
    """
    if partitions is None:
        partitions = len(await producer.partitions_for(topic))
    sent = []
    for event in events:
        value = wire.encode(event)
        key, parts = route(event, partitions, broadcast=broadcast)
        for p in parts:
            sent.append(await producer.send(topic, value, key=key, partition=p))
    if wait:
        await asyncio.gather(*sent)
    return len(sent)
