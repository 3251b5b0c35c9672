"""Periodic snapshots written by a forked child (riskguard/ingest/forked.py).

The event loop pauses for the fork only; the child's image of the process is the state
between two batches, whatever the parent applies afterwards (copy-on-write).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from riskguard.engine import Engine
from riskguard.examples import LIMITS
from riskguard.ingest.checkpoint import Checkpoints
from riskguard.ingest.forked import (
    CAN_FORK,
    SnapshotWriterError,
    Writer,
    fork_writer,
    fork_writers,
    wait_writer,
)
from riskguard.limits import load
from riskguard.metrics import Metrics
from riskguard.settings import RuntimeSettings
from riskguard.snapshot import LEFTOVER_AGE_S, SnapshotStore, chunks, decode, freeze, restore
from tests.test_snapshot import stream, summary

pytestmark = pytest.mark.skipif(not CAN_FORK, reason="this platform has no fork()")


def test_the_forked_snapshot_is_the_state_at_the_fork_whatever_the_parent_does_next(
    tmp_path: Path,
) -> None:
    """Fork at 3,000 events, then apply 5,000 more in the parent before the child is
    waited for: the snapshot holds exactly the 3,000-event state (the same arrays and
    meta as a copy taken at that point), and an engine restored from it and fed the
    rest equals the parent."""
    events = stream()
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(events[:3_000])
    copied = freeze(engine, {"in/0": 3_000})
    writer = fork_writer(engine, {"in/0": 3_000}, SnapshotStore(tmp_path / "forked"))
    engine.apply(events[3_000:])  # pages the child shares are copied on write
    path = wait_writer(writer)
    snap = decode(path.read_bytes(), path)
    assert snap.offsets == {"in/0": 3_000}
    assert snap.meta["events_applied"] == copied.meta["events_applied"] < engine.events_applied
    assert set(snap.arrays) == set(copied.arrays)
    for name, array in copied.arrays.items():
        assert snap.arrays[name].tobytes() == array.tobytes(), name  # NaN-safe
    again = Engine(load(LIMITS), event_time=True)
    restore(again, snap)
    again.apply(events[3_000:])
    assert summary(again) == summary(engine)


def test_a_writer_that_cannot_write_says_why(tmp_path: Path) -> None:
    """The snapshot folder is a file: the child ends with status 1 and its reason."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:100])
    with pytest.raises(SnapshotWriterError, match=r"exit status 1\): error: .*Error"):
        wait_writer(fork_writer(engine, {}, SnapshotStore(blocked)))


def test_a_writer_stopped_by_a_signal_is_reported_by_its_name() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a stand-in child that never finishes
        os.close(read)
        time.sleep(30)
        os._exit(0)
    os.close(write)
    os.kill(pid, signal.SIGTERM)
    with pytest.raises(SnapshotWriterError, match="signal SIGTERM"):
        wait_writer(Writer(pid, read))


