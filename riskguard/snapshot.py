"""Engine snapshots: the state arrays, interned keys and the input offsets they reflect.

File format (one file per snapshot, ``snapshot-<created_ns>.rgs``); META's
``version`` names the array layout, and a snapshot of another layout is skipped::

    b"RGSNAP\\x01\\n"                    magic and format version
    8-byte big-endian length of META     then META: JSON (orjson)
    the numpy arrays (``np.savez``, no pickle)

META holds a sha256 of everything after it, so a torn or corrupt file is detected
and skipped. Files are written to a temp name, fsynced and renamed, so a reader
never sees half a snapshot. Trading states are *not* taken from a snapshot: the
journal and control topic are authoritative for them (a resume may be newer).
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from riskguard import durable
from riskguard.engine import Engine
from riskguard.state.keys import KeySpace
from riskguard.state.layout import (
    NOF,
    NOI,
    NPF,
    NPI,
    NQF,
    NQI,
    NSF,
    NSI,
    PI_OWNER,
    PI_SYM,
    SI_STATE,
)
from riskguard.state.tables import dump_alerts, dump_dups, fill_alerts, fill_dups
from riskguard.vocabulary import LEVELS

MAGIC = b"RGSNAP\x01\n"
#: 2: revaluation epochs (sf/si/g columns), alert-edge counts in rp, dups as arrays;
#: 3: pairs keyed by int, a strategy pair's account and firm pairs in pi; windowed
#: counters have a row per scope of their level (SI_SLOT), not per scope
VERSION = 3
#: columns each array must have: a snapshot of another layout is refused, never loaded
WIDTHS = {"sf": NSF, "si": NSI, "pf": NPF, "pi": NPI, "of": NOF, "oi": NOI, "qf": NQF, "qi": NQI}
ARRAYS = (
    "sf",
    "si",
    "pf",
    "pi",
    "of",
    "oi",
    "qf",
    "qi",
    "src_last",
    "g",
    "ci",
    "cb",
    "clast",
    "csum",
)


class SnapshotError(ValueError):
    """A snapshot that cannot be used (corrupt, truncated, other version)."""


@dataclass(frozen=True)
class Snapshot:
    """A decoded snapshot, ready to restore."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def offsets(self) -> dict[str, int]:
        """``topic/partition`` -> next offset to apply."""
        offsets: dict[str, int] = self.meta["offsets"]
        return offsets


@dataclass(frozen=True)
class Frozen:
    """Copies of everything a snapshot holds, taken between batches."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def freeze(engine: Engine, offsets: dict[str, int]) -> Frozen:
    """Copy the engine's state and the offsets it reflects (call between batches).

    Only copies: cheap enough for the event loop. :func:`serialise` does the slow
    part (compression-free ``np.savez``, sha256, JSON) and may run in a thread.
    """
    store, keys = engine.store, engine.keys
    dup_i, dup_f, dup_seen = dump_dups(store.dup)
    arrays = {name: getattr(store, name).copy() for name in ARRAYS}
    arrays |= {
        "rp": engine.rule_peaks.copy(),
        "dup_i": dup_i,
        "dup_f": dup_f,
        "dup_seen": dup_seen,
        "alerts": dump_alerts(store.alerts),
    }
    meta = {
        "version": VERSION,
        "created_ns": time.time_ns(),
        "offsets": dict(offsets),
        "events_applied": engine.events_applied,
        "limits_sha256": engine.limits.digest,
        "keys": {
            "scope_names": list(keys.scope_names),
            "scope_levels": list(keys.scope_levels),
            "strategy_account": list(keys.strategy_account.items()),
            "order_names": list(keys.order_names),
            "parents": list(keys.parents),
            "source_names": list(keys.source_names),
            "n_pairs": keys.n_pairs,
        },
    }
    return Frozen(arrays, meta)


def serialise(frozen: Frozen) -> bytes:
    """The snapshot file's bytes (any thread)."""
    buf = io.BytesIO()
    np.savez(buf, **frozen.arrays)  # type: ignore[arg-type]  # numpy stubs: **kwargs
    body = buf.getvalue()
    head = orjson.dumps({**frozen.meta, "sha256": hashlib.sha256(body).hexdigest()})
    return MAGIC + len(head).to_bytes(8, "big") + head + body


