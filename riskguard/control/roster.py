"""The users file in force, hot-reloaded like the limits (on file change and SIGHUP).

A good file replaces the users between two requests; the audit log records the names
added, removed, or with a new role or token (never a hash). A bad (or deleted) file
changes nothing: the users in force stay, and the rejection, naming the file, the
entry and the field, is logged, audited, counted
(``riskguard_users_reloads_total{result="rejected"}``) and shown in ``/v1/status``
once per change of the file: the same bad bytes (or the same missing file) are not
rejected again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Any

import watchfiles

from riskguard import log
from riskguard.control.users import Directory, User, UsersError, diff, read
from riskguard.ingest.ports import AuditTrail
from riskguard.metrics import Metrics

MISSING = "missing"
"""The digest remembered for a file that could not be read (one rejection until it is back)."""


class Roster:
    """Who may do what: the :class:`~riskguard.control.users.Directory` in force.

    ``path`` is the users file (None: only the break-glass token, if any). Raises
    :class:`~riskguard.control.users.UsersError` from the constructor when the file
    cannot be used at start: riskguard does not start with the wrong people.
    """

    def __init__(
        self,
        path: str | None,
        break_glass_token: str | None,
        audit: AuditTrail,
        metrics: Metrics,
    ) -> None:
        self.path = Path(path) if path else None
        self.audit = audit
        self.metrics = metrics
        self._break_glass = break_glass_token
        self._log = log.get("users")
        self.digest = ""
        self.last_error = ""
        self._rejected_digest = ""
        self._task: asyncio.Task[None] | None = None
        users: tuple[User, ...] = ()
        if self.path is not None:
            users, self.digest = read(self.path)
        self.directory = Directory(users, break_glass_token)

    def status(self) -> dict[str, Any]:
        """For ``/v1/status``: the file, its digest, people per role, the last rejection."""
        return {
            "file": str(self.path) if self.path else None,
            "sha256": self.digest or None,
            "roles": self.directory.summary(),
            "break_glass": self._break_glass is not None,
            "last_reload_error": self.last_error or None,
        }

    def reload(self, trigger: str) -> bool:
        """Re-read the users file; True when a changed, valid file was swapped in.

        Never raises for a bad file: the users in force stay (see the module docstring).
        """
        if self.path is None:
            return False
        try:
            users, digest = read(self.path)
        except UsersError as exc:
            self._rejected(trigger, exc)
            return False
        self._rejected_digest = ""
        self.last_error = ""
        if digest == self.digest:
            return False
        change = diff(self.directory.users, users)
        self.directory = Directory(users, self._break_glass)
        old, self.digest = self.digest, digest
        self.metrics.users_reloads.labels("applied").inc()
        self.audit.record(
            "users_reload",
            {
                "trigger": trigger,
                "result": "applied",
                "path": str(self.path),
                "from_sha256": old,
                "to_sha256": digest,
                **change,
            },
        )
        self._log.warning("users reloaded", trigger=trigger, users=len(users), **change)
        return True

    def _rejected(self, trigger: str, exc: UsersError) -> None:
        assert self.path is not None
        try:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            digest = MISSING
        if digest == self._rejected_digest:
            return  # this very file was rejected already: one rejection per change
        self._rejected_digest = digest
        self.last_error = "; ".join(exc.problems)
        self.metrics.users_reloads.labels("rejected").inc()
        self.audit.record(
            "users_reload",
            {
                "trigger": trigger,
                "result": "rejected",
                "path": str(self.path),
                "problems": exc.problems,
                "kept_sha256": self.digest,
            },
        )
        self._log.error(
            "users file rejected; the users in force stay",
            trigger=trigger,
            problems=exc.problems,
        )

    def start_watching(self) -> bool:
        """Watch the users file's folder in the background; False without a users file."""
        if self.path is None:
            return False
        self._task = asyncio.create_task(self._watch(), name="users-watch")
        return True

    async def _watch(self) -> None:
        assert self.path is not None
        folder = self.path.parent
        async for _changes in watchfiles.awatch(folder, debounce=200, step=50, recursive=False):
            self.reload("file-change")

    async def stop(self) -> None:
        """Stop watching."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
