"""Damaged captures through `rmm-sensor analyze --format json`: every public and project capture,
cut short at sampled offsets, with flipped bits in record headers, absurd and zero record
lengths, a wrong magic, gzip-compressed, and as pcapng.

The promise (README, "Analyze captures"): no traceback, exit status 2, exactly one line
``rmm-sensor: error: FILE: offset N: what`` where N is the offset of the damaged record, and
everything read before the damage is still written, which is checked against a run on the
undamaged prefix. The record layout is walked here with ``struct``, independently of the reader.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import random
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sensor.commands.analyze as analyze_command
from sensor.capture.files import MAX_RECORD, read_frames
from sensor.cli import main
from sensor.signatures.index import SignatureIndex
from sensor.signatures.loader import load_index
from tests import capbuild

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "captures"
CAPTURES = sorted(
    [*(p for p in SHARED.iterdir() if ".pcap" in p.name), *(REPO / "pcaps").glob("*.pcap")],
    key=lambda p: (p.parent.name, p.name),
)
CAPTURE_IDS = [f"{p.parent.name}/{p.name}" for p in CAPTURES]
SAMPLED_CUTS = 20  # random cut offsets per file, besides the record boundaries near both ends
EDGE_RECORDS = 2  # records at each end whose boundaries are cut at
PCAP_HEADER, PCAP_RECORD_HEADER, BLOCK_HEADER = 24, 16, 12
ERROR_LINE = re.compile(r"^rmm-sensor: error: (?P<path>.+): offset (?P<offset>\d+): (?P<what>.+)$")
SENSOR_MAIN = "import sys; from sensor.cli import main; sys.exit(main())"


# --- where the records are ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    start: int
    end: int
    kind: int  # pcapng block type; -1 for a classic pcap record
    endian: str


@dataclass(frozen=True, slots=True)
class Layout:
    pcapng: bool
    blocks: tuple[Block, ...]  # every record or block after the pcap file header

    @property
    def header(self) -> int:
        """Bytes of a record's or block's own header (the length field is inside it)."""
        return BLOCK_HEADER if self.pcapng else PCAP_RECORD_HEADER

    def packets(self) -> list[Block]:
        return [b for b in self.blocks if b.kind in (-1, 2, 3, 6)]

    def at(self, offset: int) -> Block:
        """The record or block that byte ``offset`` belongs to."""
        return next(b for b in self.blocks if b.start <= offset < b.end)

    def boundaries(self) -> set[int]:
        return {b.start for b in self.blocks} | {b.end for b in self.blocks}


def layout(data: bytes) -> Layout:
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        blocks = []
        pos, endian = 0, "<"
        while pos < len(data):
            if data[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":
                endian = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            kind, length = struct.unpack_from(endian + "II", data, pos)
            blocks.append(Block(pos, pos + length, kind, endian))
            pos += length
        return Layout(True, tuple(blocks))
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    records = []
    pos = PCAP_HEADER
    while pos < len(data):
        (incl,) = struct.unpack_from(endian + "I", data, pos + 8)
        records.append(Block(pos, pos + PCAP_RECORD_HEADER + incl, -1, endian))
        pos += PCAP_RECORD_HEADER + incl
    return Layout(False, tuple(records))


def test_the_layout_walk_agrees_with_the_reader() -> None:
    for path in CAPTURES:
        data = path.read_bytes()
        lay = layout(data)
        assert lay.blocks[-1].end == len(data), path
        assert len(lay.packets()) == sum(1 for _ in read_frames(str(path))), path


# --- damage ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Damage:
    what: str
    data: bytes
    offset: int | None  # where the error must be reported; None: the file reads without one
    message: str  # pattern of the text after "offset N: "
    intact: int  # the run writes what a run on data[:intact] writes; -1: the undamaged file


def put_u32(data: bytes, at: int, endian: str, value: int) -> bytes:
    return data[:at] + struct.pack(endian + "I", value) + data[at + 4 :]


def flip(data: bytes, at: int, endian: str, bit: int) -> bytes:
    (value,) = struct.unpack_from(endian + "I", data, at)
    return put_u32(data, at, endian, value ^ (1 << bit))


def cut(data: bytes, lay: Layout, t: int) -> Damage:
    """The file ends at byte ``t``, inside a record or block."""
    if t < 4:
        return Damage(
            f"cut at {t}", data[:t], 0, "file is empty or shorter than a capture header", 0
        )
    if not lay.pcapng and t < PCAP_HEADER:
        return Damage(f"cut at {t}", data[:t], 0, "truncated pcap file header", 0)
    b = lay.at(t)
    if lay.pcapng:
        what = "block header" if t - b.start < BLOCK_HEADER else "block"
        message = f"truncated {what} at end of file"
    else:
        message = f"truncated record: {t - b.start} bytes at end of file"
    return Damage(f"cut at {t}", data[:t], b.start, re.escape(message), b.start)


def cut_offsets(data: bytes, lay: Layout, name: str) -> list[int]:
    """Sampled offsets plus each side of the headers of the first and last records."""
    rng = random.Random(name)
    offsets = {rng.randrange(1, len(data)) for _ in range(SAMPLED_CUTS)}
    edge = [*lay.blocks[:EDGE_RECORDS], *lay.blocks[-EDGE_RECORDS:]]
    for b in edge:
        offsets |= {b.start + 1, b.start + lay.header - 1, b.start + lay.header + 1, b.end - 1}
    offsets |= {1, 3, 5} if lay.pcapng else {1, 3, 5, PCAP_HEADER - 1}
    return sorted(o for o in offsets - lay.boundaries() if 0 < o < len(data))


def header_flips(data: bytes, lay: Layout) -> Iterator[Damage]:
    """Bits flipped in the length fields of the first, a middle and the last packet record."""
    packets = lay.packets()
    chosen = [packets[0], packets[len(packets) // 2], packets[-1]]
    for i, b in enumerate(chosen):
        if lay.pcapng:
            # Any bit of the block length: implausible, past the end, or the trailer disagrees.
            for bit in (0, 1, 2 + i, 9 + i, 25 + i):
                yield Damage(
                    f"block length bit {bit} at {b.start}",
                    flip(data, b.start + 4, b.endian, bit),
                    b.start,
                    "block length \\d+ is not plausible|block trailer length differs from header"
                    "|truncated block at end of file",
                    b.start,
                )
            yield Damage(
                f"trailer bit {i} at {b.start}",
                flip(data, b.end - 4, b.endian, i),
                b.start,
                "block trailer length differs from header",
                b.start,
            )
            if b.kind == 6:
                yield Damage(
                    f"captured length bit 21 at {b.start}",
                    flip(data, b.start + 20, b.endian, 21),
                    b.start,
                    "captured length \\d+ exceeds its block",
                    b.start,
                )
        else:
            bit = 21 + 3 * i  # above MAX_RECORD, whatever the record's own length
            yield Damage(
                f"incl_len bit {bit} at {b.start}",
                flip(data, b.start + 8, b.endian, bit),
                b.start,
                "record length \\d+ is not plausible",
                b.start,
            )


def absurd_lengths(data: bytes, lay: Layout) -> Iterator[Damage]:
    b = lay.packets()[len(lay.packets()) // 2]
    if lay.pcapng:
        for value in (0, 8, 13, 0xFFFFFFFC, (1 << 24) + 4):
            yield Damage(
                f"block length {value} at {b.start}",
                put_u32(data, b.start + 4, b.endian, value),
                b.start,
                f"block length {value} is not plausible",
                b.start,
            )
    else:
        for value in (MAX_RECORD + 1, 0x7FFFFFFF, 0xFFFFFFFF):
            yield Damage(
                f"incl_len {value} at {b.start}",
                put_u32(data, b.start + 8, b.endian, value),
                b.start,
                f"record length {value} is not plausible",
                b.start,
            )


def zero_length_records(data: bytes, lay: Layout) -> Damage:
    """Empty records (legal: a snap length of 0) after the first and a middle packet: the
    output must not change."""
    packets = lay.packets()
    if lay.pcapng:
        packets = [b for b in packets if b.kind == 6]
    out = data
    for b in sorted({packets[0], packets[len(packets) // 2]}, key=lambda b: -b.start):
        e = b.endian
        if lay.pcapng:
            iface, hi, lo = struct.unpack_from(e + "III", data, b.start + 8)
            body = struct.pack(e + "IIIII", iface, hi, lo, 0, 60)
            empty = struct.pack(e + "II", 6, 12 + len(body)) + body + struct.pack(e + "I", 32)
        else:
            sec, frac = struct.unpack_from(e + "II", data, b.start)
            empty = struct.pack(e + "IIII", sec, frac, 0, 60)
        out = out[: b.end] + empty + out[b.end :]
    return Damage("zero-length records", out, None, "", -1)


WRONG_MAGIC = Damage("wrong magic", b"", 0, "not a pcap or pcapng file \\(magic deadbeef\\)", 0)


# --- running the sensor in process -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str


Analyze = Callable[..., Run]


@pytest.fixture(scope="module")
def index() -> SignatureIndex:
    return load_index()


@pytest.fixture
def analyze(
    index: SignatureIndex,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Analyze]:
    """``analyze(path)``: `rmm-sensor analyze --format json --flows PATH` in this process (the
    signatures loaded once), with the checks every run must pass."""
    monkeypatch.setattr(analyze_command, "load_index", lambda _directory=None: index)

    def run(*paths: Path) -> Run:
        caplog.clear()
        code = main(["analyze", "--format", "json", "--flows", *map(str, paths)])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        for line in out.splitlines():
            assert isinstance(json.loads(line), dict)
        if code == 2:
            assert len(err.splitlines()) == 1, err
            assert ERROR_LINE.match(err.rstrip("\n")), err
        else:
            assert code in (0, 1)
            assert err == ""
        return Run(code, out, err)

    yield run


class Checker:
    """Runs damaged files and the undamaged prefixes they must agree with."""

    def __init__(self, analyze: Analyze, tmp: Path, data: bytes, suffix: str) -> None:
        self.analyze = analyze
        self.tmp = tmp
        self.data = data
        self.suffix = suffix
        self._prefixes: dict[int, str] = {}

    def run(self, data: bytes, name: str = "damaged") -> tuple[Path, Run]:
        path = self.tmp / f"{name}{self.suffix}"
        path.write_bytes(data)
        return path, self.analyze(path)

    def prefix_output(self, intact: int) -> str:
        if intact not in self._prefixes:
            if intact == 0:
                self._prefixes[intact] = ""  # nothing was read: nothing may be written
            else:
                data = self.data if intact < 0 else self.data[:intact]
                _, run = self.run(data, "prefix")
                assert run.code in (0, 1), f"the undamaged prefix of {intact} bytes failed"
                self._prefixes[intact] = run.out
        return self._prefixes[intact]

    def check(self, damage: Damage, compress: bool = False) -> Run:
        data = gzip.compress(damage.data, mtime=0) if compress else damage.data
        path, run = self.run(data)
        where = f"{damage.what}{' (gzip)' if compress else ''}"
        if damage.offset is None:
            assert run.code in (0, 1), f"{where}: {run.err}"
        else:
            assert run.code == 2, where
            found = ERROR_LINE.match(run.err.rstrip("\n"))
            assert found is not None
            assert found["path"] == str(path)
            assert int(found["offset"]) == damage.offset, f"{where}: {run.err}"
            assert re.fullmatch(damage.message, found["what"]), f"{where}: {run.err}"
        assert run.out == self.prefix_output(damage.intact), where
        return run


def checker(analyze: Analyze, tmp_path: Path, path: Path) -> tuple[Checker, Layout]:
    data = path.read_bytes()
    suffix = ".pcapng" if data[:4] == b"\x0a\x0d\x0d\x0a" else ".pcap"
    return Checker(analyze, tmp_path, data, suffix), layout(data)


# --- every capture -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", CAPTURES, ids=CAPTURE_IDS)
def test_cut_short(analyze: Analyze, tmp_path: Path, path: Path) -> None:
    c, lay = checker(analyze, tmp_path, path)
    for t in cut_offsets(c.data, lay, path.name):
        c.check(cut(c.data, lay, t))
    # Cut exactly between records, the file is whole: no error, and the same as that prefix.
    for b in (lay.blocks[0], lay.blocks[-1]):
        c.check(Damage(f"cut at {b.end}", c.data[: b.end], None, "", b.end))


@pytest.mark.parametrize("path", CAPTURES, ids=CAPTURE_IDS)
def test_record_header_damage(analyze: Analyze, tmp_path: Path, path: Path) -> None:
    c, lay = checker(analyze, tmp_path, path)
    for damage in [*header_flips(c.data, lay), *absurd_lengths(c.data, lay)]:
        c.check(damage)
    c.check(zero_length_records(c.data, lay))
    c.check(dataclasses.replace(WRONG_MAGIC, data=b"\xde\xad\xbe\xef" + c.data[4:]))


@pytest.mark.parametrize("path", CAPTURES, ids=CAPTURE_IDS)
def test_timestamp_bits_and_swapped_magic_never_escape(
    analyze: Analyze, tmp_path: Path, path: Path
) -> None:
    """Damage the reader cannot see (timestamps) or that garbles the rest: any outcome but
    a traceback or a second error line (the fixture checks those)."""
    c, lay = checker(analyze, tmp_path, path)
    b = lay.packets()[len(lay.packets()) // 2]
    ts_at = b.start + 16 if lay.pcapng and b.kind == 6 else b.start
    for bit in (3, 31):
        _, run = c.run(flip(c.data, ts_at, b.endian, bit))
        assert run.code in (0, 1)
    other = b"\xd4\xc3\xb2\xa1" if lay.pcapng else b"\x0a\x0d\x0d\x0a"
    c.run(other + c.data[4:])


@pytest.mark.parametrize("path", CAPTURES, ids=CAPTURE_IDS)
def test_gzip_compressed_damage(analyze: Analyze, tmp_path: Path, path: Path) -> None:
    c, lay = checker(analyze, tmp_path, path)
    c.suffix += ".gz"
    # Damage inside the capture: offsets count bytes of the decompressed stream.
    middle = lay.packets()[len(lay.packets()) // 2]
    c.check(cut(c.data, lay, middle.start + lay.header + 1), compress=True)
    c.check(next(absurd_lengths(c.data, lay)), compress=True)
    # Damage to the gzip stream itself: a cut ends the data where decompression ends.
    packed = gzip.compress(c.data, mtime=0)
    for fraction in (3, 2):
        cut_at = len(packed) * (fraction - 1) // fraction
        available = len(zlib.decompressobj(wbits=31).decompress(packed[:cut_at]))
        assert available > PCAP_HEADER + PCAP_RECORD_HEADER  # past the file header
        last_whole = max((b.end for b in lay.blocks if b.end <= available), default=0)
        _, run = c.run(packed[:cut_at])
        assert run.code == 2
        found = ERROR_LINE.match(run.err.rstrip("\n"))
        assert found is not None
        assert int(found["offset"]) == available
        assert found["what"].startswith("read failed: Compressed file ended")
        assert run.out == c.prefix_output(last_whole)
    # A flipped byte inside the deflate data: an error, never a traceback.
    middle_byte = len(packed) // 2
    broken = packed[:middle_byte] + bytes((packed[middle_byte] ^ 0x55,)) + packed[middle_byte + 1 :]
    _, run = c.run(broken)
    assert run.code == 2


# --- pcapng built from a project capture: sections, interfaces, every packet block --------------


def demo_as_pcapng(big_endian: bool) -> bytes:
    frames = capbuild.plain(read_frames(str(REPO / "pcaps" / "demo-mixed.pcap")))
    return capbuild.mixed_pcapng(frames, big_endian=big_endian).data


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcapng_with_every_block_kind(analyze: Analyze, tmp_path: Path, big_endian: bool) -> None:
    data = demo_as_pcapng(big_endian)
    lay = layout(data)
    assert {b.kind for b in lay.blocks} >= {0x0A0D0D0A, 1, 2, 3, 4, 5, 6}
    c = Checker(analyze, tmp_path, data, ".pcapng")
    # Whole, it shows the sessions of the classic pcap it came from (the block kinds without a
    # timestamp of their own shift some packet times, so the records themselves differ).
    original = analyze(REPO / "pcaps" / "demo-mixed.pcap")
    assert session_keys(c.prefix_output(-1)) == session_keys(original.out)
    second_shb = [b for b in lay.blocks if b.kind == 0x0A0D0D0A][1]
    for b in lay.blocks:
        if b.kind in (2, 3, 6) or b.start == second_shb.start:
            c.check(cut(data, lay, b.start + BLOCK_HEADER + 2))
    for damage in [*header_flips(data, lay), *absurd_lengths(data, lay)]:
        c.check(damage)
        c.check(damage, compress=True)
    # A packet block naming an interface the section does not have.
    epb = next(b for b in lay.blocks if b.kind == 6)
    c.check(
        Damage(
            "unknown interface",
            put_u32(data, epb.start + 8, epb.endian, 9),
            epb.start,
            "packet names unknown interface 9",
            epb.start,
        )
    )


def test_big_endian_nanosecond_pcap(analyze: Analyze, tmp_path: Path) -> None:
    frames = capbuild.plain(read_frames(str(REPO / "pcaps" / "demo-mixed.pcap")))
    data = capbuild.pcap(frames, big_endian=True, nanos=True).data
    lay = layout(data)
    c = Checker(analyze, tmp_path, data, ".pcap")
    assert c.prefix_output(-1) == analyze(REPO / "pcaps" / "demo-mixed.pcap").out
    for t in cut_offsets(data, lay, "demo-be-ns"):
        c.check(cut(data, lay, t))
    for damage in [*header_flips(data, lay), *absurd_lengths(data, lay)]:
        c.check(damage)


# --- several files, and a real process ---------------------------------------------------------


def session_keys(out: str) -> set[tuple[str, str, str, str, int]]:
    rows = [json.loads(line) for line in out.splitlines()]
    return {
        (r["rmm"]["tool"], r["rmm"]["channel"], r["src_ip"], r["dest_ip"], r["dest_port"])
        for r in rows
        if r["event_type"] == "session"
    }


def test_the_files_after_a_damaged_one_are_still_read(analyze: Analyze, tmp_path: Path) -> None:
    anydesk = SHARED / "anydesk-2022-ndpi.pcapng"
    c, lay = checker(analyze, tmp_path, anydesk)
    damage = cut(c.data, lay, lay.packets()[-10].start + 30)
    damaged = tmp_path / "damaged.pcapng"
    damaged.write_bytes(damage.data)
    demo = REPO / "pcaps" / "demo-mixed.pcap"
    both = analyze(damaged, demo)
    assert both.code == 2
    assert both.err.startswith(f"rmm-sensor: error: {damaged}: offset {damage.offset}: ")
    before = session_keys(c.prefix_output(damage.intact))
    after = session_keys(analyze(demo).out)
    assert before and after
    assert session_keys(both.out) >= before | after


SUBPROCESS_CASES = {
    "cut": lambda data, lay: cut(data, lay, lay.packets()[5].start + 20),
    "absurd": lambda data, lay: next(absurd_lengths(data, lay)),
    "flip": lambda data, lay: next(header_flips(data, lay)),
    "magic": lambda data, lay: Damage("", b"\xde\xad\xbe\xef" + data[4:], 0, "", 0),
}


@pytest.mark.parametrize("name", ["bg-ndpi-chrome.pcap", "anydesk-2022-ndpi.pcapng"])
@pytest.mark.parametrize("case", sorted(SUBPROCESS_CASES))
def test_a_real_process_writes_one_error_line(tmp_path: Path, name: str, case: str) -> None:
    data = (SHARED / name).read_bytes()
    damage = SUBPROCESS_CASES[case](data, layout(data))
    path = tmp_path / f"damaged-{name}"
    path.write_bytes(damage.data)
    argv = [sys.executable, "-c", SENSOR_MAIN, "analyze", "--format", "json", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"rmm-sensor: error: {path}: offset {damage.offset}: ")
    for line in done.stdout.splitlines():
        json.loads(line)
