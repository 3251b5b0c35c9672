"""The latched, scoped kill switch: ACTIVE -> REDUCE_ONLY -> HALTED, per scope.

A breach (or an operator) can only make a scope stricter; only an explicit
resume with an operator name and a reason lowers it, back to ACTIVE. Every
change is a :class:`Transition` carrying its evidence. Applying the same change
twice does nothing and returns ``None``: transitions are idempotent.

The state itself lives in the engine's scopes bundle (``Scopes.state``) so the
numba kernel can escalate mid-batch; this class is the only Python code that
writes it, and the only producer of transition records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from riskguard.state.codes import FIRM
from riskguard.state.keys import KeySpace
from riskguard.vocabulary import (
    ACTION_CODE,
    ACTIVE,
    STATE_CODE,
    STATES,
    State,
    Transition,
    order_scopes,
    parse_scope,
    system_alert,
    transition_id,
)

__all__ = ["KillSwitch", "Listener", "State", "Transition", "system_alert", "transition_id"]


Listener = Callable[[Transition], Any]


class KillSwitch:
    """Per-scope latched trading states over the engine's state array."""

    def __init__(
        self, keys: KeySpace, scopes: Callable[[], np.ndarray], clock: Callable[[], int]
    ) -> None:
        """``scopes`` returns the engine's live SCOPE records (the array is replaced on growth)."""
        self._keys = keys
        self._scopes = scopes
        self._clock = clock
        self._standing: dict[str, Transition] = {}
        self._listeners: list[Listener] = []

    # reading ----------------------------------------------------------------
    def state(self, scope: str) -> State:
        """The latched state of one scope (not counting the scopes above it)."""
        sid = self._keys.find_scope(scope)
        if sid is None:
            return "ACTIVE"
        return _state_name(int(self._scopes()["state"][sid]))

    def effective(self, account: str, strategy: str, symbol: str) -> State:
        """The strictest state over firm, account, strategy and symbol for one order."""
        state = self._scopes()["state"]
        worst = int(state[FIRM])
        for scope in order_scopes(account, strategy, symbol)[1:]:
            sid = self._keys.find_scope(scope)
            if sid is not None:
                worst = max(worst, int(state[sid]))
        return _state_name(worst)

    def standing(self) -> dict[str, Transition]:
        """Every scope not ACTIVE, with the transition that put it there."""
        return dict(self._standing)

    # listening ---------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every transition; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, tr: Transition) -> Transition:
        if not tr.is_alert:
            if tr.to == "ACTIVE":
                self._standing.pop(tr.scope, None)
            else:
                self._standing[tr.scope] = tr
        for listener in list(self._listeners):
            listener(tr)
        return tr

    # changing ----------------------------------------------------------------
    def record(self, tr: Transition) -> Transition:
        """Record a transition the kernel already applied to the state array."""
        return self._emit(tr)

    def halt(
        self, scope: str, operator: str, reason: str, action: str = "halt"
    ) -> Transition | None:
        """Manually escalate ``scope`` (``halt`` or ``reduce_only``). None if already there."""
        _require(operator, reason)
        if action not in ("halt", "reduce_only"):
            raise ValueError(f"action must be 'halt' or 'reduce_only', got {action!r}")
        parse_scope(scope)
        sid = self._keys.scope_of(scope)
        state = self._scopes()["state"]
        old, new = int(state[sid]), ACTION_CODE[action]
        if old >= new:
            return None
        state[sid] = new
        now = self._clock()
        return self._emit(
            Transition(
                id=transition_id(scope, now, STATES[new]),
                scope=self._keys.scope_names[sid],
                from_=STATES[old],
                to=STATES[new],
                kind="manual",
                ts=now,
                decided_ns=now,
                operator=operator,
                reason=reason,
            )
        )

    def resume(
        self, scope: str, operator: str, reason: str, *, approved_by: str | None = None
    ) -> Transition | None:
        """Lower ``scope`` to ACTIVE. None if it already is.

        ``approved_by`` names the second person of a four-eyes resume (``operator``
        asked for it).
        """
        _require(operator, reason)
        parse_scope(scope)
        sid = self._keys.find_scope(scope)
        state, judged = self._scopes()["state"], self._scopes()["judged_ns"]
        if sid is None or int(state[sid]) == ACTIVE:
            return None
        old = int(state[sid])
        state[sid] = ACTIVE
        now = self._clock()
        # Breaches evidenced by events up to now were judged by this person: only newer
        # events may halt the scope again (late events from a lagging partition may not).
        judged[sid] = max(int(judged[sid]), now)
        name = self._keys.scope_names[sid]
        lifted = self._standing.get(name)
        return self._emit(
            Transition(
                id=transition_id(name, now, "ACTIVE"),
                scope=name,
                from_=STATES[old],
                to="ACTIVE",
                kind="manual",
                ts=now,
                decided_ns=now,
                operator=operator,
                reason=reason,
                ends=lifted.id if lifted else None,
                approved_by=approved_by,
            )
        )

    def restore(self, tr: Transition) -> bool:
        """Re-assert the latest published transition of a scope (read back after a restart).

        Its state is put back (never lowering a stricter one) and its decision time
        becomes the scope's judged time, so replaying the events that led to it, or
        to the resume that ended it, decides nothing twice. True if the state changed.
        """
        sid = self._keys.scope_of(tr.scope)
        state, judged = self._scopes()["state"], self._scopes()["judged_ns"]
        judged[sid] = max(int(judged[sid]), tr.decided_ns)
        new = STATE_CODE[tr.to]
        if int(state[sid]) >= new:
            return False
        state[sid] = new
        self._standing[tr.scope] = tr
        return True


def _state_name(code: int) -> State:
    return STATES[code]


def _require(operator: str, reason: str) -> None:
    if not isinstance(operator, str) or not operator.strip():
        raise ValueError("an operator name is required")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a reason is required")
