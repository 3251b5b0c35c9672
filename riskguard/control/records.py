"""Control topic records (schema v1). The topic is compacted and keyed by scope.

* key ``<scope>`` (e.g. ``strategy:smars``): a :class:`StateRecord` with the
  scope's current state and the transition that set it. A trading system that
  starts late reads the topic from the beginning and knows every standing halt.
* key ``__heartbeat__``: a :class:`HeartbeatRecord`, every
  ``runtime.heartbeat_interval_ms`` (250 ms by default) while riskguard's loop is
  healthy. Gates fail closed when it stops or says riskguard is not ready.
* key ``cancel:<scope>:<part>``: a :class:`CancelRecord`, one part of the list of working
  orders riskguard asks the trading system to cancel when ``<scope>`` is halted (or set
  reduce-only: only the orders that would increase the position). A gate delivers a part
  while the halt it names (``halt_id``) is the scope's standing transition. In group
  mode each member names the orders of its own partitions, in parts tagged with its
  name (``source``) and keyed ``cancel:<scope>:<source>:<part>``.
* key ``__rules__``: a :class:`RulesRecord`, the per-order rules of the limits in force,
  for the gate's pre-trade ``check()``; re-published on every limits reload.
* key ``mark:<symbol>``: a :class:`MarkRecord`, the reference price riskguard values the
  symbol at (throttled per symbol).
* key ``instrument:<symbol>``: an :class:`InstrumentRecord`, the contract size and exchange
  rate riskguard values the symbol's orders at, priced or not (a gate values an order in
  a future never traded nor marked as riskguard does).
* key ``position:<scope>:<symbol>``: a :class:`PositionRecord`, riskguard's net position of
  a REDUCE_ONLY scope in a symbol (the gate refuses orders that would increase it).
* key ``home:<strategy>``: a :class:`HomeRecord`, the strategy's home account (where a
  strategy rule's ``match.account`` looks), so a gate selects such rules as riskguard does.
* key ``approval:<scope>``: an :class:`ApprovalRecord`, the latest step of a four-eyes
  resume request of the scope, for the other riskguard instances (gates ignore it).

Every riskguard instance of an active-active pair writes its own heartbeats (named in
``instance``) under the one heartbeat key; readers keep the latest of each instance.

``docs/control-topic.md`` is the public contract for these records (fields, types,
units, forward compatibility). The gate needs this module and msgspec, never the engine.
"""

from __future__ import annotations

from typing import Final

import msgspec
from msgspec import UNSET, UnsetType

from riskguard.vocabulary import Transition

HEARTBEAT_KEY: Final = b"__heartbeat__"


class StateRecord(msgspec.Struct, frozen=True, tag="state", tag_field="type"):
    """The standing state of one scope."""

    scope: str
    state: str
    transition: Transition
    v: int = 1


class HeartbeatRecord(msgspec.Struct, frozen=True, tag="heartbeat", tag_field="type"):
    """riskguard instance ``instance`` is alive. ``last_event_ns`` is the newest event time
    it has applied; ``limits_sha256`` (optional) the digest of the limits it judges with."""

    ts: int
    instance: str
    ready: bool
    interval_ms: int
    last_event_ns: int = -1
    events_applied: int = 0
    limits_sha256: str | None = None
    v: int = 1


CANCEL_PART_MAX: Final = 500
"""Orders per cancel record: a large scope's list is split into bounded parts."""


class CancelOrder(msgspec.Struct, frozen=True):
    """One working order riskguard asks to cancel. ``open_qty`` = quantity not yet filled."""

    order_id: str
    account: str
    strategy: str
    symbol: str
    side: str
    open_qty: float


