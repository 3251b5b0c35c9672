"""The gate's decision: may this order go, given what the control topic says?

Pure functions of a :class:`~riskguard.control.view.ControlView`, the heartbeat
timeout and an :class:`~riskguard.control.view.Instant`: no I/O, no clock of their
own. :class:`riskguard.gate.Gate` answers through them, and so do the language-neutral
test vectors (``docs/control-topic-vectors.json``); ``docs/control-topic.md`` is
the contract they implement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from riskguard.control.records import StateRecord
from riskguard.control.view import ControlView, Instant
from riskguard.evidence import evidence
from riskguard.vocabulary import STATE_CODE, STATES, order_scopes

__all__ = ["Verdict", "allows", "health", "heartbeat_age_ns"]

VerdictState = Literal["ACTIVE", "REDUCE_ONLY", "HALTED", "UNKNOWN"]
#: Rank of a state no v1 reader knows: stricter than HALTED (fail closed).
_UNKNOWN_RANK = len(STATES)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one ``allows`` call. Truthy when the order may be sent.

    ``state`` is ``UNKNOWN`` when failing closed (no fresh, ready heartbeat, or a
    scope in a state this reader does not know); ``scope`` names the scope that
    decided, ``None`` when none did.
    """

    allowed: bool
    reason: str
    state: VerdictState
    scope: str | None = None

    def __bool__(self) -> bool:
        return self.allowed


def heartbeat_age_ns(view: ControlView, at: Instant) -> int | None:
    """Age of the latest heartbeat at ``at``, in ns; ``None`` before any heartbeat.

    The age it already had when read, by riskguard's own ``ts`` (never below 0, for
    a reader whose clock is behind riskguard's), plus the monotonic time since it was
    read. A heartbeat replayed from the topic long after it was written is therefore
    old from the moment it is read.
    """
    hb, read = view.heartbeat, view.heartbeat_read
    if hb is None or read is None:
        return None
    return max(0, read.wall_ns - hb.ts) + (at.mono_ns - read.mono_ns)


def health(view: ControlView, heartbeat_timeout_ms: int, at: Instant) -> Verdict:
    """Whether riskguard is alive and ready at ``at`` (the fail-closed part of ``allows``).

    Refused (state ``UNKNOWN``) with no heartbeat yet, when the latest heartbeat's age
    is ``heartbeat_timeout_ms`` or more, or when it says ``ready: false``.
    """
    hb = view.heartbeat
    age_ns = heartbeat_age_ns(view, at)
    if hb is None or age_ns is None:
        return Verdict(False, "fail closed: no heartbeat from riskguard yet", "UNKNOWN")
    if age_ns >= heartbeat_timeout_ms * 1_000_000:
        silent_ms = (at.wall_ns - hb.ts) / 1e6
        return Verdict(
            False,
            f"fail closed: riskguard silent for {silent_ms:,.0f} ms "
            f"(timeout {heartbeat_timeout_ms} ms)",
            "UNKNOWN",
        )
    if not hb.ready:
        return Verdict(False, f"fail closed: riskguard {hb.instance} is not ready", "UNKNOWN")
    return Verdict(True, "riskguard alive", "ACTIVE")


def allows(
    view: ControlView,
    heartbeat_timeout_ms: int,
    at: Instant,
    account: str,
    strategy: str,
    symbol: str,
    side: Literal["buy", "sell"],
    reduces_position: bool,
) -> Verdict:
    """May this order be sent at ``at``? Checks health, then firm, account, strategy, symbol.

    The strictest of the four scopes' states decides (the widest on a tie). HALTED
    refuses; REDUCE_ONLY allows only orders with ``reduces_position=True``; a state
    this reader does not know refuses (``UNKNOWN``). Raises ``ValueError`` when
    ``side`` is not ``"buy"`` or ``"sell"``.
    """
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
    alive = health(view, heartbeat_timeout_ms, at)
    if not alive:
        return alive
    worst: StateRecord | None = None
    for scope in order_scopes(account, strategy, symbol):
        record = view.states.get(scope)
        if record is not None and (worst is None or _rank(record) > _rank(worst)):
            worst = record
    if worst is None or worst.state == "ACTIVE":
        return Verdict(True, "allowed", "ACTIVE")
    why = _evidence(worst)
    if worst.state == "REDUCE_ONLY" and reduces_position:
        return Verdict(
            True,
            f"{worst.scope} is REDUCE_ONLY; order reduces position",
            "REDUCE_ONLY",
            worst.scope,
        )
    if worst.state == "REDUCE_ONLY":
        return Verdict(False, f"{worst.scope} is REDUCE_ONLY ({why})", "REDUCE_ONLY", worst.scope)
    if worst.state == "HALTED":
        return Verdict(False, f"{worst.scope} is HALTED ({why})", "HALTED", worst.scope)
    return Verdict(
        False,
        f"fail closed: {worst.scope} is in unknown state {worst.state!r} ({why})",
        "UNKNOWN",
        worst.scope,
    )


def _rank(record: StateRecord) -> int:
    return STATE_CODE.get(record.state, _UNKNOWN_RANK)


def _evidence(record: StateRecord) -> str:
    return evidence(record.transition)
