"""Capture record formats: classic pcap and pcapng, read from a chunked stream (compiled).

A frame is ``(ts_ns, linktype, buf, offset, caplen, wire_len)``: the packet is
``buf[offset : offset + caplen]``, where ``buf`` is the chunk of the file it was read in. Copying
each packet out of its chunk cost a twentieth of the whole run (a 1 KB allocation, a copy and a
free per packet). A capture is read as :class:`Records`, a cursor whose fields hold the current
frame, so that the engine's loop makes no object per packet; iterating it yields the frames as
tuples. Files are read in large chunks (never the whole file, never per record), so the same
code serves regular files, pipes and gzip streams. Any damage raises :class:`CaptureError`
naming the file and the byte offset; frames read before it stay valid.
"""

from __future__ import annotations

import gzip
import io
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Final, cast

from mypy_extensions import i64

from sensor.decode.sieve import Sieve

Frame = tuple[int, int, bytes, int, int, int]


def frame(ts_ns: int, linktype: int, data: bytes, wire_len: int) -> Frame:
    """A frame that is all of ``data`` (live capture copies each packet out of its ring)."""
    return ts_ns, linktype, data, 0, len(data), wire_len


def frame_bytes(f: Frame) -> bytes:
    """The packet bytes of a frame (a copy)."""
    return f[2][f[3] : f[3] + f[4]]


# Small enough that the allocator reuses each chunk's memory: at 1 MiB every chunk (and the
# leftover joined to it) was fresh memory from the kernel, and its page faults cost a third of the
# reader's time.
CHUNK: Final = 1 << 16
# Larger than any real snap length (262144 is libpcap's maximum); a bigger record is corruption.
MAX_RECORD: Final = 1 << 20
MAX_BLOCK: Final = 1 << 24

PCAP_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB: Final = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC: Final = b"\x1f\x8b"


class CaptureError(Exception):
    """A capture could not be read past ``offset`` (bytes into the decompressed stream)."""

    def __init__(self, path: str, offset: int, message: str) -> None:
        super().__init__(f"{path}: offset {offset}: {message}")
        self.path = path
        self.offset = offset
        self.message = message


