"""Capture file readers: classic pcap, pcapng, gzip-compressed either, and standard input.

Every reader yields frames as plain tuples ``(ts_ns, linktype, data, wire_len)``. The record
formats are parsed in ``sensor.capture.formats`` (compiled); this module opens the file and owns
it, so that a reader given up half-way still closes its file when it is collected (a compiled
generator does not run its ``finally`` then).
"""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterable, Iterator
from typing import cast

from sensor.capture.formats import (
    CHUNK,
    GZIP_MAGIC,
    MAX_BLOCK,
    MAX_RECORD,
    PCAP_MAGICS,
    PCAPNG_SHB,
    CaptureError,
    Frame,
    Stream,
    pcap_frames,
    pcapng_frames,
)
from sensor.decode.sieve import Sieve

__all__ = ["CHUNK", "MAX_BLOCK", "MAX_RECORD", "CaptureError", "Frame", "read_frames", "read_many"]


def _open(path: str) -> io.BufferedReader:
    if path == "-":
        # sys.stdin is None when the process started with descriptor 0 closed.
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:
            raise CaptureError(path, 0, "standard input is not available")
        return cast(io.BufferedReader, buffer)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise CaptureError(path, 0, exc.strerror or str(exc)) from exc


def read_frames(path: str, sieve: Sieve | None = None) -> Iterator[Frame]:
    """Yield every frame of one capture file (``-`` is standard input).

    With a sieve (a worker of several), frames of other shards' flows are left out.
    """
    raw = _open(path)
    try:
        source: io.BufferedReader | gzip.GzipFile = raw
        # peek() leaves the bytes in place, so this works on pipes as well as files.
        if raw.peek(2)[:2] == GZIP_MAGIC:
            source = gzip.GzipFile(fileobj=raw, mode="rb")
        stream = Stream(source, path)
        head = stream.read(4)
        if len(head) < 4:
            raise CaptureError(path, 0, "file is empty or shorter than a capture header")
        if head in PCAP_MAGICS:
            yield from pcap_frames(stream, head, sieve)
        elif head == PCAPNG_SHB:
            yield from pcapng_frames(stream, head, sieve)
        else:
            raise CaptureError(path, 0, f"not a pcap or pcapng file (magic {head.hex()})")
    finally:
        # Standard input belongs to the process; sys.stdin is not consulted for files.
        if path != "-":
            raw.close()


def read_many(paths: Iterable[str]) -> Iterator[Frame]:
    """Frames of several captures, one after the other, as one stream."""
    for path in paths:
        yield from read_frames(path)
