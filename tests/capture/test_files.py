"""Capture readers: every format, stdin, gzip, damage at every offset, and the real captures."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.capture.files import CHUNK, MAX_BLOCK, MAX_RECORD, CaptureError, read_frames, read_many
from tests.capbuild import (
    CAPTURES,
    LINKTYPE_ETHERNET,
    NS,
    WRAPPERS,
    Built,
    Frame,
    Iface,
    block,
    epb,
    ethernet,
    gzipped,
    idb,
    mixed_pcapng,
    mixed_placement,
    opb,
    pcap,
    pcapng,
    plain,
    sample_frames,
    shb,
    spb,
    v4_tcp,
    v6_udp,
)

T = 1_700_000_000_123_456_789  # 1_700_000_000.123456789 s

FORMATS: dict[str, Callable[[list[Frame]], Built]] = {
    "pcap-le-us": pcap,
    "pcap-be-us": lambda f: pcap(f, big_endian=True),
    "pcap-le-ns": lambda f: pcap(f, nanos=True),
    "pcap-be-ns": lambda f: pcap(f, big_endian=True, nanos=True),
    "pcapng-le": mixed_pcapng,
    "pcapng-be": lambda f: mixed_pcapng(f, big_endian=True),
}


def _gzip_of(build: Callable[[list[Frame]], Built]) -> Callable[[list[Frame]], Built]:
    return lambda frames: gzipped(build(frames))


FORMATS.update({f"{name}.gz": _gzip_of(build) for name, build in list(FORMATS.items())})


class _Stdin:
    """Stands in for sys.stdin: only ``.buffer`` is used."""

    def __init__(self, raw: io.RawIOBase | io.BytesIO) -> None:
        self.buffer = io.BufferedReader(raw)


class _Trickle(io.RawIOBase):
    """A pipe that hands out at most ``piece`` bytes per read."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.data = memoryview(data)
        self.piece = piece
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.piece, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@contextlib.contextmanager
def stdin_of(data: bytes, piece: int = 0) -> Iterator[None]:
    raw = _Trickle(data, piece) if piece else io.BytesIO(data)
    with mock.patch.object(sys, "stdin", _Stdin(raw)):
        yield


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read_until_error(path: str) -> tuple[list[Frame], CaptureError | None]:
    """Frames yielded before the reader stopped, and the error it stopped with (if any)."""
    got: list[Frame] = []
    try:
        for f in read_frames(path):
            got += plain([f])
    except CaptureError as exc:
        return got, exc
    return got, None


# --- formats and timestamps ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_yields_the_same_frames(tmp_path: Path, fmt: str) -> None:
    source = sample_frames()
    built = FORMATS[fmt](source)
    got = plain(read_frames(write(tmp_path, "cap", built.data)))
    assert got == list(built.frames)
    # Only the timestamp may differ from the source, and only by the file's resolution.
    assert [(lt, data, wire) for _, lt, data, wire in got] == [f[1:] for f in source]
    assert all(type(ts) is int for ts, *_ in got)
    # A simple packet block has no time of its own (it repeats the one before); others round down.
    spb = [fmt.startswith("pcapng") and kind == "spb" for _, _, kind in mixed_placement(source)]
    for src, (ts, *_), simple in zip(source, got, spb, strict=True):
        assert ts <= src[0] and (simple or src[0] - ts < 1000)


@pytest.mark.parametrize("fmt", ["pcap-le-ns", "pcap-be-ns"])
def test_nanosecond_pcap_keeps_every_nanosecond(tmp_path: Path, fmt: str) -> None:
    source = sample_frames()
    got = plain(read_frames(write(tmp_path, "cap", FORMATS[fmt](source).data)))
    assert [ts for ts, *_ in got] == [ts for ts, *_ in source]


