"""Capture file readers: classic pcap, pcapng, gzip-compressed either, and standard input.

A capture is read as :class:`Records`, a cursor the engine advances frame by frame, or iterated
as frame tuples ``(ts_ns, linktype, buf, offset, caplen, wire_len)``: the packet is
``buf[offset : offset + caplen]``. The reading itself is compiled, in ``sensor.capture.formats``;
this module is its public face.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sensor.capture.formats import (
    CHUNK,
    MAX_BLOCK,
    MAX_RECORD,
    CaptureError,
    Frame,
    FrameRecords,
    Records,
    frame,
    frame_bytes,
    read_frames,
)

__all__ = [
    "CHUNK",
    "MAX_BLOCK",
    "MAX_RECORD",
    "CaptureError",
    "Frame",
    "FrameRecords",
    "Records",
    "frame",
    "frame_bytes",
    "read_frames",
    "read_many",
]


def read_many(paths: Iterable[str]) -> Iterator[Frame]:
    """Frames of several captures, one after the other, as one stream."""
    for path in paths:
        yield from read_frames(path)