class CancelRecord(msgspec.Struct, frozen=True, tag="cancel", tag_field="type"):
    """Part ``part`` of ``parts`` of the cancel request of one halt (or reduce-only).

    ``halt_id`` is the ``id`` of the transition that asked for it; ``kind`` is ``"halt"``
    or ``"reduce_only"``; ``reason`` is the transition's evidence in words; ``ts`` is when
    riskguard asked (ns). ``orders`` may be empty (nothing was working).

    ``source`` (v1.3, optional): the group-mode member (its ``runtime.instance``) that
    named these orders, those of its own input partitions; each member's parts are
    numbered on their own. Absent (``UNSET``, not written), ``None`` or ``""``: the
    request of an instance that knows every order (single mode, active-active).
    """

    halt_id: str
    scope: str
    kind: str
    reason: str
    part: int
    parts: int
    orders: tuple[CancelOrder, ...]
    ts: int
    source: str | UnsetType | None = UNSET
    v: int = 1

    @property
    def named_by(self) -> str:
        """``source`` as a string: ``""`` for an instance that knows every order."""
        return self.source or ""

    @property
    def slot(self) -> tuple[str, int]:
        """(:attr:`named_by`, ``part``): the part among a halt's parts (one per member and
        part number), as a reader keeps them."""
        return self.source or "", self.part


class RuleRecord(msgspec.Struct, frozen=True):
    """One per-order rule (``order_qty``, ``order_notional`` or ``price_deviation``).

    ``match`` maps a match field (``account``, ``strategy``, ``symbol``, ``venue`` for a
    venue-scope rule; ``side`` and ``venue`` selecting orders, v1.2) to the keys the rule
    is limited to (absent: every key at its scope). ``max``/``min``: the bounds.
    """

    name: str
    metric: str
    scope: str
    action: str
    match: dict[str, tuple[str, ...]] = {}
    max: float | None = None
    min: float | None = None


class RestrictedRecord(msgspec.Struct, frozen=True):
    """One restricted-list entry (v1.2): orders in ``symbols`` (by ``accounts`` /
    ``strategies`` when named) are refused before sending, unless ``action`` is ``alert``."""

    name: str
    symbols: tuple[str, ...]
    reason: str
    action: str
    accounts: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()


class RulesRecord(msgspec.Struct, frozen=True, tag="rules", tag_field="type"):
    """The per-order rules of the limits in force (``limits_sha256``), for pre-trade checks,
    and (v1.2) the restricted list."""

    limits_sha256: str
    rules: tuple[RuleRecord, ...]
    ts: int
    restricted: tuple[RestrictedRecord, ...] = ()
    v: int = 1


class MarkRecord(msgspec.Struct, frozen=True, tag="mark", tag_field="type"):
    """The reference price of ``symbol`` riskguard values positions at, as of ``ts``.

    v1.2: ``multiplier`` (contract size) and ``rate`` (base currency per unit of the
    symbol's currency; None while riskguard has no rate for it): a notional is
    qty x |price| x multiplier x rate. Absent: 1 and 1 (the v1 meaning).
    """

    symbol: str
    price: float
    ts: int
    multiplier: float = 1.0
    rate: float | None = 1.0
    v: int = 1


class InstrumentRecord(msgspec.Struct, frozen=True, tag="instrument", tag_field="type"):
    """How riskguard values ``symbol``'s money as of ``ts`` (ns), before any price too:
    ``multiplier`` (contract size) and ``rate`` (base currency per unit of the symbol's
    currency; None while riskguard has no rate for it). Written for every symbol an
    ``instrument`` event described, when either changes. A gate takes a symbol's size and
    rate from its :class:`MarkRecord` when there is one (the same values), else from
    this record, else 1 and 1 (added within v1: older readers skip it).
    """

    symbol: str
    ts: int
    multiplier: float = 1.0
    rate: float | None = 1.0
    v: int = 1


class PositionRecord(msgspec.Struct, frozen=True, tag="position", tag_field="type"):
    """riskguard's net position (long > 0) of ``scope`` in ``symbol``, as of ``ts``.

    Published for REDUCE_ONLY scopes (``firm``, ``account:<id>``, ``strategy:<id>``; a
    ``symbol:<id>`` scope's position is the firm's in that symbol). ``buy_leaves`` and
    ``sell_leaves`` (added within v1; absent, not written, when 0) are what the working buy and sell
    orders that move that position may still fill, as of ``ts`` (FIX LeavesQty summed,
    units >= 0): a gate judges a reducing order against the position net of them.
    """

    scope: str
    symbol: str
    qty: float
    ts: int
    v: int = 1
    buy_leaves: float | UnsetType = UNSET
    sell_leaves: float | UnsetType = UNSET

    @property
    def leaves(self) -> tuple[float, float]:
        """(``buy_leaves``, ``sell_leaves``), 0.0 for one absent."""
        buys, sells = self.buy_leaves, self.sell_leaves
        return (0.0 if buys is UNSET else buys, 0.0 if sells is UNSET else sells)


