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
writes it, and the only producer of transition records. In group mode one kill switch
serves every engine of a member (its home engine and one per owned input partition,
:mod:`riskguard.ingest.partitions`): each is a *target* (:meth:`KillSwitch.attach`) and
every state and judged time is written to all of them, so a halt decided in one
partition's engine stands in the others at once.
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
    "Target",
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


class Target:
    """One engine's scopes a kill switch writes: its key space, its live SCOPE records
    (``scopes()``: the array is replaced on growth) and ``reserve()``, which grows them
    to fit every interned scope (None: they always fit)."""

    __slots__ = ("keys", "reserve", "scopes")

    def __init__(
        self,
        keys: KeySpace,
        scopes: Callable[[], np.ndarray],
        reserve: Callable[[], None] | None = None,
    ) -> None:
        self.keys, self.scopes, self.reserve = keys, scopes, reserve

    def sid(self, scope: str) -> int:
        """The scope id of ``scope`` here, interned (and the records grown) if new."""
        sid = self.keys.scope_of(scope)
        if sid >= self.scopes().shape[0] and self.reserve is not None:
            self.reserve()
        return sid


class KillSwitch:
    """Per-scope latched trading states over one or more engines' state arrays."""

    def __init__(
        self,
        keys: KeySpace,
        scopes: Callable[[], np.ndarray],
        clock: Callable[[], int],
        reserve: Callable[[], None] | None = None,
    ) -> None:
        """``scopes`` returns the engine's live SCOPE records (the array is replaced on
        growth); ``reserve`` grows them to fit every interned scope (called when an
        action names a scope no event has shown yet). That engine is the primary
        target: states are read from it; more are added with :meth:`attach`."""
        self._home = Target(keys, scopes, reserve)
        self._targets: list[Target] = [self._home]
        self._keys = keys
        self._scopes = scopes
        self._clock = clock
        self._standing: dict[str, Transition] = {}
        self._listeners: list[Listener] = []
        #: scope -> its latest resume (local, adopted or restored)
        self._resumed: dict[str, Transition] = {}
        self.instance: str | None = None
        """This riskguard instance's name, stamped on every transition it decides
        (``Transition.instance``); set by the sidecar, None in a replay."""

    # targets ----------------------------------------------------------------
    def attach(
        self,
        keys: KeySpace,
        scopes: Callable[[], np.ndarray],
        reserve: Callable[[], None] | None = None,
    ) -> Target:
        """Write every state from now on to another engine's scopes too (group mode: a
        partition's engine); every standing state and judged time held here is latched
        in it at once. Returns the target, for :meth:`detach`."""
        target = Target(keys, scopes, reserve)
        self._targets.append(target)
        for tr in [*self._resumed.values(), *self._standing.values()]:
            self._latch(target, tr)
        return target

    def detach(self, target: Target) -> None:
        """Stop writing to ``target`` (its engine was dropped). The primary target stays."""
        if target is not self._home and target in self._targets:
            self._targets.remove(target)

    def _set(self, scope: str, code: int, judged_ns: int | None = None) -> None:
        """Put ``scope`` in state ``code`` in every target, its judged time raised to
        ``judged_ns`` (None: unchanged)."""
        for t in self._targets:
            sid = t.sid(scope)
            sc = t.scopes()
            sc["state"][sid] = code
            if judged_ns is not None:
                sc["judged_ns"][sid] = max(int(sc["judged_ns"][sid]), judged_ns)

    def _latch(self, target: Target, tr: Transition) -> None:
        """``tr``'s state (never lowering a stricter one) and decision time as judged,
        in ``target`` only (one newly attached)."""
        sid = target.sid(tr.scope)
        sc = target.scopes()
        sc["judged_ns"][sid] = max(int(sc["judged_ns"][sid]), tr.decided_ns)
        sc["state"][sid] = max(int(sc["state"][sid]), STATE_CODE[tr.to])

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
        if not tr.is_alert and len(self._targets) > 1:  # decided in one engine: all hold it
            code = STATE_CODE[tr.to]
            for t in self._targets:
                sid = t.sid(tr.scope)
                state = t.scopes()["state"]
                state[sid] = max(int(state[sid]), code)
        resumed = self._resumed.get(tr.scope)
        if not tr.is_alert and resumed is not None and resumed.ends == tr.id:
            tr = msgspec.structs.replace(tr, id=transition_id(tr.scope, resumed.decided_ns, tr.to))
        return self._emit(tr)

    def escalate(self, tr: Transition) -> Transition | None:
        """Latch a decision made outside the kernel (group mode's summed rules,
        :mod:`riskguard.aggregate.judge`): ``tr.to`` on ``tr.scope`` if stricter than its
        state, recorded with the state it left as ``from_``. None if not stricter."""
        sid = self._sid(tr.scope)
        old, new = int(self._scopes()["state"][sid]), STATE_CODE[tr.to]
        if old >= new:
            return None
        self._set(tr.scope, new)
        return self.record(msgspec.structs.replace(tr, from_=STATES[old]))

    def _sid(self, scope: str) -> int:
        """The scope id of ``scope`` in the primary target, interned (and the records
        grown) if new."""
        return self._home.sid(scope)

    def halt(
        self, scope: str, operator: str, reason: str, action: str = "halt"
    ) -> Transition | None:
        """Manually escalate ``scope`` (``halt`` or ``reduce_only``). None if already there."""
        _require(operator, reason)
        if action not in ("halt", "reduce_only"):
            raise ValueError(f"action must be 'halt' or 'reduce_only', got {action!r}")
        parse_scope(scope)
        sid = self._sid(scope)
        old, new = int(self._scopes()["state"][sid]), ACTION_CODE[action]
        if old >= new:
            return None
        self._set(scope, new)
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
        state = self._scopes()["state"]
        if sid is None or int(state[sid]) == ACTIVE:
            return None
        old = int(state[sid])
        now = self._clock()
        # Breaches evidenced by events up to now were judged by this person: only newer
        # events may halt the scope again (late events from a lagging partition may not).
        self._set(scope, ACTIVE, judged_ns=now)
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
        if tr.to == "ACTIVE":
            self._resumed[tr.scope] = tr
        changed = int(self._scopes()["state"][sid]) < STATE_CODE[tr.to]
        for t in self._targets:
            self._latch(t, tr)
        if changed:
            self._standing[tr.scope] = tr
        return changed

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
        old = int(self._scopes()["state"][sid])
        if new == old:
            if new == ACTIVE and tr.kind == "manual":  # a person judged the scope then
                self._set(tr.scope, ACTIVE, judged_ns=tr.decided_ns)
                self._resumed[tr.scope] = tr
            return "same"
        if new > old:
            resumed = self._resumed.get(tr.scope)
            if resumed is not None and (
                resumed.ends == tr.id or (tr.kind == "auto" and tr.ts <= resumed.decided_ns)
            ):
                return "kept"  # decided before the other instance read our resume
            self._set(tr.scope, new)
            self._emit(tr)
            return "adopted"
        mine = self._standing.get(tr.scope)
        covered = mine is None or mine.id == tr.ends or mine.ts <= tr.decided_ns
        if new != ACTIVE or tr.kind != "manual" or not covered:
            return "kept"
        self._set(tr.scope, ACTIVE, judged_ns=tr.decided_ns)
        self._emit(tr)
        return "adopted"


def _state_name(code: int) -> State:
    return STATES[code]


def _require(operator: str, reason: str) -> None:
    if not isinstance(operator, str) or not operator.strip():
        raise ValueError("an operator name is required")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a reason is required")