async def test_the_sidecar_forks_its_snapshots_and_reports_failures_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints.maybe_snapshot forks (pause: the fork), the snapshot loads; with the
    folder gone bad the failure is logged and nothing is raised, nothing written."""
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:2_000])
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=0.001)
    checkpoints = Checkpoints(runtime, engine, Metrics())
    assert checkpoints.fork
    await asyncio.sleep(0.01)
    checkpoints.maybe_snapshot()
    await asyncio.gather(*[t for t in asyncio.all_tasks() if t.get_name() == "snapshot-write"])
    status = checkpoints.status()
    assert status["last_written"] and status["last_bytes"] > 0
    assert 0 < status["last_pause_seconds"] < 60
    latest = checkpoints.store.latest()
    assert latest is not None and latest.meta["events_applied"] == engine.events_applied
    # a folder that cannot be written: logged, not raised
    (tmp_path / "snapshots").rename(tmp_path / "moved")
    (tmp_path / "snapshots").write_text("x")
    engine.apply(stream()[2_000:2_100])
    await asyncio.sleep(0.01)
    checkpoints.maybe_snapshot()
    await asyncio.gather(*[t for t in asyncio.all_tasks() if t.get_name() == "snapshot-write"])
    assert checkpoints.status()["last_written"] == status["last_written"]
    assert checkpoints.metrics.snapshot_failures._value.get() == 1  # RiskguardSnapshotFailing


def test_the_copy_path_and_the_forked_path_write_the_same_file_body(tmp_path: Path) -> None:
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:1_000])
    day = 1_700_000_000_000_000_000  # the session start is in the header of both
    forked = wait_writer(fork_writer(engine, {"in/0": 1}, SnapshotStore(tmp_path / "a"), day))
    copied = SnapshotStore(tmp_path / "b").write(chunks(freeze(engine, {"in/0": 1}, day)))
    a, b = decode(forked.read_bytes(), forked), decode(copied.read_bytes(), copied)
    assert {k: v for k, v in a.meta.items() if k != "created_ns"} == {
        k: v for k, v in b.meta.items() if k != "created_ns"
    }
    assert all(a.arrays[k].tobytes() == b.arrays[k].tobytes() for k in a.arrays)
    assert a.meta["session_start_ns"] == day


async def test_a_writer_that_never_finishes_is_killed_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child stuck on a lock held at the fork would never end: killed at the deadline
    and logged; the process is reaped (no zombie), nothing is raised."""
    monkeypatch.setattr(Checkpoints, "deadline_s", property(lambda self: 0.3))
    engine = Engine(load(LIMITS), event_time=True)
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=0.001)
    checkpoints = Checkpoints(runtime, engine, Metrics())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a stand-in child stuck for good
        os.close(read)
        time.sleep(60)
        os._exit(0)
    os.close(write)
    began = time.monotonic()
    await checkpoints._reap(Writer(pid, read))
    assert time.monotonic() - began < 30
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already
    assert checkpoints.status()["last_written"] is None


async def test_no_fork_while_the_kernels_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm-up thread holds numba's compiler lock: the snapshot is copied instead."""
    import threading  # noqa: PLC0415

    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:500])
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=0.001)
    checkpoints = Checkpoints(runtime, engine, Metrics())
    release = threading.Event()
    warm = threading.Thread(target=release.wait, name="riskguard-warm-up")
    warm.start()
    try:
        from riskguard.ingest.forked import safe_to_fork  # noqa: PLC0415

        assert not safe_to_fork()
        forks: list[int] = []
        monkeypatch.setattr("riskguard.ingest.checkpoint.fork_writers", lambda *a: forks.append(1))
        await asyncio.sleep(0.01)
        checkpoints.maybe_snapshot()
        await asyncio.gather(*[t for t in asyncio.all_tasks() if t.get_name() == "snapshot-write"])
        assert checkpoints.status()["last_written"]
        assert forks == []  # copied in the loop, written from a thread
    finally:
        release.set()
        warm.join()


async def test_a_fork_refused_falls_back_to_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strict overcommit (vm.overcommit_memory = 2) or a process limit refuses the fork
    with ENOMEM / EAGAIN: the snapshot is copied and written from a thread instead."""

    def refused() -> int:
        raise OSError(12, "Cannot allocate memory")

    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:500])
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=0.001)
    checkpoints = Checkpoints(runtime, engine, Metrics())
    monkeypatch.setattr(os, "fork", refused)
    await asyncio.sleep(0.01)
    checkpoints.maybe_snapshot()
    await asyncio.gather(*[t for t in asyncio.all_tasks() if t.get_name() == "snapshot-write"])
    latest = checkpoints.store.latest()
    assert latest is not None and latest.meta["events_applied"] == engine.events_applied


def test_a_stop_signal_at_the_fork_ends_the_child_and_never_reaches_the_parent_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C reaches the whole process group: the parent and a writer just forked. A
    signal the child takes before it has dropped the parent's handlers must neither run
    them there (their write to the wakeup fd, shared with the parent, reached the
    parent's loop as a second Ctrl-C: 'second stop signal: exiting now', exit 1, no
    final snapshot) nor let the child write: it ends by the signal, without a snapshot.
    The child is held in its first step so that the signal lands in that window."""
    parent = os.getpid()
    close = os.close

    def slow_in_child(fd: int) -> None:
        if os.getpid() != parent:  # pragma: no cover - in the child
            time.sleep(0.5)
        close(fd)

    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:200])
    woken_r, woken_w = os.pipe()
    os.set_blocking(woken_w, False)
    os.set_blocking(woken_r, False)
    taken: list[int] = []
    old_handler = signal.signal(signal.SIGTERM, lambda sig, frame: taken.append(sig))
    old_fd = signal.set_wakeup_fd(woken_w)
    try:
        monkeypatch.setattr(os, "close", slow_in_child)
        writer = fork_writer(engine, {"in/0": 1}, SnapshotStore(tmp_path / "snaps"))
        monkeypatch.setattr(os, "close", close)
        time.sleep(0.1)  # the child is in its first step, the parent's handlers still set
        os.kill(writer.pid, signal.SIGTERM)
        with pytest.raises(SnapshotWriterError, match="signal SIGTERM"):
            wait_writer(writer)
        with pytest.raises(BlockingIOError):
            os.read(woken_r, 16)  # nothing reached the parent's wakeup fd
        assert taken == []
        assert not list((tmp_path / "snaps").glob("*.rgs"))
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGTERM, old_handler)
        os.close(woken_r)
        os.close(woken_w)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