class Stream:
    """Chunked reader that turns decompression and I/O failures into CaptureError.

    It owns ``file`` (the opened capture, under any decompression) when one is given, and closes
    it when closed or collected: a reader given up half-way is collected without finishing, and a
    compiled generator does not run its ``finally`` then.
    """

    def __init__(
        self,
        raw: io.BufferedReader | gzip.GzipFile,
        path: str,
        file: io.BufferedReader | None = None,
    ) -> None:
        self.raw = raw
        self.path = path
        self.file = file
        self.consumed = 0  # bytes handed out so far

    def close(self) -> None:
        """Close the file this stream owns, if any (standard input is never owned)."""
        file = self.file
        if file is not None:
            self.file = None
            file.close()

    def __del__(self) -> None:
        self.close()

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes unless the stream ends first (for fixed-size headers)."""
        return self._call(self.raw.read, size)

    def chunk(self, size: int) -> bytes:
        """Up to ``size`` bytes from one underlying read; empty only at the end.

        One read returns what a pipe holds now (no waiting for a full chunk) and keeps the data a
        damaged gzip stream decompressed before its damage (a full read would drop it).
        """
        return self._call(self.raw.read1, size)

    def _call(self, read: Callable[[int], bytes], size: int) -> bytes:
        try:
            data = read(size)
        except (OSError, EOFError, zlib.error) as exc:
            # gzip.BadGzipFile is an OSError; a cut gzip stream is an EOFError.
            raise CaptureError(self.path, self.consumed, f"read failed: {exc}") from exc
        self.consumed += len(data)
        return data


def read_frames(path: str, sieve: Sieve | None = None) -> Records:
    """Every frame of one capture file, pcap or pcapng, gzip-compressed or not (``-``: stdin):
    records to advance through, or to iterate as frame tuples. Raises CaptureError at once if
    the file cannot be opened or has no capture header, and while reading at the first damaged
    record.

    With a sieve (a worker of several), frames of other shards' flows are left out.
    """
    raw = _open(path)
    stream = Stream(raw, path, None if path == "-" else raw)
    try:
        # peek() leaves the bytes in place, so this works on pipes as well as files.
        if raw.peek(2)[:2] == GZIP_MAGIC:
            stream.raw = gzip.GzipFile(fileobj=raw, mode="rb")
        head = stream.read(4)
        if len(head) < 4:
            raise CaptureError(path, 0, "file is empty or shorter than a capture header")
        if head in PCAP_MAGICS:
            return PcapRecords(stream, head, sieve)
        if head == PCAPNG_SHB:
            return FrameRecords(pcapng_frames(stream, head, sieve))
        raise CaptureError(path, 0, f"not a pcap or pcapng file (magic {head.hex()})")
    except (CaptureError, OSError):
        stream.close()
        raise


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


class Records:
    """A cursor over frames: each ``advance()`` moves to the next frame and fills the fields,
    until it returns False. The packet is ``buf[at : at + caplen]``.

    The engine reads a capture this way: a frame is six native fields, where a tuple per frame
    (and its four integers, each a new object) cost 0.14 s of a 1.9 s run. Iterating yields the
    same frames as tuples, for any other reader.
    """

    def __init__(self) -> None:
        self.ts = 0
        self.linktype = 0
        self.buf = b""
        self.at: i64 = 0
        self.caplen: i64 = 0
        self.wire_len: i64 = 0

    def advance(self) -> bool:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        while self.advance():
            yield self.ts, self.linktype, self.buf, self.at, self.caplen, self.wire_len


class FrameRecords(Records):
    """Frames given as tuples (live capture, pcapng, tests), read as records."""

    def __init__(self, frames: Iterable[Frame]) -> None:
        super().__init__()
        self._frames = iter(frames)

    def advance(self) -> bool:
        frame = next(self._frames, None)
        if frame is None:
            return False
        self.ts, self.linktype, self.buf, self.at, self.caplen, self.wire_len = frame
        return True


class PcapRecords(Records):
    """The records of a classic pcap stream, read in place from chunks of the stream."""

    def __init__(self, stream: Stream, magic: bytes, sieve: Sieve | None = None) -> None:
        super().__init__()
        endian, frac_unit = PCAP_MAGICS[magic]
        header = magic + stream.read(20)
        if len(header) < 24:
            raise CaptureError(stream.path, 0, "truncated pcap file header")
        _major, _minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack(
            endian + "HHiIII", header[4:24]
        )
        # the upper bits carry the FCS length and its "present" flag (0x04000000)
        self.linktype = linktype & 0xFFFF
        self._stream = stream
        self._sieve = sieve
        self._little = endian == "<"
        self._frac_ns: i64 = frac_unit
        self._pos: i64 = 0  # the next record in buf
        self._end: i64 = 0  # len(buf)
        self._base: i64 = 24  # stream offset of buf[0]
        # The chunk a record that straddled two chunks ended in, to be read on from ``_resume``.
        self._after = b""
        self._resume: i64 = 0
        self._ended = False  # the stream ended (and its file is closed): nothing more to read

    def advance(self) -> bool:
        if self._ended:
            return False
        buf = self.buf
        pos = self._pos
        end_buf = self._end
        little = self._little
        sieve = self._sieve
        while True:
            # Hot loop: the header fields are assembled from single bytes into 64-bit integers,
            # which the compiled build turns into plain machine arithmetic (no tuple, no call,
            # no overflow check: 32-bit fields cannot overflow it).
            while pos + 16 <= end_buf:
                incl = _u32(buf, pos + 8, little)
                if incl > MAX_RECORD:
                    self._pos = pos
                    raise CaptureError(
                        self._stream.path,
                        self._base + pos,
                        f"record length {incl} is not plausible",
                    )
                end = pos + 16 + incl
                if end > end_buf:
                    break
                ts = (
                    _u32(buf, pos, little) * 1_000_000_000
                    + _u32(buf, pos + 4, little) * self._frac_ns
                )
                if sieve is None or not sieve.drops(self.linktype, buf, pos + 16, incl, ts):
                    self.ts = ts
                    self.at = pos + 16
                    self.caplen = incl
                    self.wire_len = _u32(buf, pos + 12, little)
                    self._pos = end
                    return True
                pos = end
            buf, pos, end_buf = self._refill(buf, pos, end_buf)
            if end_buf < 0:
                return False

    def _refill(self, buf: bytes, pos: i64, end_buf: i64) -> tuple[bytes, i64, i64]:
        """The buffer to read on in, its next record and its length (-1: the stream ended)."""
        left = end_buf - pos  # bytes of a record that continues in the next chunk
        if self._after:
            buf, self._after = self._after, b""
            self._base += pos - self._resume
            pos = self._resume
        else:
            chunk = self._stream.chunk(CHUNK)
            if not chunk:
                self._pos = pos
                self._ended = True
                self._stream.close()
                if left:
                    raise CaptureError(
                        self._stream.path,
                        self._base + pos,
                        f"truncated record: {left} bytes at end of file",
                    )
                return buf, pos, -1
            need = _rest_of_record(buf, pos, chunk, self._little) if left else 0
            if not left:
                buf = chunk
            elif 0 < need < len(chunk):
                # Only the straddling record is joined, not the whole chunk behind it: that
                # one record is read from the join, then the chunk from where it ends.
                self._after = chunk
                self._resume = need
                buf = buf[pos:] + chunk[:need]
            else:
                buf = buf[pos:] + chunk
            self._base += pos
            pos = 0
        self.buf = buf
        self._pos = pos
        self._end = len(buf)
        return buf, pos, len(buf)


def _rest_of_record(buf: bytes, pos: i64, chunk: bytes, little: bool) -> i64:
    """How many bytes of ``chunk`` complete the record begun at ``buf[pos:]``; 0 when its header
    is not complete yet, or when the length it gives is implausible (the main loop reports it)."""
    head = buf[pos : pos + 16]
    if len(head) < 16:
        head += chunk[: 16 - len(head)]
        if len(head) < 16:
            return 0
    incl = _u32(head, 8, little)
    if incl > MAX_RECORD:
        return 0
    return 16 + incl - (len(buf) - pos)


def _u32(b: bytes, i: i64, little: bool) -> i64:
    """The 32-bit field at ``b[i]``, in the file's byte order."""
    return _le32(b, i) if little else _be32(b, i)


