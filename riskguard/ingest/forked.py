"""Snapshots written by a forked child: the event loop pauses for a ``fork()``, not a copy.

A snapshot must reflect the state between two batches. Copying the state for it
(:func:`riskguard.snapshot.freeze`) held the event loop for as long as the copy took:
0.4-1.2 s with the redelivery memory at its default size on a shared 2-core machine
(``bench/memory.py``), during which no event was judged, no halt decided and no
heartbeat sent, at every ``runtime.snapshot_interval_s``. A ``fork()`` instead gives a
child process an image of the whole process at that instant, its pages shared
copy-on-write with the parent: the parent goes on at once (the pause is the kernel
copying page tables, about 30-40 ms for a 730 MiB process there), and the child freezes,
serialises and writes the snapshot (:meth:`riskguard.snapshot.SnapshotStore.write`:
temp file, fsync, rename, prune), sends the file's name back through a pipe and ends
with ``os._exit`` (no ``atexit``, no buffers flushed twice, no sockets closed in the
parent's name). It first closes every socket it inherited: a child still writing when
its parent crashed must not hold the HTTP port or the instance-name claim against the
restart.

What the child runs must take no lock another thread of the parent could hold at the
fork, since such a lock stays held in the child for ever: memory allocation (glibc's
fork handlers), the GIL and the import lock (CPython re-creates them) are safe; numba's
compiler lock is taken only to compile, so every jitted function the child calls is
compiled in the parent first (:func:`fork_writer`), and no fork happens while the
kernels' warm-up thread compiles (:func:`safe_to_fork`). What is left (an OpenSSL lock
held by a thread hashing a limits file at that instant) is bounded by the parent: a
child that has not finished within ``deadline_s`` is killed, logged, and the next
interval tries again (:mod:`riskguard.ingest.checkpoint`).

The child does nothing else: it logs nothing (structlog's stream belongs to the parent),
and it first detaches from the parent's signal handling (asyncio's wakeup fd would
otherwise carry a Ctrl-C the child received into the parent's loop, read there as a
second signal) and takes the default action for SIGINT, SIGTERM and SIGHUP, so that
stopping the process group stops it too (its temp file is never renamed: no snapshot).
Where ``os.fork`` does not exist, the sidecar copies and writes from a thread as before
(:mod:`riskguard.ingest.checkpoint`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from riskguard.engine import Engine
from riskguard.snapshot import SnapshotStore, chunks, freeze
from riskguard.state.tables import compacted, empty_edges

CAN_FORK = hasattr(os, "fork")
"""Whether this platform forks (Linux, macOS); else snapshots copy in the event loop."""

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class SnapshotWriterError(OSError):
    """The forked snapshot writer ended without writing (its reason, or exit status).

    ``stopped_by`` names the stop signal (``"SIGINT"``, ``"SIGTERM"``, ``"SIGHUP"``) that
    ended it, else None: a stop of the process group, not a failure."""

    def __init__(self, message: str, stopped_by: str | None = None) -> None:
        super().__init__(message)
        self.stopped_by = stopped_by


@dataclass(frozen=True)
class Writer:
    """A forked snapshot writer: its process id and the read end of its pipe."""

    pid: int
    pipe: int


_compiled = False


def safe_to_fork() -> bool:
    """False while the kernels' warm-up thread runs (it holds numba's compiler lock)."""
    return not any(t.name == "riskguard-warm-up" and t.is_alive() for t in threading.enumerate())


def _compile_in_parent() -> None:
    """Compile the jitted function a snapshot calls (the alert-edge table's compaction),
    once, so that a child never compiles (it would take numba's compiler lock, and would
    compile again in every child)."""
    global _compiled  # noqa: PLW0603 - once per process
    if not _compiled:
        compacted(empty_edges(8))
        _compiled = True


Unit = tuple[Engine, dict[str, int], SnapshotStore]
"""One snapshot to write: an engine, the offsets its state reflects, the folder."""


def fork_writer(
    engine: Engine,
    offsets: dict[str, int],
    store: SnapshotStore,
    session_start_ns: int | None = None,
) -> Writer:
    """Fork a child that writes ``engine``'s state and ``offsets`` (``topic/partition``
    -> next offset, the ones the state reflects), taken in the session starting at
    ``session_start_ns`` (:func:`riskguard.snapshot.freeze`), as a snapshot into ``store``. Call
    between batches, from the thread running the event loop; returns at once in the
    parent. Raises ``OSError`` when the fork itself fails (no memory, process limit)."""
    return fork_writers([(engine, offsets, store)], session_start_ns)


def fork_writers(units: Sequence[Unit], session_start_ns: int | None = None) -> Writer:
    """:func:`fork_writer` of several snapshots (group mode: one per owned partition),
    written one after the other by one child; :func:`wait_writer` returns the last
    one's path."""
    _compile_in_parent()
    read, write = os.pipe()
    # Stop signals wait (blocked) across the fork: one arriving before the child has
    # dropped the parent's handlers would run them in the child, whose write to asyncio's
    # wakeup fd (shared with the parent) the parent's loop reads as a second signal.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read)
        os.close(write)
        raise
    if pid == 0:  # pragma: no cover - the child's lines are measured by its result
        _child(units, session_start_ns, (read, write), mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # the parent takes what came meanwhile
    os.close(write)
    return Writer(pid, read)


def _child(  # pragma: no cover
    units: Sequence[Unit],
    session_start_ns: int | None,
    pipe: tuple[int, int],
    mask: set[int | signal.Signals],
) -> None:
    read, write = pipe
    code = 1
    try:
        os.close(read)
        try:
            signal.set_wakeup_fd(-1)
            for sig in _SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
        except ValueError:  # not the main thread: nothing of asyncio's to undo here; the
            pass  # stop signals stay blocked (the parent's deadline still ends a stuck child)
        else:  # a stop signal that came since the fork ends the child now, no snapshot
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        # no collection from here on: an inherited socket object collected here would
        # close its old descriptor number, by then perhaps the snapshot file's
        gc.disable()
        _close_sockets()
        path = Path()
        for engine, offsets, store in units:
            path = store.write(chunks(freeze(engine, offsets, session_start_ns)), offsets)
        os.write(write, os.fsencode(str(path)))
        code = 0
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(write, f"error: {exc!r}".encode()[:4000])
    finally:
        os._exit(code)


def _close_sockets() -> None:  # pragma: no cover - in the child
    """Close the sockets the child inherited: the API's listening socket, the instance
    claim (:mod:`riskguard.ingest.naming`), the broker connections. The child needs none
    of them, and a child outliving its parent (SIGKILLed, or OOM-killed, while the child
    wrote) held them: the restart was refused as 'another riskguard on this host' and the
    API's port stayed bound to a process that never answers. Closing the child's copy
    leaves the parent's open."""
    try:
        fds = [int(name) for name in os.listdir("/dev/fd")]
    except OSError:
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)


def wait_writer(writer: Writer) -> Path:
    """Block until ``writer`` ends (run it in a thread); the snapshot's path. Raises
    :class:`SnapshotWriterError` with the child's reason, or how it ended, when it wrote none."""
    parts: list[bytes] = []
    try:
        while data := os.read(writer.pipe, 65536):
            parts.append(data)
    finally:
        os.close(writer.pipe)
    _, status = os.waitpid(writer.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    said = os.fsdecode(b"".join(parts))
    if code == 0 and said and not said.startswith("error: "):
        return Path(said)
    how = f"exit status {code}" if code >= 0 else f"signal {_signal_name(-code)}"
    reason = said or "no reason"
    stopped_by = _signal_name(-code) if -code in _SIGNALS else None
    raise SnapshotWriterError(
        f"snapshot writer ended without a snapshot ({how}): {reason}", stopped_by
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
