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

    def partition(self, label: str) -> None:
        """Start the events of partition ``label`` (``"topic/partition"``)."""
        self._labels.append((len(self._offsets), label))

    def add(self, offset: int, value: bytes) -> None:
        """The next event: its offset in the current partition and its raw value."""
        self._offsets.append(offset)
        self._values.append(value)

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

    def value_at(self, coordinate: str) -> bytes:
        """The raw value of the event at ``coordinate`` (for the dead-letter topic).

        ``b""`` when no event of the batch has that coordinate.
        """
        for j in range(len(self._offsets)):
            if self[j] == coordinate:
                return self._values[j]
        return b""
