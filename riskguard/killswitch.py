"""The latched, scoped kill switch: ACTIVE -> REDUCE_ONLY -> HALTED, per scope.

A breach (or an operator) can only make a scope stricter; only an explicit
resume with an operator name and a reason lowers it, back to ACTIVE. Every
change is a :class:`Transition` carrying its evidence. Applying the same change
twice does nothing and returns ``None``: transitions are idempotent.

With riskguard instances running active-active (``docs/deployment.md``), each kill
switch also *adopts* the state records the other instances publish
(:meth:`KillSwitch.adopt`): the strictest state wins, and only an operator's resume
lowers one.

The state itself lives in the engine's scopes bundle (``Scopes.state``) so the
numba kernel can escalate mid-batch; this class is the only Python code that
writes it, and the only producer of transition records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec
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

__all__ = [
    "Adoption",
    "KillSwitch",
    "Listener",
    "State",
    "Transition",
    "system_alert",
    "transition_id",
]


Listener = Callable[[Transition], Any]
Adoption = Literal["adopted", "same", "kept", "unknown"]
"""What :meth:`KillSwitch.adopt` did with another instance's transition: ``adopted`` (the
state changed), ``same`` (already in that state), ``kept`` (ours is stricter, or newer
than the resume: the caller re-publishes ours) or ``unknown`` (a state this version
does not know: nothing changed)."""


class KillSwitch:
    """Per-scope latched trading states over the engine's state array."""

    def __init__(
        self,
        keys: KeySpace,
        scopes: Callable[[], np.ndarray],
        clock: Callable[[], int],
        reserve: Callable[[], None] | None = None,
    ) -> None:
        """``scopes`` returns the engine's live SCOPE records (the array is replaced on
        growth); ``reserve`` grows them to fit every interned scope (called when an
        action names a scope no event has shown yet)."""
        self._keys = keys
        self._scopes = scopes
        self._clock = clock
        self._reserve = reserve
        self._standing: dict[str, Transition] = {}
        self._listeners: list[Listener] = []
        #: scope -> its latest resume (local, adopted or restored)
        self._resumed: dict[str, Transition] = {}
        self.instance: str | None = None
        """This riskguard instance's name, stamped on every transition it decides
        (``Transition.instance``); set by the sidecar, None in a replay."""

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

    def latest(self, scope: str) -> Transition | None:
        """The transition ``scope`` stands on: the one that put it in its state, or for
        an ACTIVE scope the resume that last lifted one (None when there is none)."""
        return self._standing.get(scope) or self._resumed.get(scope)

    # listening ---------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every transition; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, tr: Transition) -> Transition:
        if not tr.is_alert:
            if tr.to == "ACTIVE":
                self._standing.pop(tr.scope, None)
                self._resumed[tr.scope] = tr
            else:
                self._standing[tr.scope] = tr
        for listener in list(self._listeners):
            listener(tr)
        return tr

    # changing ----------------------------------------------------------------
    def record(self, tr: Transition) -> Transition:
        """Record a transition the kernel already applied to the state array.

        Stamped with :attr:`instance`. A state change whose id is the one the scope's
        latest resume lifted (a feed still silent since the same moment halts again)
        is named after that resume instead, so each halt has an id of its own.
        """
        if tr.instance is None and self.instance is not None:
            tr = msgspec.structs.replace(tr, instance=self.instance)
        resumed = self._resumed.get(tr.scope)
        if not tr.is_alert and resumed is not None and resumed.ends == tr.id:
            tr = msgspec.structs.replace(tr, id=transition_id(tr.scope, resumed.decided_ns, tr.to))
        return self._emit(tr)

    def escalate(self, tr: Transition) -> Transition | None:
        """Latch a decision made outside the kernel (group mode's summed rules,
        :mod:`riskguard.aggregate.judge`): ``tr.to`` on ``tr.scope`` if stricter than its
        state, recorded with the state it left as ``from_``. None if not stricter."""
        sid = self._sid(tr.scope)
        state = self._scopes()["state"]
        old, new = int(state[sid]), STATE_CODE[tr.to]
        if old >= new:
            return None
        state[sid] = new
        return self.record(msgspec.structs.replace(tr, from_=STATES[old]))

    def _sid(self, scope: str) -> int:
        """The scope id of ``scope``, interned (and the records grown) if new."""
        sid = self._keys.scope_of(scope)
        if sid >= self._scopes().shape[0] and self._reserve is not None:
            self._reserve()
        return sid

    def halt(
        self, scope: str, operator: str, reason: str, action: str = "halt"
    ) -> Transition | None:
        """Manually escalate ``scope`` (``halt`` or ``reduce_only``). None if already there."""
        _require(operator, reason)
        if action not in ("halt", "reduce_only"):
            raise ValueError(f"action must be 'halt' or 'reduce_only', got {action!r}")
        parse_scope(scope)
        sid = self._sid(scope)
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
                instance=self.instance,
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
                instance=self.instance,
            )
        )

    def restore(self, tr: Transition) -> bool:
        """Re-assert the latest published transition of a scope (read back after a restart).

        Its state is put back (never lowering a stricter one) and its decision time
        becomes the scope's judged time, so replaying the events that led to it, or
        to the resume that ended it, decides nothing twice. True if the state changed.
        """
        sid = self._sid(tr.scope)
        state, judged = self._scopes()["state"], self._scopes()["judged_ns"]
        judged[sid] = max(int(judged[sid]), tr.decided_ns)
        if tr.to == "ACTIVE":
            self._resumed[tr.scope] = tr
        new = STATE_CODE[tr.to]
        if int(state[sid]) >= new:
            return False
        state[sid] = new
        self._standing[tr.scope] = tr
        return True

    def reassert(self) -> int:
        """After the engine's state arrays were rebuilt empty (a consumer-group
        rebalance, :mod:`riskguard.ingest.group`): latch every standing state and judged
        time again from the transitions held here. Returns how many scopes it latched."""
        latched = 0
        for tr in [*self._resumed.values(), *self._standing.values()]:
            latched += self.restore(tr)
        return latched

    def adopt(self, tr: Transition) -> Adoption:
        """Align with a state change another riskguard instance published.

        The strictest state wins, and only an operator's resume lowers one:

        - a stricter state is latched, with ``tr`` as its evidence (``adopted``);
        - the same state changes nothing (``same``; our evidence stays);
        - a manual resume is carried out when it covers our standing transition (it
          names it in ``ends``, or that transition's evidence is no newer than the
          resume's decision): breaches up to the resume are judged, as for a local
          :meth:`resume` (``adopted``);
        - anything else less strict (an automatic state below ours, a resume of a halt
          decided on newer evidence) is refused (``kept``), and so is a stricter state
          the scope's latest resume here already judged: one whose id that resume
          lifted, or an automatic one on evidence no newer than the resume (the other
          instance decided it before it read the resume). The caller re-publishes
          :meth:`latest`, so the control topic, whose latest record per scope is what
          gates act on, shows what this instance holds.

        Adopted transitions reach the listeners as local ones do; nothing is published
        here. Returns what happened. Raises
        :class:`~riskguard.vocabulary.ScopeError` for a malformed scope.
        """
        new = STATE_CODE.get(tr.to)
        if new is None or tr.is_alert:
            return "unknown"
        sid = self._sid(tr.scope)
        state, judged = self._scopes()["state"], self._scopes()["judged_ns"]
        old = int(state[sid])
        if new == old:
            if new == ACTIVE and tr.kind == "manual":  # a person judged the scope then
                judged[sid] = max(int(judged[sid]), tr.decided_ns)
                self._resumed[tr.scope] = tr
            return "same"
        if new > old:
            resumed = self._resumed.get(tr.scope)
            if resumed is not None and (
                resumed.ends == tr.id or (tr.kind == "auto" and tr.ts <= resumed.decided_ns)
            ):
                return "kept"  # decided before the other instance read our resume
            state[sid] = new
            self._emit(tr)
            return "adopted"
        mine = self._standing.get(tr.scope)
        covered = mine is None or mine.id == tr.ends or mine.ts <= tr.decided_ns
        if new != ACTIVE or tr.kind != "manual" or not covered:
            return "kept"
        state[sid] = ACTIVE
        judged[sid] = max(int(judged[sid]), tr.decided_ns)
        self._emit(tr)
        return "adopted"


def _state_name(code: int) -> State:
    return STATES[code]


def _require(operator: str, reason: str) -> None:
    if not isinstance(operator, str) or not operator.strip():
        raise ValueError("an operator name is required")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a reason is required")