@pytest.mark.parametrize("e", ["<", ">"])
@pytest.mark.parametrize(
    ("magic", "sec", "frac", "expected"),
    [
        (0xA1B2C3D4, 1_700_000_000, 123456, T - 789),  # microseconds
        (0xA1B23C4D, 1_700_000_000, 123456789, T),  # nanoseconds
        (0xA1B2C3D4, 0, 0, 0),
        (0xA1B23C4D, 0, 1, 1),
        (0xA1B2C3D4, 2**32 - 1, 999999, 4_294_967_295_999_999_000),
        (0xA1B23C4D, 2**32 - 1, 999999999, 4_294_967_295_999_999_999),
    ],
)
def test_pcap_timestamp_is_exact_integer_nanoseconds(
    tmp_path: Path, e: str, magic: int, sec: int, frac: int, expected: int
) -> None:
    header = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    record = struct.pack(e + "IIII", sec, frac, 4, 60) + b"abcd"
    got = plain(read_frames(write(tmp_path, "t.pcap", header + record)))
    assert got == [(expected, 1, b"abcd", 60)]
    assert type(got[0][0]) is int


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize(
    ("iface", "units", "expected"),
    [
        (Iface(), 1_700_000_000_123_456, 1_700_000_000_123_456_000),
        (Iface(tsresol=3), 1_700_000_000_123, 1_700_000_000_123_000_000),
        (Iface(tsresol=6), 1_700_000_000_123_456, 1_700_000_000_123_456_000),
        (Iface(tsresol=9), 1_700_000_000_123_456_789, T),
        (Iface(tsresol=10), 17_000_000_001_234_567_890, T),
        (Iface(tsresol=0x80 | 20), 1_782_579_200_129_453, 1_700_000_000_123_456_001),
        (Iface(tsresol=0x80 | 30), 1_825_361_100_932_560_717, 1_700_000_000_123_456_788),
        (Iface(tsresol=0x80 | 10), 1_740_800_000_126, 1_700_000_000_123_046_875),
        (Iface(tsresol=9, tsoffset=1_700_000_000), 123_456_789, T),
        (Iface(tsresol=6, tsoffset=-100), 1_700_000_100_123_456, 1_700_000_000_123_456_000),
        (Iface(tsresol=0), 1_700_000_000, 1_700_000_000_000_000_000),
    ],
)
def test_pcapng_timestamp_resolutions(
    tmp_path: Path, big_endian: bool, iface: Iface, units: int, expected: int
) -> None:
    e = ">" if big_endian else "<"
    data = shb(e) + idb(iface, e) + epb(0, units, b"abcde", 60, e) + opb(0, units, b"", 0, e)
    got = plain(read_frames(write(tmp_path, "t.pcapng", data)))
    assert got == [(expected, 1, b"abcde", 60), (expected, 1, b"", 0)]
    assert iface.read_back(T) == expected  # the builder's model agrees with the literal


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_tshark_reads_the_built_files_the_same_way(tmp_path: Path, fmt: str) -> None:
    """Checks the builders themselves against an independent reader."""
    source = sample_frames()
    built = FORMATS[fmt](source)
    path = write(tmp_path, "cap", built.data)
    # pcapng: skip the custom block that tshark lists as a record of its own.
    select = ["-Y", "frame.interface_id"] if fmt.startswith("pcapng") else []
    fields = ["-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len"]
    rows = tshark(path, *select, *fields)
    assert len(rows) == len(built.frames)
    spb = [kind == "spb" for _, _, kind in mixed_placement(source)]
    for i, (row, (ts, _lt, data, wire)) in enumerate(zip(rows, built.frames, strict=True)):
        # tshark leaves simple packet blocks without a time; the reader repeats the last one.
        assert row[0] == ("" if fmt.startswith("pcapng") and spb[i] else epoch_text(ts))
        assert (int(row[1]), int(row[2])) == (wire, len(data))


def test_pcapng_interfaces_with_different_link_types(tmp_path: Path) -> None:
    names = ["ethernet", "sll2", "raw-101", "null-le-24", "ipv6-229", "loop", "sll", "vlan"]
    ips = [v6_udp() if n == "ipv6-229" or i % 2 else v4_tcp() for i, n in enumerate(names)]
    wrapped = [WRAPPERS[n](ip) for n, ip in zip(names, ips, strict=True)]
    sections = (
        tuple(Iface(w.linktype, tsresol=9) for w in wrapped[:5]),
        tuple(Iface(w.linktype, tsresol=6) for w in wrapped[5:]),
    )
    frames = [(T + i * NS, w.linktype, w.frame, len(w.frame)) for i, w in enumerate(wrapped)]
    where = [(0, i, "epb") for i in range(5)] + [(1, i, "epb") for i in range(3)]
    built = pcapng(sections, frames, where, big_endian=True)
    got = plain(read_frames(write(tmp_path, "multi.pcapng", built.data)))
    assert [(lt, data) for _, lt, data, _ in got] == [(w.linktype, w.frame) for w in wrapped]
    assert [ts for ts, *_ in got] == [T + i * NS for i in range(5)] + [
        T - 789 + i * NS for i in range(5, 8)
    ]


