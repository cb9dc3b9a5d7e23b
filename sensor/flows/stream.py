"""In-order first bytes of a TCP direction, robust to retransmission and reordering.

Only directions still being inspected come here, so this runs for a flow's first few segments.
Bytes already accepted are never rewritten (first copy wins, as most IDSs do), segments that
arrive early wait in a small pending map, and a hole that does not fill in time stops the
inspection of that direction instead of gluing unrelated bytes together.
"""

from __future__ import annotations

from typing import Final

from sensor.flows.table import Direction

SEQ_MASK: Final = 0xFFFFFFFF
MAX_PENDING: Final = 16


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in 32-bit sequence space."""
    d = (a - b) & SEQ_MASK
    return d - (1 << 32) if d >= 1 << 31 else d


def add_segment(d: Direction, seq: int, payload: bytes, limit: int) -> bool:
    """Add one segment; return True when new in-order bytes were appended."""
    buf = d.buf
    if buf is None or d.gap:
        return False
    if d.next_seq < 0:
        d.next_seq = seq
    grew = _append(d, buf, seq, payload, limit)
    pending = d.pending
    if grew and pending:
        _drain(d, buf, pending, limit)
    elif not grew and seq_diff(seq, d.next_seq) > 0 and payload:
        if pending is None:
            pending = d.pending = {}
        if len(pending) >= MAX_PENDING or seq_diff(seq, d.next_seq) > limit:
            d.gap = True  # a hole we will not fill within the buffer: stop here
        else:
            pending.setdefault(seq, payload)
    return grew


def _append(d: Direction, buf: bytearray, seq: int, payload: bytes, limit: int) -> bool:
    diff = seq_diff(seq, d.next_seq)
    if diff > 0:
        return False
    new = payload[-diff:] if diff else payload
    if not new:
        return False
    room = limit - len(buf)
    if room <= 0:
        return False
    new = new[:room]
    buf += new
    d.next_seq = (d.next_seq + len(new)) & SEQ_MASK
    return True


def _drain(d: Direction, buf: bytearray, pending: dict[int, bytes], limit: int) -> None:
    progress = True
    while progress and pending:
        progress = False
        for seq in list(pending):
            if seq_diff(seq, d.next_seq) <= 0:
                _append(d, buf, seq, pending.pop(seq), limit)
                progress = True