def _le32(b: bytes, i: i64) -> i64:
    return i64(b[i]) | i64(b[i + 1]) << 8 | i64(b[i + 2]) << 16 | i64(b[i + 3]) << 24


def _be32(b: bytes, i: i64) -> i64:
    return i64(b[i]) << 24 | i64(b[i + 1]) << 16 | i64(b[i + 2]) << 8 | i64(b[i + 3])


class _Interface:
    __slots__ = ("div", "linktype", "mul", "offset_ns", "snaplen")

    def __init__(self, linktype: int, snaplen: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.mul = 1000  # default resolution: microseconds
        self.div = 1
        self.offset_ns = 0


def _idb(body: bytes, endian: str, path: str, offset: int) -> _Interface:
    if len(body) < 8:
        raise CaptureError(path, offset, "truncated interface description block")
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", body, 0)
    iface = _Interface(linktype, snaplen)
    for code, value in _options(body, 8, endian):
        if code == 9 and len(value) >= 1:  # if_tsresol
            exp = value[0] & 0x7F
            if value[0] & 0x80:
                iface.mul, iface.div = 1_000_000_000, 1 << exp
            elif exp <= 9:
                iface.mul, iface.div = 10 ** (9 - exp), 1
            else:
                iface.mul, iface.div = 1, 10 ** (exp - 9)
        elif code == 14 and len(value) >= 8:  # if_tsoffset, seconds
            iface.offset_ns = struct.unpack_from(endian + "q", value)[0] * 1_000_000_000
    return iface


def _options(body: bytes, pos: int, endian: str) -> Iterator[tuple[int, bytes]]:
    """TLV options; stops quietly at opt_endofopt or at the first malformed option."""
    unpack = struct.Struct(endian + "HH").unpack_from
    while pos + 4 <= len(body):
        code, length = unpack(body, pos)
        if code == 0:
            return
        value = body[pos + 4 : pos + 4 + length]
        if len(value) < length:
            return
        yield code, value
        pos += 4 + ((length + 3) & ~3)


def pcapng_frames(stream: Stream, magic: bytes, sieve: Sieve | None = None) -> Iterator[Frame]:
    path = stream.path
    buf = magic
    pos = 0
    base = 0
    endian = "<"
    ifaces: list[_Interface] = []
    last_ts = 0
    eof = False
    while True:
        if len(buf) - pos < 12 and not eof:
            chunk = stream.chunk(CHUNK)
            eof = not chunk
            buf = buf[pos:] + chunk
            base += pos
            pos = 0
            continue
        if pos == len(buf) and eof:
            return
        if len(buf) - pos < 12:
            raise CaptureError(path, base + pos, "truncated block header at end of file")
        btype = buf[pos : pos + 4]
        if btype == PCAPNG_SHB:
            bom = buf[pos + 8 : pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise CaptureError(path, base + pos, "bad pcapng byte-order magic")
        block_type, block_len = struct.unpack_from(endian + "II", buf, pos)
        if block_len < 12 or block_len % 4 or block_len > MAX_BLOCK:
            raise CaptureError(path, base + pos, f"block length {block_len} is not plausible")
        if len(buf) - pos < block_len:
            if eof:
                raise CaptureError(path, base + pos, "truncated block at end of file")
            chunk = stream.chunk(max(CHUNK, block_len))
            eof = not chunk
            buf = buf[pos:] + chunk
            base += pos
            pos = 0
            continue
        (trailer,) = struct.unpack_from(endian + "I", buf, pos + block_len - 4)
        if trailer != block_len:
            raise CaptureError(path, base + pos, "block trailer length differs from header")
        offset = base + pos
        start = pos + 8  # the block body: buf[start : pos + block_len - 4] before pos moves on
        pos += block_len
        if block_type in (6, 2):
            # Enhanced packet block (and the obsolete packet block, laid out alike): fields
            # read in place, one slice for the packet.
            if block_len < 32:
                raise CaptureError(path, offset, "truncated packet block")
            if block_type == 6:
                iface_id, hi, lo, caplen, orig = struct.unpack_from(endian + "IIIII", buf, start)
            else:
                iface_id, _drops, hi, lo, caplen, orig = struct.unpack_from(
                    endian + "HHIIII", buf, start
                )
            if iface_id >= len(ifaces):
                raise CaptureError(path, offset, f"packet names unknown interface {iface_id}")
            if caplen > block_len - 32:
                raise CaptureError(path, offset, f"captured length {caplen} exceeds its block")
            iface = ifaces[iface_id]
            last_ts = ((hi << 32) | lo) * iface.mul // iface.div + iface.offset_ns
            if sieve is None or not sieve.drops(iface.linktype, buf, start + 20, caplen, last_ts):
                yield last_ts, iface.linktype, buf, start + 20, caplen, orig
            continue
        body = buf[start : pos - 4]
        if block_type == 0x0A0D0D0A:
            ifaces = []
        elif block_type == 1:
            ifaces.append(_idb(body, endian, path, offset))
        elif block_type == 3:  # simple packet block: interface 0, no timestamp
            if not ifaces:
                raise CaptureError(path, offset, "simple packet block before any interface")
            if len(body) < 4:
                raise CaptureError(path, offset, "truncated simple packet block")
            (orig,) = struct.unpack_from(endian + "I", body)
            caplen = min(orig, len(body) - 4)
            if ifaces[0].snaplen:
                caplen = min(caplen, ifaces[0].snaplen)
            # No timestamp of its own: keep the section's last one so time never runs backwards.
            linktype = ifaces[0].linktype
            if sieve is None or not sieve.drops(linktype, body, 4, caplen, last_ts):
                yield last_ts, linktype, body, 4, caplen, orig