async def test_a_writer_ended_by_a_stop_of_the_group_is_no_failure(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """Ctrl-C (or systemd's SIGTERM to the whole unit) during a write ends the child: that
    is a stop, logged at info with the signal, not `snapshot write failed` at error (an
    on-call engineer's Ctrl-C must not look like a broken disk); a child ended by another
    signal is still a failure."""
    from structlog.testing import capture_logs  # noqa: PLC0415

    engine = Engine(load(LIMITS), event_time=True)
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=0.001)
    checkpoints = Checkpoints(runtime, engine, Metrics())
    for sig, level in ((stop, "info"), (signal.SIGUSR1, "error")):
        read, write = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a stand-in writer still writing
            os.close(read)
            signal.signal(sig, signal.SIG_DFL)
            os.write(ready_w, b"r")
            time.sleep(30)
            os._exit(0)
        os.close(write)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"r"  # the pytest handlers are gone in the child
        os.close(ready_r)
        os.kill(pid, sig)
        with capture_logs() as logs:
            await checkpoints._reap(Writer(pid, read))
        assert [e["log_level"] for e in logs] == [level], logs
        if level == "info":
            assert logs[0]["signal"] == stop.name
        else:
            assert logs[0]["event"] == "snapshot write failed" and "SIGUSR1" in logs[0]["error"]


def test_the_writer_holds_none_of_the_parents_sockets(tmp_path: Path) -> None:
    """A writer outliving its parent (SIGKILLed or OOM-killed mid-write) kept the API's
    listening socket and the instance claim: the restart exited 2 ('another riskguard on
    this host already runs as instance ...') until the child ended. The child closes
    its copies at once: with the parent's closed, the port binds again while the child
    still writes."""
    import socket  # noqa: PLC0415

    class SlowStore(SnapshotStore):
        def write(self, parts: Any, offsets: Any = None) -> Path:  # pragma: no cover - child
            time.sleep(1.5)
            return super().write(parts, offsets)

    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:100])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    writer = fork_writer(engine, {"in/0": 1}, SlowStore(tmp_path / "snaps"))
    try:
        time.sleep(0.5)  # the child is writing
        listener.close()
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # EADDRINUSE while the child held the listener
        again.listen()
        again.close()
    finally:
        listener.close()
        path = wait_writer(writer)
    assert path.exists()


async def test_a_stop_ends_a_writer_that_never_finishes_and_writes_its_own(
    tmp_path: Path,
) -> None:
    """A writer stuck for good (a lock held at the fork) while riskguard stops: the stop
    waited for it (deadline 120 s, past stop_timeout_s), and once the stop gave up, the
    interpreter's exit joined its reaper thread for ever: `riskguard run` logged
    'riskguard stopped' and never exited (seen 10 min; only killing the child ended it).
    The stop now kills the writer, reaps it, and writes its own snapshot."""
    from aiokafka.structs import TopicPartition  # noqa: PLC0415
    from structlog.testing import capture_logs  # noqa: PLC0415

    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:300])
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=30)
    checkpoints = Checkpoints(runtime, engine, Metrics())
    checkpoints.start_at(TopicPartition("in", 0), 300)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a stand-in writer stuck for good
        os.close(read)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
        os._exit(0)
    os.close(write)
    writer = Writer(pid, read)
    checkpoints._writer = writer
    checkpoints._writing = asyncio.create_task(checkpoints._reap(writer))
    await asyncio.sleep(0.05)
    with capture_logs() as logs:
        await asyncio.wait_for(checkpoints.final(), 10)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # killed and reaped
    assert [e["log_level"] for e in logs] == ["info"], logs
    latest = checkpoints.store.latest()
    assert latest is not None and latest.offsets == {"in/0": 300}


