"""Where the events of one consumed batch came from: Kafka coordinates.

A coordinate is ``"topic/partition@offset"``. Not to be confused with trading
positions (:meth:`riskguard.engine.Engine.positions`).
"""

from __future__ import annotations

from collections.abc import Sequence


class Coordinates(Sequence[str]):
    """The Kafka coordinate of each event of a batch, formatted only when asked.

    ``coordinates[j]`` is ``"topic/partition@offset"`` of event ``j``; only bad events
    ask for it, since formatting that string for every event cost more than the
    kernel did per event. Fill it partition by partition: :meth:`partition` once,
    then :meth:`add` for each event kept from that partition, in batch order.
    """

    def __init__(self) -> None:
        self._labels: list[tuple[int, str]] = []  # (first event index, "topic/partition")
        self._offsets: list[int] = []
        self._values: list[bytes] = []
        self._keys: list[bytes | None] = []

    def partition(self, label: str) -> None:
        """Start the events of partition ``label`` (``"topic/partition"``)."""
        self._labels.append((len(self._offsets), label))

    def add(self, offset: int, value: bytes, key: bytes | None = None) -> None:
        """The next event: its offset in the current partition, its raw value and key."""
        self._offsets.append(offset)
        self._values.append(value)
        self._keys.append(key)

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, j: int) -> str:  # type: ignore[override]
        """``"topic/partition@offset"`` of event ``j``.

        Raises :class:`IndexError` when ``j`` is not an event of the batch.
        """
        offset = self._offsets[j]
        label = next((lab for first, lab in reversed(self._labels) if first <= j), None)
        if label is None:
            raise IndexError(f"event {j} has no partition")
        return f"{label}@{offset}"

    def parts(self) -> list[tuple[str, int, int]]:
        """``(label, first, end)`` per partition of the batch: its events are
        ``first..end-1``, in batch order (a partition with no event kept left out)."""
        ends = [first for first, _ in self._labels[1:]] + [len(self._offsets)]
        return [
            (lab, first, end)
            for (first, lab), end in zip(self._labels, ends, strict=True)
            if end > first
        ]

    def slice(self, first: int, end: int) -> Sequence[str]:
        """The coordinates of events ``first..end-1`` (one partition's, from
        :meth:`parts`), indexed from 0."""
        return _Slice(self, first, end)

    def value_at(self, coordinate: str) -> bytes:
        """The raw value of the event at ``coordinate`` (for the dead-letter topic).

        ``b""`` when no event of the batch has that coordinate.
        """
        return self.message_at(coordinate)[0]

    def message_at(self, coordinate: str) -> tuple[bytes, bytes | None]:
        """The raw value and key of the event at ``coordinate`` (``"topic/partition@offset"``).

        ``(b"", None)`` when no event of the batch has that coordinate. Looks only
        through that partition's events, without formatting any coordinate.
        """
        label, sep, off = coordinate.rpartition("@")
        if not sep or not off.isdigit():
            return b"", None
        offset = int(off)
        ends = [first for first, _ in self._labels[1:]] + [len(self._offsets)]
        for (first, lab), end in zip(self._labels, ends, strict=True):
            if lab != label:
                continue
            for j in range(first, end):
                if self._offsets[j] == offset:
                    return self._values[j], self._keys[j]
        return b"", None


class _Slice(Sequence[str]):
    """Part of a :class:`Coordinates`, formatted only when asked."""

    def __init__(self, whole: Coordinates, first: int, end: int) -> None:
        self._whole, self._first, self._end = whole, first, end

    def __len__(self) -> int:
        return self._end - self._first

    def __getitem__(self, j: int) -> str:  # type: ignore[override]
        if not 0 <= j < self._end - self._first:
            raise IndexError(f"event {j} is not in this part")
        return self._whole[self._first + j]