def test_pcap_link_type_drops_fcs_flags(tmp_path: Path) -> None:
    # FCS length 4 is present (0x04000000 flag, length in the top nibble) on Ethernet.
    field = 0x40000000 | 0x04000000 | LINKTYPE_ETHERNET
    built = pcap(sample_frames()[:2], linktype=field)
    got = plain(read_frames(write(tmp_path, "fcs.pcap", built.data)))
    assert [lt for _, lt, _, _ in got] == [LINKTYPE_ETHERNET, LINKTYPE_ETHERNET]


def test_zero_length_records_are_frames(tmp_path: Path) -> None:
    frames = [(T, 1, b"", 0), (T + 1000, 1, b"", 1514), (T + 2000, 1, b"x", 1)]
    for built in (
        pcap(frames),
        pcap(frames, big_endian=True, nanos=True),
        mixed_pcapng(frames),
    ):
        got = plain(read_frames(write(tmp_path, "z", built.data)))
        assert [(data, wire) for _, _, data, wire in got] == [(b"", 0), (b"", 1514), (b"x", 1)]


def test_record_of_exactly_max_length_is_read(tmp_path: Path) -> None:
    data = bytes(range(256)) * (MAX_RECORD // 256)
    built = pcap([(T, 1, data, len(data)), (T + 1, 1, b"tail", 4)], nanos=True)
    got = plain(read_frames(write(tmp_path, "max.pcap", built.data)))
    assert [(ts, d) for ts, _, d, _ in got] == [(T, data), (T + 1, b"tail")]


@pytest.mark.parametrize("fmt", ["pcap-le-us", "pcapng-be", "pcap-be-ns.gz", "pcapng-le.gz"])
def test_files_larger_than_a_read_chunk(tmp_path: Path, fmt: str) -> None:
    frame = ethernet(0x0800, v4_tcp(b"z" * 1400))
    frames = [(T + i * 1000, 1, frame[: 60 + i % 1400], len(frame)) for i in range(4000)]
    built = FORMATS[fmt](frames)
    assert len(built.data) > 2 * CHUNK or fmt.endswith(".gz")
    assert plain(read_frames(write(tmp_path, "big", built.data))) == list(built.frames)


def test_pcapng_block_larger_than_a_read_chunk(tmp_path: Path) -> None:
    data = b"\xab" * (CHUNK + CHUNK // 2)
    raw = shb("<") + idb(Iface(tsresol=9), "<") + epb(0, T, data, len(data), "<")
    raw += epb(0, T + 1, b"after", 5, "<")
    got = plain(read_frames(write(tmp_path, "huge.pcapng", raw)))
    assert got == [(T, 1, data, len(data)), (T + 1, 1, b"after", 5)]


# --- the file is closed however reading ends ------------------------------------------------


def open_handles(path: str) -> int:
    """Descriptors of this process open on ``path``."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == os.path.realpath(path))


@pytest.mark.parametrize("fmt", ["pcap-le-us", "pcapng-le", "pcap-le-ns.gz"])
def test_the_file_is_closed_however_reading_ends(tmp_path: Path, fmt: str) -> None:
    built = FORMATS[fmt](sample_frames())
    path = write(tmp_path, "c", built.data)
    records = read_frames(path)
    assert open_handles(path) == 1  # opened, and its header read, at once
    frames = iter(records)
    next(frames)
    del records, frames  # given up half-way: closed when collected, without a ResourceWarning
    assert open_handles(path) == 0
    records = read_frames(path)
    assert len(plain(records)) == len(built.frames)
    assert open_handles(path) == 0  # closed at the end of the file, while still referenced
    assert plain(records) == []  # read to the end: nothing more, and no error
    del records
    damaged = write(tmp_path, "d", built.data[:-3])
    got, err = read_until_error(damaged)
    assert err is not None and got == list(built.frames)[: len(got)]
    assert open_handles(damaged) == 0


# --- stdin and several files -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt", ["pcap-le-us", "pcap-be-ns", "pcapng-le", "pcapng-be.gz", "pcap-le-ns.gz"]
)
def test_dash_reads_standard_input(fmt: str) -> None:
    built = FORMATS[fmt](sample_frames())
    with stdin_of(built.data):
        assert plain(read_frames("-")) == list(built.frames)
        assert not sys.stdin.buffer.closed  # standard input is not ours to close


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 16, 17, 100, 4096])
@pytest.mark.parametrize("fmt", ["pcap-be-us", "pcapng-le", "pcapng-be.gz"])
def test_pipe_that_delivers_small_pieces(fmt: str, piece: int) -> None:
    if fmt.endswith(".gz") and piece < 2:
        piece = 2  # gzip is recognised by peeking at the first read, which must hold the magic
    built = FORMATS[fmt](sample_frames())
    with stdin_of(built.data, piece):
        assert plain(read_frames("-")) == list(built.frames)


def test_files_are_read_without_touching_stdin(tmp_path: Path) -> None:
    built = pcap(sample_frames())
    path = write(tmp_path, "a.pcap", built.data)
    with mock.patch.object(sys, "stdin", None):
        assert plain(read_frames(path)) == list(built.frames)
        with pytest.raises(CaptureError) as info:
            plain(read_frames("-"))
    assert (info.value.path, info.value.offset) == ("-", 0)


def test_read_many_chains_files_in_order(tmp_path: Path) -> None:
    source = sample_frames()
    names = ["pcap-le-us", "pcapng-be.gz", "pcap-be-ns", "pcapng-le"]
    paths = [write(tmp_path, n, FORMATS[n](source[i:]).data) for i, n in enumerate(names)]
    expected = [f for i, n in enumerate(names) for f in FORMATS[n](source[i:]).frames]
    assert plain(read_many(paths)) == expected
    assert plain(read_many([])) == []


def test_read_many_stops_at_the_damaged_file(tmp_path: Path) -> None:
    good = pcap(sample_frames()).data
    paths = [
        write(tmp_path, "a", good),
        write(tmp_path, "b", good[:-3]),
        write(tmp_path, "c", good),
    ]
    got: list[Frame] = []
    with pytest.raises(CaptureError) as info:
        for f in read_many(paths):
            got += plain([f])
    assert info.value.path == paths[1]
    assert len(got) == 2 * len(sample_frames()) - 1


# --- damage ----------------------------------------------------------------------------------


def expected_after_cut(built: Built, cut: int) -> tuple[list[Frame], int | None]:
    """Frames a reader yields from the first ``cut`` bytes, and where it must report damage."""
    frames = [built.frames[i] for start, end, i in built.records if end <= cut and i >= 0]
    if cut < 4:
        return [], 0
    for start, end, _ in built.records:
        if start < cut < end:
            return frames, start
    return frames, None


@pytest.mark.parametrize("fmt", ["pcap-le-us", "pcap-be-ns", "pcapng-le", "pcapng-be"])
def test_truncated_at_every_offset(fmt: str) -> None:
    built = FORMATS[fmt](sample_frames())
    for cut in range(len(built.data)):
        frames, offset = expected_after_cut(built, cut)
        with stdin_of(built.data[:cut]):
            got, err = read_until_error("-")
        assert got == frames, cut
        assert (err.offset if err else None) == offset, cut
        assert err is None or (err.path == "-" and str(offset) in str(err))


@pytest.mark.parametrize("fmt", ["pcap-le-us", "pcap-be-ns"])
def test_truncated_around_the_read_chunk_edges(fmt: str) -> None:
    """Records that straddle two reads are joined alone; a cut anywhere near where one read
    ends and the next begins still yields exactly the records before it, and names its start."""
    frame = ethernet(0x0800, v4_tcp(b"z" * 1400))
    frames = [(T + i * 1000, 1, frame[: 60 + i * 37 % 1400], len(frame)) for i in range(400)]
    built = FORMATS[fmt](frames)
    assert len(built.data) > 3 * CHUNK
    # The first read after the file header returns what the 8 KiB buffer holds; the next ones
    # return a chunk each.
    edges = [8192 + k * CHUNK for k in range(3)]
    for cut in sorted({c for e in edges for c in range(e - 1500, e + 1500, 7)}):
        expected, offset = expected_after_cut(built, cut)
        with stdin_of(built.data[:cut]):
            got, err = read_until_error("-")
        assert got == expected, cut
        assert (err.offset if err else None) == offset, cut


@pytest.mark.parametrize("fmt", ["pcap-le-us", "pcapng-be"])
def test_truncated_gzip_keeps_the_frames_before_the_damage(fmt: str) -> None:
    plain = FORMATS[fmt](sample_frames())
    packed = gzipped(plain).data
    for cut in range(len(packed)):
        with stdin_of(packed[:cut]):
            got, err = read_until_error("-")
        assert err is not None, cut  # a gzip stream cut anywhere lacks its trailer
        assert got == list(plain.frames[: len(got)]), cut
        assert err.offset <= len(plain.data)
        done = max((end for _, end, i in plain.records if 0 <= i < len(got)), default=0)
        assert err.offset >= done
    # Only the 8-byte trailer missing: every frame comes out first.
    with stdin_of(packed[:-8]):
        got, err = read_until_error("-")
    assert got == list(plain.frames)
    assert err is not None and err.offset == len(plain.data)


@pytest.mark.parametrize("where", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_corrupt_gzip_stream(tmp_path: Path, where: float) -> None:
    plain = pcap(sample_frames())
    packed = bytearray(gzipped(plain).data)
    at = 10 + int((len(packed) - 18) * where)  # inside the deflate data
    packed[at] ^= 0x55
    path = write(tmp_path, "bad.gz", bytes(packed))
    _got, err = read_until_error(path)
    # Corrupt data may first surface as an implausible record or only at the CRC check.
    assert isinstance(err, CaptureError) and err.path == path
    assert 0 <= err.offset <= len(plain.data)


def test_gzip_crc_mismatch_after_intact_data(tmp_path: Path) -> None:
    plain = pcap(sample_frames())
    packed = bytearray(gzipped(plain).data)
    packed[-8] ^= 0xFF  # CRC-32 in the trailer
    got, err = read_until_error(write(tmp_path, "crc.gz", bytes(packed)))
    assert got == list(plain.frames)
    assert err is not None and err.offset == len(plain.data) and "read failed" in err.message


@pytest.mark.parametrize(
    "data",
    [
        b"\x1f\x8b",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage-not-deflate",
        b"\x1f\x8b\x07\x00" + b"\x00" * 20,  # unknown compression method
        gzip.compress(pcap(sample_frames()).data) + b"trailing junk",
    ],
    ids=["magic-only", "not-deflate", "unknown-method", "trailing-junk"],
)
def test_bad_gzip_raises_capture_error(tmp_path: Path, data: bytes) -> None:
    got, err = read_until_error(write(tmp_path, "bad.gz", data))
    assert isinstance(err, CaptureError)
    assert got == list(pcap(sample_frames()).frames[: len(got)])


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path) -> None:
    data = pcap(sample_frames()).data
    packed = gzip.compress(data[:100]) + gzip.compress(data[100:])
    assert plain(read_frames(write(tmp_path, "two.gz", packed))) == list(
        pcap(sample_frames()).frames
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xd4", "empty"),
        (b"\xd4\xc3\xb2", "empty"),
        (b"\x00\x00\x00\x00" * 8, "not a pcap"),
        (b"GET / HTTP/1.1\r\n\r\n", "not a pcap"),
        (b"\xa1\xb2\xcd\x34" + b"\x00" * 20, "not a pcap"),  # Kuznetzov's modified pcap
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00", "truncated block header"),
    ],
    ids=[
        "empty",
        "1-byte",
        "3-bytes",
        "zeros",
        "http",
        "modified-pcap",
        "pcap-header-cut",
        "shb-header-cut",
    ],
)
def test_not_a_capture(tmp_path: Path, data: bytes, message: str) -> None:
    got, err = read_until_error(write(tmp_path, "x", data))
    assert got == []
    assert err is not None and err.offset == 0 and message in err.message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (str(tmp_path / "nope.pcap"), str(tmp_path)):
        got, err = read_until_error(path)
        assert got == [] and err is not None and (err.path, err.offset) == (path, 0)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("incl", [MAX_RECORD + 1, 0x7FFFFFFF, 0xFFFFFFFF])
def test_pcap_absurd_record_length(tmp_path: Path, big_endian: bool, incl: int) -> None:
    good = pcap(sample_frames()[:3], big_endian=big_endian)
    e = ">" if big_endian else "<"
    data = good.data + struct.pack(e + "IIII", 1, 2, incl, incl) + b"\x00" * 64
    got, err = read_until_error(write(tmp_path, "abs.pcap", data))
    assert got == list(good.frames)
    assert err is not None and err.offset == len(good.data) and str(incl) in err.message


E = "<"
BASE = shb(E) + idb(Iface(tsresol=9), E) + epb(0, T, b"first", 60, E)
EPB_OK = epb(0, T, b"abcd", 60, E)


def _set_trailer(raw: bytes, value: int) -> bytes:
    return raw[:-4] + struct.pack(E + "I", value)


PCAPNG_DAMAGE = {
    "length-not-multiple-of-4": (struct.pack(E + "II", 6, 33) + b"\x00" * 40, "not plausible"),
    "length-below-12": (struct.pack(E + "II", 6, 8) + b"\x00" * 8, "not plausible"),
    "length-zero": (struct.pack(E + "II", 6, 0) + b"\x00" * 8, "not plausible"),
    "length-above-max": (struct.pack(E + "II", 6, MAX_BLOCK + 4) + b"\x00" * 8, "not plausible"),
    "trailer-mismatch": (_set_trailer(EPB_OK, len(EPB_OK) + 4), "trailer"),
    "trailer-zero": (_set_trailer(EPB_OK, 0), "trailer"),
    "epb-unknown-interface": (epb(1, T, b"abcd", 60, E), "unknown interface 1"),
    "opb-unknown-interface": (opb(7, T, b"abcd", 60, E), "unknown interface 7"),
    "epb-caplen-exceeds-block": (epb(0, T, b"abcd", 60, E, caplen=200), "exceeds"),
    "epb-body-too-short": (block(6, b"\x00" * 16, E), "truncated packet block"),
    "opb-body-too-short": (block(2, b"\x00" * 12, E), "truncated packet block"),
    "spb-body-too-short": (block(3, b"", E), "truncated simple packet block"),
    "idb-body-too-short": (block(1, b"\x01\x00\x00\x00", E), "truncated interface"),
    "shb-bad-byte-order": (
        struct.pack(E + "III", 0x0A0D0D0A, 28, 0x11223344) + b"\x00" * 16,
        "byte-order",
    ),
    "spb-before-interface-of-new-section": (shb(E) + spb(b"abcd", 4, E), "before any interface"),
    "epb-after-new-section": (shb(E) + EPB_OK, "unknown interface 0"),
}


@pytest.mark.parametrize("case", sorted(PCAPNG_DAMAGE))
def test_pcapng_damage(tmp_path: Path, case: str) -> None:
    damage, message = PCAPNG_DAMAGE[case]
    got, err = read_until_error(write(tmp_path, "d.pcapng", BASE + damage + EPB_OK))
    assert got == [(T, 1, b"first", 60)]
    assert err is not None and message in err.message
    # The offset names the damaged block (a new section's SHB is fine: the block after it is not).
    shift = len(shb(E)) if case.endswith("new-section") else 0
    assert err.offset == len(BASE) + shift


def test_pcapng_byte_order_may_change_between_sections(tmp_path: Path) -> None:
    raw = BASE + shb(">") + idb(Iface(linktype=101), ">") + epb(0, 5, b"\x45", 20, ">")
    got = plain(read_frames(write(tmp_path, "bo.pcapng", raw)))
    assert got == [(T, 1, b"first", 60), (5000, 101, b"\x45", 20)]


def test_simple_packet_block_obeys_the_snap_length(tmp_path: Path) -> None:
    raw = shb(E) + idb(Iface(snaplen=6), E) + spb(b"abcdef", 1514, E) + spb(b"xy", 2, E)
    got = plain(read_frames(write(tmp_path, "s.pcapng", raw)))
    assert got == [(0, 1, b"abcdef", 1514), (0, 1, b"xy", 2)]


# --- random input never raises anything but CaptureError ----------------------------------------

MAGICS = [b"", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a", b"\x1f\x8b"]


def _drain(data: bytes) -> list[Frame]:
    with stdin_of(data):
        got, _err = read_until_error("-")
    return got


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MAGICS), st.binary(max_size=400))
def test_random_bytes_only_raise_capture_error(magic: bytes, tail: bytes) -> None:
    for ts, lt, data, wire in _drain(magic + tail):
        assert isinstance(ts, int) and 0 <= lt <= 0xFFFF
        assert isinstance(data, bytes) and len(data) <= max(len(tail), 0)
        assert 0 <= wire <= 0xFFFFFFFF


SMALL = {name: FORMATS[name](sample_frames()[:4]).data for name in FORMATS}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SMALL)),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_damaged_files_only_raise_capture_error(name: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(SMALL[name])
    for at, value in edits:
        data[at % len(data)] = value
    for ts, _lt, frame, _wire in _drain(bytes(data)):
        assert isinstance(ts, int) and isinstance(frame, bytes)


# --- the real captures ---------------------------------------------------------------------------

REAL = sorted(p.name for p in CAPTURES.glob("*.pcap*"))


def tshark(path: str, *args: str) -> list[list[str]]:
    out = subprocess.run(
        ["tshark", "-n", "-r", path, "-T", "fields", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines()]


def epoch_text(ts_ns: int) -> str:
    sec, frac = divmod(ts_ns, NS)
    return f"{sec}.{frac:09d}"


def epoch_ns(text: str) -> int:
    """A decimal ``seconds.fraction`` string as integer nanoseconds, without floats."""
    sec, _, frac = text.partition(".")
    assert len(frac) <= 9 and sec.lstrip("-").isdigit()
    return int(sec) * NS + int(frac.ljust(9, "0"))


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1700000000.123456789", T),
        ("1700000000.123456", T - 789),
        ("1559207465.138576000", 1_559_207_465_138_576_000),
        ("0.000000001", 1),
        ("12", 12 * NS),
    ],
)
def test_epoch_parsing_is_exact(text: str, ns: int) -> None:
    assert epoch_ns(text) == ns
    assert epoch_ns(epoch_text(ns)) == ns


def test_the_shared_captures_are_there() -> None:
    assert len(REAL) >= 30  # no silent pass when the folder moved


@pytest.mark.parametrize("name", REAL)
def test_real_capture_matches_tshark(name: str) -> None:
    path = str(CAPTURES / name)
    got = plain(read_frames(path))
    info = subprocess.run(
        ["capinfos", "-c", "-M", path], capture_output=True, text=True, check=True
    ).stdout
    count = re.search(r"Number of packets:\s+(\d+)", info)
    assert count is not None and int(count.group(1)) == len(got)
    # Only frame fields are needed: skip dissection (the VNC dissector alone takes minutes).
    no_dissection = ["--disable-protocol", "eth", "--disable-protocol", "null"]
    fields = ["-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len"]
    rows = tshark(path, *no_dissection, *fields)
    assert len(rows) == len(got)
    assert got[0][0] == epoch_ns(rows[0][0]) and got[-1][0] == epoch_ns(rows[-1][0])
    assert [ts for ts, *_ in got] == [epoch_ns(r[0]) for r in rows]
    assert [(wire, len(data)) for _, _, data, wire in got] == [(int(r[1]), int(r[2])) for r in rows]


@pytest.mark.parametrize("name", ["anydesk-2022-ndpi.pcapng", "rdp-ndpi.pcap"])
def test_real_capture_gzipped_and_on_stdin(tmp_path: Path, name: str) -> None:
    raw = (CAPTURES / name).read_bytes()
    expected = plain(read_frames(str(CAPTURES / name)))
    packed = gzip.compress(raw)
    assert plain(read_frames(write(tmp_path, name + ".gz", packed))) == expected
    with stdin_of(packed, 1000):
        assert plain(read_frames("-")) == expected


def test_real_captures_through_read_many() -> None:
    names = ["bg-ndpi-dns.pcap", "rdp-ndpi.pcap", "anydesk-2022-ndpi.pcapng"]
    got = plain(read_many(str(CAPTURES / n) for n in names))
    assert got == [f for n in names for f in plain(read_frames(str(CAPTURES / n)))]
    assert len(got) == 5 + 20 + 113
    assert {lt for _, lt, _, _ in got} == {0, 1}
