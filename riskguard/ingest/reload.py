"""Hot reload of the limits file: on file change (directory watch) and on SIGHUP.

The new file is validated in full first. A bad file changes nothing: the old
limits stay in force, the problems are logged, counted
(``riskguard_limits_reloads_total{result="rejected"}``), audited and sent to the
notifiers. A good file is swapped in between two batches (the engine is owned by
one task, so the swap is atomic with respect to event processing), its per-order
rules go to the control topic for every gate (``__rules__``), and the audit log
records the diff of the rules.

The directory is watched, not the file: Kubernetes updates a ConfigMap by swapping
a ``..data`` symlink, which never touches the file's own inode. Only events on the
file's name and on ``..``-prefixed entries (the ConfigMap's) are looked at, and a
change is acted on only when the file's bytes (or its absence) differ from the last
ones seen: a bad or deleted file is rejected once per change, however many times the
folder changes meanwhile (the audit log or journal may live beside it).

SIGHUP re-reads the users file, then the limits (:func:`on_sighup`); when neither
changed, one line says so and names the files and digests checked.

Written against narrow interfaces (:mod:`riskguard.ingest.ports`), not the sidecar;
the rejection alert goes out through the outbox like every other transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import watchfiles

from riskguard import log
from riskguard.audit import AuditLog
from riskguard.ingest.ports import (
    LimitsOwner,
    RulesChannel,
    ScopeStates,
    TransitionSink,
    UsersFile,
)
from riskguard.limits import Limits, LimitsError, parse
from riskguard.limits.model import Rule
from riskguard.metrics import Metrics
from riskguard.vocabulary import system_alert


def diff_rules(old: Limits, new: Limits) -> dict[str, Any]:
    """Rules added, removed, and changed (field by field), by rule name."""
    before = {r.name: r for r in old.rules}
    after = {r.name: r for r in new.rules}
    changed: dict[str, dict[str, list[Any]]] = {}
    for name in before.keys() & after.keys():
        a, b = _plain(before[name]), _plain(after[name])
        fields = {k: [a.get(k), b.get(k)] for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        if fields:
            changed[name] = fields
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": changed,
    }


def _plain(rule: Rule) -> dict[str, Any]:
    return {
        "metric": rule.metric,
        "scope": rule.scope,
        "action": rule.action,
        "max": rule.max,
        "min": rule.min,
        "window_ms": rule.window_ms,
        "min_orders": rule.min_orders,
        "match": {k: list(v) for k, v in rule.match.items()},
        "description": rule.description,
    }


class LimitsReloader:
    """Validates the limits file and swaps it into ``owner`` (the engine).

    ``states`` gives the firm's state for the rejection alert, which goes to
    ``outbox``; every reload, applied or rejected, is audited and counted. Limits
    swapped in are handed to ``rules`` (the gates' per-order rules on the control
    topic).
    """

    def __init__(
        self,
        path: str | Path,
        owner: LimitsOwner,
        states: ScopeStates,
        outbox: TransitionSink,
        audit: AuditLog,
        metrics: Metrics,
        rules: RulesChannel | None = None,
        check: Callable[[Limits], None] | None = None,
    ) -> None:
        """``check`` refuses limits this instance cannot judge (raises
        :class:`LimitsError`, e.g. group mode's cross-partition rules): a reload it
        refuses is rejected like a bad file."""
        self.path = Path(path)
        self.rules = rules
        self.check = check
        self.owner = owner
        self.states = states
        self.outbox = outbox
        self.audit = audit
        self.metrics = metrics
        self._log = log.get("limits")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.last_error = ""
        self._seen = owner.limits.digest
        """Digest of the file's bytes (or why it could not be read) when last looked at."""

    def _read(self) -> tuple[str, bytes | None, str]:
        """(fingerprint, bytes or None, why unreadable) of the file now."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            why = exc.strerror or str(exc)
            return f"unreadable: {why}", None, why
        return hashlib.sha256(data).hexdigest(), data, ""

    async def reload(self, trigger: str) -> bool:
        """Try to load the file; True when new limits were swapped in.

        A bad file is never raised: it is logged, counted, audited and alerted, and
        the old limits stay in force (False, as when the file did not change). A
        ``file-change`` whose file reads the same as last time does nothing at all
        (no second rejection for one bad edit); ``SIGHUP`` always looks again.
        """
        async with self._lock:
            fingerprint, data, why = await asyncio.to_thread(self._read)
            if trigger == "file-change" and fingerprint == self._seen:
                return False
            self._seen = fingerprint
            try:
                if data is None:
                    raise LimitsError(str(self.path), [f"cannot read file: {why}"])
                new = await asyncio.to_thread(parse, data, str(self.path))
                if self.check is not None:
                    self.check(new)
            except LimitsError as exc:
                await self._rejected(trigger, exc)
                return False
            old = self.owner.limits
            if new.digest == old.digest:
                self.last_error = ""  # the file is back to the limits in force
                return False
            diff = diff_rules(old, new)
            decided = self.owner.replace_limits(new)
            if self.rules is not None:
                await self.rules.rules_changed(new)
            self.last_error = ""
            self.metrics.limits_rules.set(len(new.rules))
            self.metrics.limits_reloads.labels("applied").inc()
            self.audit.record(
                "limits_reload",
                {
                    "trigger": trigger,
                    "result": "applied",
                    "path": str(self.path),
                    "from_sha256": old.digest,
                    "to_sha256": new.digest,
                    "diff": diff,
                },
            )
            self._log.warning(
                "limits reloaded",
                trigger=trigger,
                rules=len(new.rules),
                sha256=new.digest[:12],
                **diff,
            )
            if decided:  # resolves of rules removed or changed, halts of rules tightened
                await self.outbox.send(decided)
            return True

    async def _rejected(self, trigger: str, exc: LimitsError) -> None:
        self.last_error = "; ".join(exc.problems)
        self.metrics.limits_reloads.labels("rejected").inc()
        self.audit.record(
            "limits_reload",
            {
                "trigger": trigger,
                "result": "rejected",
                "path": str(self.path),
                "problems": exc.problems,
                "kept_sha256": self.owner.limits.digest,
            },
        )
        self._log.error(
            "limits reload rejected; the old limits stay in force",
            trigger=trigger,
            path=str(self.path),
            problems=exc.problems,
        )
        alert = system_alert(
            "limits-reload-rejected",
            "limits_file",
            self.states.state("firm"),
            reason=f"{self.path}: " + self.last_error[:900],
        )
        await self.outbox.send([alert])

    def start_watching(self) -> bool:
        """Watch the file's directory in the background; False (no watch) when the
        limits did not come from a real file."""
        if not self.path.is_file():
            return False
        self._task = asyncio.create_task(self._watch(), name="limits-watch")
        return True

    async def _watch(self) -> None:
        folder = self.path.parent
        name = self.path.name

        def ours(_change: watchfiles.Change, path: str) -> bool:
            entry = Path(path).name
            return entry == name or entry.startswith("..")  # the file, or a ConfigMap swap

        async for _changes in watchfiles.awatch(
            folder, watch_filter=ours, debounce=200, step=50, recursive=False
        ):
            await self.reload("file-change")

    async def stop(self) -> None:
        """Stop watching (nothing to do when not watching)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def on_sighup(limits: LimitsReloader, users: UsersFile) -> bool:
    """SIGHUP: the users file, then the limits file, re-read; True when either changed.

    A change or a rejection of the limits logs its own line; otherwise one line,
    ``SIGHUP: limits and users files unchanged`` (info), names each file checked with
    the digest (first 12 hex digits) of what stays in force; while the users file is
    rejected (its problems logged once per change of the file) it is a warning saying
    so, with the problems. Never raises for a bad file.
    """
    users_changed = users.reload("SIGHUP")
    limits_changed = await limits.reload("SIGHUP")
    if users_changed or limits_changed or limits.last_error:
        return users_changed or limits_changed
    said = log.get("reload")
    said, event = (
        (
            said.warning,
            "SIGHUP: nothing changed; the users file is rejected, the users in force stay",
        )
        if users.last_error
        else (said.info, "SIGHUP: limits and users files unchanged")
    )
    said(
        event,
        limits=str(limits.path),
        limits_sha256=limits.owner.limits.digest[:12],
        users_file=str(users.path) if users.path is not None else None,
        users_sha256=users.digest[:12] or None,
        users_rejected=users.last_error or None,
    )
    return False
