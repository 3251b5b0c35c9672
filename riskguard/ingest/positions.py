"""Where the events of one consumed batch came from (topic, partition, offset)."""

from __future__ import annotations

from collections.abc import Sequence


class Positions(Sequence[str]):
    """Where each event of a batch came from, formatted only when asked (bad events).

    ``positions[j]`` is ``"topic/partition@offset"`` of event ``j``. Formatting that
    string for every event cost more than the kernel did per event.
    """

    def __init__(self) -> None:
        self._labels: list[tuple[int, str]] = []  # (first event index, "topic/partition")
        self._offsets: list[int] = []
        self._values: list[bytes] = []

    def partition(self, label: str) -> None:
        self._labels.append((len(self._offsets), label))

    def add(self, offset: int, value: bytes) -> None:
        self._offsets.append(offset)
        self._values.append(value)

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, j: int) -> str:  # type: ignore[override]
        label = next(lab for first, lab in reversed(self._labels) if first <= j)
        return f"{label}@{self._offsets[j]}"

    def value_at(self, position: str) -> bytes:
        """The raw value of the event at ``position`` (for the dead-letter topic)."""
        for j in range(len(self._offsets)):
            if self[j] == position:
                return self._values[j]
        return b""
