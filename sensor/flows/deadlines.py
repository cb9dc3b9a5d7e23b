"""Flow deadlines, taken out in time order (compiled).

One heap of every deadline costs a pop some 30 tuple comparisons once it holds tens of thousands
of flows. Deadlines are grouped by the second they fall in instead, with a heap of the seconds.
A second's entries are only appended as they come: the table takes its deadlines out once per
second of packet time, so a whole second comes due at once and is sorted in one go (a sort of
(int, int) tuples is several times cheaper per comparison than a heap push). Only a second asked
for its earliest entry (eviction) is kept as a heap from then on. The order is exactly a single
heap's: by deadline, then by the order of pushing.
"""

from __future__ import annotations

import bisect
import heapq
from typing import Final, Generic, TypeVar

from sensor.timestamps import NS

T = TypeVar("T")

# Above any push order: (now, _LAST) sorts after every entry due at ``now``.
_LAST: Final = 1 << 62


class Deadlines(Generic[T]):
    """Entries ``(deadline in ns, push order, item)``."""

    def __init__(self) -> None:
        self._by_second: dict[int, list[tuple[int, int, T]]] = {}
        self._seconds: list[int] = []  # heap of the keys of _by_second
        self._heaps: set[int] = set()  # seconds whose entries are kept as a heap
        self._pushed = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, deadline: int, item: T) -> None:
        entry = (deadline, self._pushed, item)
        self._pushed += 1
        self._size += 1
        second = deadline // NS
        bucket = self._by_second.get(second)
        if bucket is None:
            self._by_second[second] = [entry]
            heapq.heappush(self._seconds, second)
        elif second in self._heaps:
            heapq.heappush(bucket, entry)
        else:
            bucket.append(entry)

    def pop_due(self, now: int) -> list[tuple[int, int, T]]:
        """Every entry whose deadline is at or before ``now``, in order."""
        due: list[tuple[int, int, T]] = []
        seconds = self._seconds
        current = now // NS
        while seconds and seconds[0] <= current:
            second = seconds[0]
            bucket = self._by_second[second]
            if second < current:
                due.extend(bucket)
            else:
                # The second ``now`` falls in: only its entries due by now; the rest stay, in
                # order, which a heap may be too.
                bucket.sort()
                taken = bisect.bisect_right(bucket, (now, _LAST))
                due.extend(bucket[:taken])
                del bucket[:taken]
                if bucket:
                    break
            heapq.heappop(seconds)
            del self._by_second[second]
            self._heaps.discard(second)
        self._size -= len(due)
        due.sort()  # (deadline, push order) is unique: items are never compared
        return due

    def pop_first(self) -> tuple[int, int, T] | None:
        """The earliest entry, or None when there is none."""
        if not self._seconds:
            return None
        second = self._seconds[0]
        bucket = self._by_second[second]
        if second not in self._heaps:
            heapq.heapify(bucket)
            self._heaps.add(second)
        entry = heapq.heappop(bucket)
        if not bucket:
            heapq.heappop(self._seconds)
            del self._by_second[second]
            self._heaps.discard(second)
        self._size -= 1
        return entry

    def clear(self) -> None:
        self._by_second.clear()
        self._seconds.clear()
        self._heaps.clear()
        self._size = 0