def capture(engine: Engine, offsets: dict[str, int]) -> bytes:
    """Serialise the engine and the offsets it reflects (call between batches)."""
    return serialise(freeze(engine, offsets))


def decode(data: bytes, path: Path) -> Snapshot:
    """Check and decode a snapshot file's bytes."""
    if not data.startswith(MAGIC):
        raise SnapshotError(f"{path.name}: not a riskguard snapshot v{VERSION}")
    n = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "big")
    start = len(MAGIC) + 8
    try:
        meta = orjson.loads(data[start : start + n])
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"{path.name}: unreadable header") from exc
    body = data[start + n :]
    if meta.get("version") != VERSION:
        raise SnapshotError(f"{path.name}: version {meta.get('version')}, expected {VERSION}")
    if hashlib.sha256(body).hexdigest() != meta.get("sha256"):
        raise SnapshotError(f"{path.name}: checksum mismatch (torn or corrupt)")
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for name, width in WIDTHS.items():
        a = arrays.get(name)
        if a is None or a.ndim != 2 or a.shape[1] != width:
            raise SnapshotError(f"{path.name}: array {name!r} does not match this version's layout")
    return Snapshot(path, meta, arrays)


def restore(engine: Engine, snap: Snapshot) -> None:
    """Load ``snap`` into a freshly built engine (same limits or not)."""
    keys, store, meta = engine.keys, engine.store, snap.meta["keys"]
    fresh = KeySpace()
    for name, level in zip(meta["scope_names"][1:], meta["scope_levels"][1:], strict=True):
        fresh.scope(level, name[len(LEVELS[level]) + 1 :])
    for s, a in meta["strategy_account"]:
        fresh.strategy_account[s] = a
    fresh.order_names = list(meta["order_names"])
    fresh.orders = {n: i for i, n in enumerate(fresh.order_names) if n is not None}
    fresh._free_orders = [i for i, n in enumerate(fresh.order_names) if n is None]
    for p in meta["parents"]:
        fresh.parent(p)
    for src in meta["source_names"]:
        fresh.source(src)
    n_pairs = int(meta["n_pairs"])
    pi = snap.arrays["pi"]
    owners, syms = pi[:n_pairs, PI_OWNER].tolist(), pi[:n_pairs, PI_SYM].tolist()
    fresh.pairs = {o << 32 | y: p for p, (o, y) in enumerate(zip(owners, syms, strict=True))}
    keys.__dict__.update(fresh.__dict__)
    for name in ARRAYS:
        setattr(store, name, snap.arrays[name].copy())
    store.si[:, SI_STATE] = 0  # states come from the journal and control topic
    store._scopes = len(keys.scope_names)
    store._pairs = n_pairs
    engine.recompile()  # match values -> ids of the restored key space; counters carried
    if snap.meta["limits_sha256"] == engine.limits.digest:  # same rows: peaks, edges, dups
        engine.rule_peaks[:] = snap.arrays["rp"]
        a = snap.arrays
        fill_alerts(store.alerts, a["alerts"])
        fill_dups(store.dup, a["dup_i"], a["dup_f"], a["dup_seen"])
    engine.events_applied = int(snap.meta["events_applied"])


class SnapshotStore:
    """A folder of snapshots: write atomically, keep the newest few, load the newest valid."""

    def __init__(self, folder: str | Path, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self.skipped: list[str] = []

    def write(self, data: bytes) -> Path:
        """Write atomically (temp, fsync, rename), then prune old snapshots."""
        path = self.folder / f"snapshot-{time.time_ns()}.rgs"
        durable.replace(path, data)
        for old in self.paths()[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    def paths(self) -> list[Path]:
        """Snapshot files, newest first."""
        return sorted(self.folder.glob("snapshot-*.rgs"), reverse=True)

    def latest(self) -> Snapshot | None:
        """The newest snapshot that decodes; corrupt or incompatible ones are reported."""
        self.skipped = []
        for path in self.paths():
            try:
                return decode(path.read_bytes(), path)
            except (SnapshotError, OSError, ValueError, KeyError) as exc:
                self.skipped.append(f"{path.name}: {exc}")
        return None