def test_unfinished_writes_leave_no_temp_files(tmp_path: Path) -> None:
    """A writer killed mid-write leaves its temp file (up to a snapshot's size, 430 MiB at
    the default memory): the next write and the next start remove it."""
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:200])
    runtime = RuntimeSettings(state_dir=str(tmp_path), snapshot_interval_s=0.001)
    checkpoints = Checkpoints(runtime, engine, Metrics())
    folder = checkpoints.store.folder
    folder.mkdir(parents=True)
    left = folder / ".snapshot-1700000000000000000.rgs.tmp"
    left.write_bytes(b"x" * 1000)
    checkpoints.load()  # the start: nothing to load, the leftover removed
    assert not left.exists()
    left.write_bytes(b"x" * 1000)
    path = wait_writer(fork_writer(engine, {}, checkpoints.store))
    assert path.exists() and not left.exists()
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_one_forked_child_writes_each_partitions_checkpoint_with_its_own_offset(
    tmp_path: Path,
) -> None:
    """Group mode: one child writes one snapshot per partition engine (each into its
    partition's folder, with that partition's offset only), as they were at the fork."""
    events = stream()
    first, second = Engine(load(LIMITS), event_time=True), Engine(load(LIMITS), event_time=True)
    first.apply(events[:1_000])
    second.apply(events[1_000:2_500])
    units = [
        (first, {"in/0": 1_000}, SnapshotStore(tmp_path / "in.0")),
        (second, {"in/1": 1_500}, SnapshotStore(tmp_path / "in.1")),
    ]
    for _, _, store in units:
        store.folder.mkdir()
    writer = fork_writers(units, None)
    first.apply(events[2_500:3_000])  # after the fork: not in the checkpoint
    last = wait_writer(writer)
    assert last.parent == tmp_path / "in.1"
    for _engine, offsets, store in units:
        (path,) = store.paths()
        snap = decode(path.read_bytes(), path)
        assert snap.offsets == offsets
        assert snap.meta["events_applied"] == {"in/0": 1_000, "in/1": 1_500}[next(iter(offsets))]
    assert first.events_applied == 1_500


def test_a_shared_folder_keeps_another_writers_temp_file_and_removes_a_dead_ones(
    tmp_path: Path,
) -> None:
    """Group mode's partition folders are written by whichever member owns the partition:
    a write there must not delete another member's write in progress (its temp file), only
    one left by a dead writer (untouched for LEFTOVER_AGE_S)."""
    store = SnapshotStore(tmp_path, keep=2, shared=True)
    live, dead = tmp_path / ".snapshot-1.rgs.tmp", tmp_path / ".snapshot-2.rgs.tmp"
    live.write_bytes(b"in progress")
    dead.write_bytes(b"killed")
    stale = time.time() - LEFTOVER_AGE_S - 1
    os.utime(dead, (stale, stale))
    store.write(b"snapshot")
    assert live.exists() and not dead.exists()
    SnapshotStore(tmp_path).write(b"single mode: one writer per folder")
    assert not live.exists()


def test_a_partitions_newest_checkpoint_is_the_one_furthest_into_it_whatever_the_clocks(
    tmp_path: Path,
) -> None:
    """Two members on hosts whose clocks disagree write one partition's checkpoints into
    the shared folder: the one a gaining member restores is the furthest into the
    partition (the least to read again), not the one a faster clock named later."""
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply(stream()[:200])
    store = SnapshotStore(tmp_path, keep=2, shared=True)
    far = store.write(chunks(freeze(engine, {"in/0": 200})), {"in/0": 200})
    time.sleep(0.001)  # the second writer's clock reads later
    store.write(chunks(freeze(engine, {"in/0": 100})), {"in/0": 100})
    latest = store.latest()
    assert latest is not None and latest.path == far and latest.offsets == {"in/0": 200}
