"""The redelivery memory's queues (riskguard.state.timed.TimedIds) behave exactly as the
deque of (time, id) tuples they replaced, for any interleaving of appends and expiries."""

from __future__ import annotations

from collections import deque

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard.state.timed import TimedIds

step = st.one_of(
    st.tuples(
        st.just("append"), st.lists(st.tuples(st.integers(0, 50), st.integers(0, 9)), max_size=40)
    ),
    st.tuples(st.just("expire"), st.tuples(st.integers(-5, 60), st.integers(0, 30))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_timed_ids_behave_as_the_deque_they_replaced(steps: list[tuple[str, object]]) -> None:
    model: deque[tuple[int, int]] = deque()
    queue = TimedIds()
    for kind, arg in steps:
        if kind == "append":
            pairs = list(arg)  # type: ignore[call-overload]
            if len(pairs) % 2:  # one at a time, or a batch at once
                for ns, ident in pairs:
                    queue.append(ns, ident)
            else:
                ns = np.array([p[0] for p in pairs], dtype=np.int64)
                ids = np.array([p[1] for p in pairs], dtype=np.int64)
                queue.extend(ns, ids)
            model.extend(pairs)
        else:
            cutoff, keep = arg  # type: ignore[misc]
            popped = []
            while model and (model[0][0] < cutoff or len(model) > keep):
                popped.append(model.popleft())
            at, ids = queue.expire(cutoff, keep)
            assert list(zip(at.tolist(), ids.tolist(), strict=True)) == popped
        assert len(queue) == len(model)
        ns_held, ids_held = queue.arrays()
        assert list(zip(ns_held.tolist(), ids_held.tolist(), strict=True)) == list(model)
    again = TimedIds.of(*queue.arrays())
    assert [a.tolist() for a in again.arrays()] == [a.tolist() for a in queue.arrays()]
