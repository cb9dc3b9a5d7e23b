"""In-order reassembly of a direction's first bytes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensor.flows.stream import MAX_PENDING, add_segment, seq_diff
from sensor.flows.table import Direction, Flow

LIMIT = 64


def direction() -> Direction:
    return Flow(1, 6, b"\x00" * 12, 0).c2s


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(5, 3, 2), (3, 5, -2), (0, 0xFFFFFFFF, 1), (0xFFFFFFFF, 0, -1), (0x7FFFFFFF, 0, 0x7FFFFFFF)],
)
def test_seq_diff_wraps(a: int, b: int, expected: int) -> None:
    assert seq_diff(a, b) == expected


def test_in_order_segments_append() -> None:
    d = direction()
    assert add_segment(d, 1000, b"hello ", LIMIT)
    assert add_segment(d, 1006, b"world", LIMIT)
    assert bytes(d.buf or b"") == b"hello world"


def test_retransmission_and_overlap_keep_first_copy() -> None:
    d = direction()
    add_segment(d, 1000, b"abcdef", LIMIT)
    assert not add_segment(d, 1000, b"XXXXXX", LIMIT)  # full retransmission, other bytes
    assert add_segment(d, 1003, b"DEFghi", LIMIT)  # overlaps 3 bytes, adds 3
    assert bytes(d.buf or b"") == b"abcdefghi"


def test_out_of_order_waits_then_drains() -> None:
    d = direction()
    add_segment(d, 1, b"aa", LIMIT)
    assert not add_segment(d, 5, b"cc", LIMIT)
    assert not add_segment(d, 7, b"dd", LIMIT)
    assert add_segment(d, 3, b"bb", LIMIT)
    assert bytes(d.buf or b"") == b"aabbccdd"
    assert not d.pending


def test_sequence_wraparound() -> None:
    d = direction()
    add_segment(d, 0xFFFFFFFE, b"ab", LIMIT)
    add_segment(d, 0, b"cd", LIMIT)
    assert bytes(d.buf or b"") == b"abcd"


def test_buffer_is_capped() -> None:
    d = direction()
    add_segment(d, 0, b"x" * 50, LIMIT)
    add_segment(d, 50, b"y" * 50, LIMIT)
    assert len(d.buf or b"") == LIMIT


def test_unfillable_hole_marks_gap() -> None:
    d = direction()
    add_segment(d, 0, b"a", LIMIT)
    for i in range(MAX_PENDING + 1):
        add_segment(d, 10 + i * 2, b"z", LIMIT)
    assert d.gap
    assert not add_segment(d, 1, b"b", LIMIT)


def test_hole_beyond_the_buffer_marks_gap() -> None:
    d = direction()
    add_segment(d, 0, b"a", LIMIT)
    add_segment(d, 10_000, b"far", LIMIT)
    assert d.gap


@given(st.data())
def test_any_delivery_order_gives_the_stream_prefix(data: st.DataObject) -> None:
    """Shuffled, duplicated segments reassemble to the original bytes (within the pending bound)."""
    payload = data.draw(st.binary(min_size=1, max_size=60))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(payload)), max_size=6))))
    bounds = [0, *cuts, len(payload)]
    segments = [(bounds[i], payload[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)]
    segments = [s for s in segments if s[1]]
    first, rest = segments[0], segments[1:]
    order = rest + rest[: data.draw(st.integers(0, len(rest)))]  # some duplicates
    random.Random(data.draw(st.integers())).shuffle(order)
    d = direction()
    isn = data.draw(st.integers(0, 0xFFFFFFFF))
    add_segment(d, isn, first[1], LIMIT)
    for off, seg in order:
        add_segment(d, (isn + off) & 0xFFFFFFFF, seg, LIMIT)
    assert bytes(d.buf or b"") == payload[:LIMIT]
