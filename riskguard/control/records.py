"""Control topic records (schema v1). The topic is compacted and keyed by scope.

* key ``<scope>`` (e.g. ``strategy:smars``): a :class:`StateRecord` with the
  scope's current state and the transition that set it. A trading system that
  starts late reads the topic from the beginning and knows every standing halt.
* key ``__heartbeat__``: a :class:`HeartbeatRecord`, every
  ``runtime.heartbeat_interval_ms`` (250 ms by default) while riskguard's loop is
  healthy. Gates fail closed when it stops or says riskguard is not ready.

``docs/control-topic.md`` is the public contract for these records (fields, types,
units, forward compatibility). The gate needs this module and msgspec, never the engine.
"""

from __future__ import annotations

from typing import Final

import msgspec

from riskguard.vocabulary import Transition

HEARTBEAT_KEY: Final = b"__heartbeat__"


class StateRecord(msgspec.Struct, frozen=True, tag="state", tag_field="type"):
    """The standing state of one scope."""

    scope: str
    state: str
    transition: Transition
    v: int = 1


class HeartbeatRecord(msgspec.Struct, frozen=True, tag="heartbeat", tag_field="type"):
    """riskguard is alive. ``last_event_ns`` is the newest event time it has applied."""

    ts: int
    instance: str
    ready: bool
    interval_ms: int
    last_event_ns: int = -1
    events_applied: int = 0
    v: int = 1


Record = StateRecord | HeartbeatRecord
_decoder: Final = msgspec.json.Decoder(Record)
_encoder: Final = msgspec.json.Encoder()


def state_message(tr: Transition) -> tuple[bytes, bytes]:
    """Key and value of the control message for a (non-alert) transition."""
    return tr.scope.encode(), _encoder.encode(StateRecord(tr.scope, tr.to, tr))


def heartbeat_message(hb: HeartbeatRecord) -> tuple[bytes, bytes]:
    """Key and value of a heartbeat message."""
    return HEARTBEAT_KEY, _encoder.encode(hb)


def decode_record(value: bytes | None) -> Record | None:
    """Decode a control message value; None for tombstones and anything unreadable."""
    if not value:
        return None
    try:
        record: Record = _decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return record
