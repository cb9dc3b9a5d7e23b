"""Capture file readers: classic pcap, pcapng, gzip-compressed either, and standard input.

Every reader yields frames as plain tuples ``(ts_ns, linktype, buf, offset, caplen, wire_len)``:
the packet is ``buf[offset : offset + caplen]``. The reading itself is compiled, in
``sensor.capture.formats``; this module is its public face.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sensor.capture.formats import (
    CHUNK,
    MAX_BLOCK,
    MAX_RECORD,
    CaptureError,
    Frame,
    capture_frames,
    frame,
    frame_bytes,
)
from sensor.decode.sieve import Sieve

__all__ = [
    "CHUNK",
    "MAX_BLOCK",
    "MAX_RECORD",
    "CaptureError",
    "Frame",
    "frame",
    "frame_bytes",
    "read_frames",
    "read_many",
]


def read_frames(path: str, sieve: Sieve | None = None) -> Iterator[Frame]:
    """Yield every frame of one capture file (``-`` is standard input).

    With a sieve (a worker of several), frames of other shards' flows are left out.
    """
    return capture_frames(path, sieve)


def read_many(paths: Iterable[str]) -> Iterator[Frame]:
    """Frames of several captures, one after the other, as one stream."""
    for path in paths:
        yield from read_frames(path)
