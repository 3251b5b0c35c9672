"""Checkpoint: a gained partition restored from its checkpoint, against replaying it.

In group mode each owned input partition's state is an engine of its own, checkpointed
with its offset (decision 54); a member that gains a partition restores that engine
from the newest checkpoint and reads on from the checkpoint's offset, where it used to
replay the partition from its start. For one partition's engine holding the state of E
events of simulated flow (the pipeline's flow spread over 192 sub-accounts, as
``bench.scale_out`` sends it; the example limits cut to group mode, the summed rules
counted and not judged, as a group member builds its engines), in one process, no
broker:

- **replay** (the floor, the old way): a fresh partition engine
  (:meth:`~riskguard.ingest.partitions.PartitionEngines.fresh`, then ``add``, counting
  at its events' own time as a gained partition does) applies the E events through
  :meth:`~riskguard.engine.Engine.apply` in batches of 500 (the consume loop's
  ``max_records``). Fetching and decoding are left out, so a real replay from the
  broker is slower than this floor (bench ``scale_out``: about 120k records/s);
- **restore** (now): the newest checkpoint read and decoded from its
  :class:`~riskguard.snapshot.SnapshotStore` (file, checksum, arrays), then
  :func:`riskguard.snapshot.restore` into ``fresh()`` and ``add``: what
  :class:`~riskguard.ingest.group.GroupOwnership` does for a gained partition before it
  reads on (the read and decode in a thread, the restore and add on the event loop,
  under the consume loop's lock: both parts are reported);
- the checkpoint file's size;
- the event loop's pause for a periodic checkpoint of 1, 2 and 4 partition engines
  (each holding that state): :func:`~riskguard.ingest.forked.fork_writers` (the fork;
  the child freezes and writes) against :func:`~riskguard.snapshot.freeze` of each (the
  copy, where ``fork()`` does not exist), each also as a count of 500-event batches
  (the replay's mean batch: what the loop would have applied meanwhile). The events are
  dropped before, so the process is about a sidecar's size (its RSS is reported: the
  fork's pause grows with it).

Each time is the median of a few repeats. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka.structs import TopicPartition

from bench.common import progress, rss_bytes, save, table
from bench.pipeline import MAX_RECORDS, flow_events
from bench.scale_out import group_limits, spread
from riskguard.engine import Engine, warm_up
from riskguard.events import Event
from riskguard.ingest.forked import CAN_FORK, fork_writers, wait_writer
from riskguard.ingest.partitions import PartitionEngines
from riskguard.limits.scale import is_summed
from riskguard.snapshot import SnapshotStore, chunks, freeze, restore

TOPIC = "bench.events"
ENGINE_COUNTS = (1, 2, 4)
"""Partition engines checkpointed at once, for the pause."""


def member() -> PartitionEngines:
    """A group member's engines with no partition yet: a home engine as the sidecar
    builds it in group mode (summed rules counted, not judged), counting at own time
    (a member restoring what it gained)."""
    home = Engine(group_limits(), warm=False, values_only=is_summed)
    parts = PartitionEngines(home)
    parts.count_at_own_time(True)
    return parts


def tp(p: int) -> TopicPartition:
    return TopicPartition(TOPIC, p)


def replay(parts: PartitionEngines, p: int, events: Sequence[Event]) -> Engine:
    """Partition ``p`` gained and read from its start: ``events`` applied in batches."""
    engine = parts.fresh()
    parts.add(tp(p), engine)
    for i in range(0, len(events), MAX_RECORDS):
        engine.apply(events[i : i + MAX_RECORDS])
    return engine


def load(parts: PartitionEngines, p: int, store: SnapshotStore) -> tuple[Engine, float]:
    """Partition ``p`` gained and restored from ``store``'s newest checkpoint; the
    seconds the read and decode took."""
    began = time.perf_counter()
    snap = store.latest()
    if snap is None:
        raise RuntimeError(f"no checkpoint in {store.folder}: {store.skipped}")
    decoded = time.perf_counter() - began
    engine = parts.fresh()
    restore(engine, snap)
    parts.add(tp(p), engine)
    return engine, decoded


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        gc.collect()
        began = time.perf_counter()
        fn()
        out.append(time.perf_counter() - began)
    return out


def measure(n: int, repeats: int) -> dict[str, Any]:
    warm_up()
    events = [spread(ev) for ev in flow_events(n)]
    replay(member(), 0, events[:5_000])  # every kernel the replay runs, compiled
    replay_s: list[float] = []
    engine = replay(member(), 0, events)  # the state checkpointed
    for i in range(repeats):
        parts = member()
        gc.collect()
        began = time.perf_counter()
        replay(parts, 0, events)
        replay_s.append(time.perf_counter() - began)
        progress("replays", i + 1, repeats)
    batches = -(-len(events) // MAX_RECORDS)
    with tempfile.TemporaryDirectory() as tmp:
        store = SnapshotStore(Path(tmp) / f"{TOPIC}.0", keep=2)
        store.folder.mkdir(parents=True)
        began = time.perf_counter()
        path = store.write(chunks(freeze(engine, {f"{TOPIC}/0": len(events)})))
        write_s = time.perf_counter() - began
        size = path.stat().st_size
        orders, executions = len(engine.keys.closed_orders), len(engine.keys.exec_times)
        load(member(), 0, store)  # the restore's own compiles (recompile)
        decode_s: list[float] = []
        restore_s: list[float] = []
        for i in range(repeats):
            parts = member()
            gc.collect()
            began = time.perf_counter()
            restored, decoded = load(parts, 0, store)
            restore_s.append(time.perf_counter() - began)
            decode_s.append(decoded)
            progress("restores", i + 1, repeats)
        if restored.events_applied != engine.events_applied:
            raise RuntimeError(
                f"restored {restored.events_applied} events applied, "
                f"checkpointed {engine.events_applied}"
            )
        # the pause: events dropped, so the process is about a sidecar's size
        del events, engine, restored
        gc.collect()
        pauses = [pause(store, k, repeats, Path(tmp)) for k in ENGINE_COUNTS]
    replay_med = statistics.median(replay_s)
    batch_s = replay_med / batches
    for row in pauses:
        for key in ("fork_s", "freeze_s"):
            if row[key] is not None:
                row[f"{key[:-2]}_batches"] = row[key] / batch_s
    restore_med = statistics.median(restore_s)
    return {
        "events": n,
        "repeats": repeats,
        "replay_s": replay_med,
        "replay_runs_s": replay_s,
        "replay_events_per_s": n / replay_med,
        "batch_s": batch_s,
        "restore_s": restore_med,
        "restore_runs_s": restore_s,
        "decode_s": statistics.median(decode_s),
        "on_loop_s": statistics.median(r - d for r, d in zip(restore_s, decode_s, strict=True)),
        "restore_vs_replay": restore_med / replay_med,
        "replay_vs_restore": replay_med / restore_med,
        "checkpoint_bytes": size,
        "orders_remembered": orders,
        "executions_remembered": executions,
        "checkpoint_bytes_per_event": size / n,
        "checkpoint_write_s": write_s,
        "pauses": pauses,
    }


def pause(store: SnapshotStore, k: int, repeats: int, tmp: Path) -> dict[str, Any]:
    """The event loop's pause for a checkpoint of ``k`` partition engines, each restored
    from ``store``: the fork (median of ``repeats``; the child's write beside it) and
    the copy."""
    parts = member()
    for p in range(k):
        load(parts, p, store)
    units = []
    for t, engine in sorted(parts.engines.items()):
        folder = SnapshotStore(tmp / f"pause-{k}" / f"{t.topic}.{t.partition}", keep=1)
        folder.folder.mkdir(parents=True)
        units.append((engine, {f"{t.topic}/{t.partition}": 0}, folder))
    gc.collect()
    rss = rss_bytes()
    fork_s: list[float] = []
    write_s: list[float] = []
    if CAN_FORK:
        wait_writer(fork_writers(units[:1]))  # its compile, in the parent (not timed)
        for _ in range(repeats):
            began = time.perf_counter()
            writer = fork_writers(units)
            forked = time.perf_counter()
            wait_writer(writer)
            fork_s.append(forked - began)
            write_s.append(time.perf_counter() - forked)
    freeze_s = timed(lambda: [freeze(e, o) for e, o, _ in units], repeats)
    progress("pauses", ENGINE_COUNTS.index(k) + 1, len(ENGINE_COUNTS))
    return {
        "engines": k,
        "rss_bytes": rss,
        "fork_s": statistics.median(fork_s) if fork_s else None,
        "fork_runs_s": fork_s,
        "child_write_s": statistics.median(write_s) if write_s else None,
        "freeze_s": statistics.median(freeze_s),
        "freeze_runs_s": freeze_s,
    }


def report(r: dict[str, Any]) -> str:
    n = r["events"]
    rows: list[tuple[str, ...]] = [
        (
            f"one partition's engine, {n:,} events ({r['orders_remembered']:,} closed orders "
            f"and {r['executions_remembered']:,} executions remembered)",
            "seconds",
            "vs replay",
        ),
        (
            f"replay through Engine.apply (floor; {r['replay_events_per_s']:,.0f} events/s)",
            f"{r['replay_s']:.3f}",
            "1.00",
        ),
        (
            "restore from its checkpoint",
            f"{r['restore_s']:.3f}",
            f"{r['restore_vs_replay']:.3f}",
        ),
        ("  of it: read + decode (off the event loop)", f"{r['decode_s']:.3f}", ""),
        ("  of it: restore + add (on the event loop)", f"{r['on_loop_s']:.3f}", ""),
        (
            f"checkpoint file: {r['checkpoint_bytes'] / 1e6:,.1f} MB "
            f"({r['checkpoint_bytes_per_event']:,.0f} B per event); written in",
            f"{r['checkpoint_write_s']:.3f}",
            "",
        ),
    ]
    pauses: list[tuple[str, ...]] = [
        (
            f"checkpoint pause (batch of {MAX_RECORDS} = {r['batch_s'] * 1e3:.2f} ms)",
            "fork ms",
            "batches",
            "copy ms",
            "batches",
            "child write s",
            "RSS MB",
        )
    ]
    for p in r["pauses"]:
        fork = p["fork_s"]
        pauses.append(
            (
                f"{p['engines']} partition engine{'s' if p['engines'] > 1 else ''}",
                "-" if fork is None else f"{fork * 1e3:.1f}",
                "-" if fork is None else f"{p['fork_batches']:.1f}",
                f"{p['freeze_s'] * 1e3:.1f}",
                f"{p['freeze_batches']:.1f}",
                "-" if p["child_write_s"] is None else f"{p['child_write_s']:.2f}",
                f"{p['rss_bytes'] / 2**20:,.0f}",
            )
        )
    return table(rows) + "\n\n" + table(pauses)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="50k events, 2 repeats")
    args = parser.parse_args(argv)
    n, repeats = (50_000, 2) if args.quick else (args.events, args.repeats)
    result = measure(n, repeats)
    print(report(result))
    print(f"wrote {save('checkpoint', result)}")
    return result


if __name__ == "__main__":
    main()
