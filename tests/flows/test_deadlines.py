"""Deadlines grouped by second come out exactly as from one heap of (deadline, push order)."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.flows.deadlines import Deadlines
from sensor.timestamps import NS

# push a deadline, pop what is due at a time, or pop the earliest
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(-3 * NS, 40 * NS)),
        st.tuples(st.just("due"), st.integers(-3 * NS, 40 * NS)),
        st.tuples(st.just("first"), st.just(0)),
        st.tuples(st.just("clear"), st.just(0)),
    ),
    max_size=200,
)


@settings(max_examples=300)
@given(operations, st.sampled_from([1, 1000, NS // 3, NS]))
def test_same_order_as_one_heap(ops: list[tuple[str, int]], grain: int) -> None:
    deadlines: Deadlines[str] = Deadlines()
    heap: list[tuple[int, int, str]] = []
    pushed = 0
    for op, raw in ops:
        value = raw - raw % grain  # many equal deadlines, and many in one second
        if op == "push":
            item = f"item{pushed}"
            deadlines.push(value, item)
            heapq.heappush(heap, (value, pushed, item))
            pushed += 1
        elif op == "due":
            expected = []
            while heap and heap[0][0] <= value:
                expected.append(heapq.heappop(heap))
            assert [e[2] for e in deadlines.pop_due(value)] == [e[2] for e in expected]
        elif op == "first":
            entry = deadlines.pop_first()
            if heap:
                assert entry is not None and entry[2] == heapq.heappop(heap)[2]
            else:
                assert entry is None
        else:
            deadlines.clear()
            heap.clear()
        assert len(deadlines) == len(heap)


def test_a_second_partly_due_keeps_its_later_entries() -> None:
    deadlines: Deadlines[str] = Deadlines()
    for name, at in (("late", 5 * NS + 900), ("early", 5 * NS + 100), ("before", 4 * NS)):
        deadlines.push(at, name)
    assert [e[2] for e in deadlines.pop_due(5 * NS + 500)] == ["before", "early"]
    assert len(deadlines) == 1
    assert deadlines.pop_due(5 * NS + 899) == []
    assert [e[2] for e in deadlines.pop_due(6 * NS)] == ["late"]
    assert deadlines.pop_first() is None and len(deadlines) == 0


def test_equal_deadlines_leave_in_push_order() -> None:
    deadlines: Deadlines[int] = Deadlines()
    for i in range(50):
        deadlines.push(7 * NS, i)
    assert [e[2] for e in deadlines.pop_due(7 * NS)] == list(range(50))