class HomeRecord(msgspec.Struct, frozen=True, tag="home", tag_field="type"):
    """``strategy``'s home account: the account of the first event riskguard read that
    named the strategy (it never changes). A strategy rule's ``match.account`` selects
    strategies by it, wherever the order trades; ``ts`` (ns) is when riskguard wrote it.
    Added within v1: older readers skip it."""

    strategy: str
    account: str
    ts: int
    v: int = 1


APPROVAL_EVENTS: Final = ("requested", "approved", "withdrawn", "voided", "expired")
"""The steps of a four-eyes request (:mod:`riskguard.control.approvals`)."""


class ApprovalRecord(msgspec.Struct, frozen=True, tag="approval", tag_field="type"):
    """One step (``event``, one of :data:`APPROVAL_EVENTS`) of a four-eyes resume request,
    published by riskguard instance ``instance`` at ``ts`` (ns), so that another
    instance's API can approve or withdraw it. ``how`` says how an ended request ended
    (``approved by bob``); ``lifts`` is the id of the transition the resume would lift.
    Times are ns since the epoch, UTC. Gates ignore these records."""

    event: str
    request_id: str
    scope: str
    requested_by: str
    reason: str
    requested_ns: int
    expires_ns: int
    instance: str
    ts: int
    lifts: str | None = None
    how: str | None = None
    v: int = 1


RULES_KEY: Final = b"__rules__"

Record = (
    StateRecord
    | HeartbeatRecord
    | CancelRecord
    | RulesRecord
    | MarkRecord
    | InstrumentRecord
    | PositionRecord
    | HomeRecord
    | ApprovalRecord
)
_decoder: Final = msgspec.json.Decoder(Record)
_encoder: Final = msgspec.json.Encoder()


def state_message(tr: Transition) -> tuple[bytes, bytes]:
    """Key and value of the control message for a (non-alert) transition."""
    return tr.scope.encode(), _encoder.encode(StateRecord(tr.scope, tr.to, tr))


def heartbeat_message(hb: HeartbeatRecord) -> tuple[bytes, bytes]:
    """Key and value of a heartbeat message."""
    return HEARTBEAT_KEY, _encoder.encode(hb)


def cancel_key(scope: str, part: int, source: str = "") -> bytes:
    """Compaction key of part ``part`` of a scope's latest cancel request:
    ``cancel:<scope>:<part>``, or ``cancel:<scope>:<source>:<part>`` for the parts a
    group-mode member (``source``) named."""
    return (f"cancel:{scope}:{source}:{part}" if source else f"cancel:{scope}:{part}").encode()


def mark_key(symbol: str) -> bytes:
    """Compaction key of a symbol's mark."""
    return f"mark:{symbol}".encode()


def instrument_key(symbol: str) -> bytes:
    """Compaction key of a symbol's instrument record."""
    return f"instrument:{symbol}".encode()


def position_key(scope: str, symbol: str) -> bytes:
    """Compaction key of a scope's position in a symbol."""
    return f"position:{scope}:{symbol}".encode()


def home_key(strategy: str) -> bytes:
    """Compaction key of a strategy's home account."""
    return f"home:{strategy}".encode()


def approval_key(scope: str) -> bytes:
    """Compaction key of the latest four-eyes step of a scope's resume request."""
    return f"approval:{scope}".encode()


def encode_record(record: Record) -> bytes:
    """The value bytes of any record."""
    return _encoder.encode(record)


def decode_record(value: bytes | None) -> Record | None:
    """Decode a control message value; None for tombstones and anything unreadable."""
    if not value:
        return None
    try:
        record: Record = _decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return record
