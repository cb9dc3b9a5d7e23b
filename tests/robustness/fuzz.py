"""Fuzzing: many random and mutated inputs through every parser, the capture readers, the tool
decoders, the YAML loaders and the whole offline pipeline.

Run with ``make fuzz`` or ``.venv/bin/python -m tests.robustness.fuzz [--seconds 300]``; pytest
does not collect this file. Each target is a hypothesis test run in batches until its share of
the time is up. Inputs are random bytes, and mutations (bit flips, byte values, insertions,
deletions, cuts, duplications, splices, 16/32-bit length fields) of real inputs taken from the
public captures and ``pcaps/``: TCP streams, UDP payloads, certificates, whole capture files,
windows of frames, configuration and signature files.

A target fails when a parser raises anything but its documented error, when the engine's
isolation point catches an exception (``internal_error``), or when an output is not valid JSON
or a table shows a raw control character. Prints the inputs tried per target and exits 1 if
any target failed (the failing input is printed, shrunk).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import traceback
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning

from sensor.analysis import Detection, Sessions, Verdicts
from sensor.capture import formats
from sensor.capture.files import CaptureError, read_frames
from sensor.config import PolicySettings, load_settings
from sensor.decode.inet import PROTO_TCP, PROTO_UDP, decode_transport
from sensor.decode.link import ETH_IPV4, ETH_IPV6, DecodeError, network_offset
from sensor.fingerprints import DECODERS, ENRICHERS
from sensor.fingerprints.detector import Detector
from sensor.flows.table import FlowSettings
from sensor.output.sinks import JsonLinesSink, TableSink
from sensor.protocols import dns, http, tls
from sensor.protocols.errors import ParseError
from sensor.protocols.ja4 import ja4
from sensor.protocols.x509 import CertSummary, summarize_certificate
from sensor.sessions import SessionBuilder
from sensor.signatures.index import Decoded, SignatureIndex
from sensor.signatures.loader import load_index
from sensor.signatures.schema import load_tool_file
from sensor.text import escape
from sensor.yamlsource import SourceError, load_yaml
from tests import capbuild
from tests.capbuild import Frame, framed, plain
from tests.robustness.test_properties import enrich_records, record

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "captures"
MAX_STREAM = 16_384
MAX_FRAMES_PER_CAPTURE = 3000
MAX_CAPTURE_FILE = 256 * 1024
BATCH = 500
MAX_LINE = 2000  # characters of each line of a failure report (inputs can be large)
LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276)
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)
# Packet times a pcapng file can carry (64-bit timestamps, 64-bit interface offsets in seconds):
# windows of frames are moved by one of these, most often by nothing.
_S = 1_000_000_000
TIME_SHIFTS = (0, 0, 0, (1 << 62) * _S, -(1 << 62) * _S, 253_402_300_800 * _S, -62_135_596_801 * _S)
UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


# --- the corpus --------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Real inputs, taken apart once with the sensor's own reader and decoders."""

    frames: list[list[Frame]] = field(default_factory=list)  # per capture, in order
    files: list[bytes] = field(default_factory=list)  # whole (small) capture files
    streams: list[bytes] = field(default_factory=list)  # TCP payload per direction, in order
    datagrams: list[bytes] = field(default_factory=list)  # distinct UDP payloads
    dns: list[bytes] = field(default_factory=list)
    certificates: list[bytes] = field(default_factory=list)
    yaml: list[str] = field(default_factory=list)

    def pick(self, what: str) -> list[bytes]:
        return getattr(self, what) or [b""]


def captures() -> list[Path]:
    return sorted(p for p in SHARED.iterdir() if ".pcap" in p.name) + sorted(
        (REPO / "pcaps").glob("*.pcap")
    )


def build_corpus() -> Corpus:
    corpus = Corpus()
    datagrams: dict[bytes, None] = {}
    for path in captures():
        data = path.read_bytes()
        if len(data) <= MAX_CAPTURE_FILE:
            corpus.files.append(data)
        frames = plain(read_frames(str(path)))[:MAX_FRAMES_PER_CAPTURE]
        corpus.frames.append(frames)
        streams: dict[bytes, bytearray] = {}
        for _ts, linktype, frame, _wire in frames:
            try:
                off, ethertype = network_offset(linktype, frame)
                if ethertype not in (ETH_IPV4, ETH_IPV6):
                    continue
                proto, key, l4, start, end, _cut = decode_transport(frame, off, ethertype)
            except DecodeError:
                continue
            payload = frame[start:end]
            if not payload:
                continue
            if proto == PROTO_TCP:
                buf = streams.setdefault(key, bytearray())
                buf += payload[: MAX_STREAM - len(buf)]
            elif proto == PROTO_UDP:
                datagrams.setdefault(payload)
                if 53 in (frame[l4] << 8 | frame[l4 + 1], frame[l4 + 2] << 8 | frame[l4 + 3]):
                    corpus.dns.append(payload)
        corpus.streams += [bytes(s) for s in streams.values()]
    corpus.datagrams = list(datagrams)[:4000]
    for stream in corpus.streams:
        with contextlib.suppress(ParseError):
            parsed = tls.parse_tls_stream(stream)
            if parsed is not None:
                corpus.certificates += parsed.certificates
    corpus.certificates = list(dict.fromkeys(corpus.certificates))
    sample = capbuild.sample_frames()
    corpus.files += [
        capbuild.mixed_pcapng(sample).data,
        capbuild.mixed_pcapng(sample, big_endian=True).data,
        capbuild.gzipped(capbuild.pcap(sample, nanos=True, big_endian=True)).data,
    ]
    corpus.yaml = [(REPO / "deploy" / "rmm-sensor.yaml").read_text()] + [
        p.read_text() for p in sorted((REPO / "signatures").glob("*.yaml"))
    ]
    return corpus


# --- mutations ---------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, samples: Sequence[bytes], max_ops: int = 8) -> bytes:
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.integers(0, 8))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:  # flip a bit
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:  # an interesting byte
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x0D, 0x0A, 0x2E, 0x5C]))
        elif op == 2:  # insert bytes
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 3:  # delete bytes
            del data[at : at + draw(st.integers(1, 32))]
        elif op == 4:  # cut short
            del data[at:]
        elif op == 5:  # repeat a piece
            piece = data[at : at + draw(st.integers(1, 64))]
            data[at:at] = piece * draw(st.integers(1, 4))
        elif op == 6:  # splice in a piece of another sample
            other = draw(st.sampled_from(samples))
            start = draw(st.integers(0, max(len(other) - 1, 0)))
            data[at:at] = other[start : start + draw(st.integers(1, 256))]
        elif op in (7, 8) and len(data) >= at + 4:  # a length field gone wrong
            size = 2 if op == 7 else 4
            value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * size)) - 1)
            big = draw(st.booleans())
            data[at : at + size] = value.to_bytes(size, "big" if big else "little")
    return bytes(data)


def inputs(corpus: Corpus, what: str, max_size: int = 2048) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size) | mutated(corpus.pick(what))


# --- targets -----------------------------------------------------------------------------------


def only(error: type[Exception], call: Callable[[], object]) -> object:
    """The call's result, or None when it raised its documented error (anything else escapes)."""
    try:
        return call()
    except error:
        return None


def check_tls(data: bytes) -> None:
    result = only(ParseError, lambda: tls.parse_tls_stream(data))
    assert result is None or isinstance(result, tls.TlsStream)
    if isinstance(result, tls.TlsStream) and result.client_hello is not None:
        assert isinstance(ja4(result.client_hello), str)
        assert all(isinstance(c, bytes) for c in result.certificates)


def check_http(data: bytes) -> None:
    request = only(ParseError, lambda: http.parse_http_request(data))
    assert request is None or isinstance(request, http.HttpRequest)
    response = only(ParseError, lambda: http.parse_http_response(data))
    assert response is None or isinstance(response, http.HttpResponse)
    requests = only(ParseError, lambda: http.parse_http_requests(data))
    assert requests is None or isinstance(requests, tuple)


def check_dns(data: bytes) -> None:
    message = only(ParseError, lambda: dns.parse_dns(data))
    assert message is None or isinstance(message, dns.DnsMessage)
    framed = len(data).to_bytes(2, "big") + data
    messages = only(ParseError, lambda: dns.parse_dns_tcp(framed))
    assert messages is None or isinstance(messages, tuple)
    only(ParseError, lambda: dns.parse_dns_tcp(data))


def check_x509(der: bytes) -> None:
    summary = summarize_certificate(der)
    assert isinstance(summary, CertSummary)
    assert len(summary.sha256) == 64


def check_decode(case: tuple[int, bytes]) -> None:
    linktype, frame = case
    try:
        off, ethertype = network_offset(linktype, frame)
        if ethertype in (ETH_IPV4, ETH_IPV6):
            proto, key, l4, start, end, _cut = decode_transport(frame, off, ethertype)
            assert 0 <= l4 <= start <= end <= len(frame)
            # Only TCP and UDP have ports, so a key; 12 bytes for IPv4, 36 for IPv6.
            assert len(key) in ((12, 36) if proto in (PROTO_TCP, PROTO_UDP) else (0,))
    except DecodeError:
        pass


def check_reader(data: bytes) -> None:
    stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(data)))
    try:
        for ts, linktype, buf, at, caplen, wire_len in read_frames("-"):
            assert isinstance(ts, int) and isinstance(buf, bytes)
            assert at >= 0 and caplen >= 0 and at + caplen <= len(buf)
            assert 0 <= linktype <= 0xFFFF and wire_len >= 0
    except CaptureError as exc:
        assert exc.offset >= 0
    finally:
        sys.stdin = stdin


def check_decoders(head: bytes) -> None:
    rec = record(client_head=head, client_first_size=len(head))
    for decode in DECODERS.values():
        result = decode(rec)
        assert result is None or isinstance(result, Decoded)


def check_enrichers(rec: Any) -> None:
    for enrich in ENRICHERS.values():
        assert isinstance(enrich(rec), Decoded)


def check_yaml(text: str) -> None:
    for load in (load_yaml, load_settings, load_tool_file):
        with contextlib.suppress(SourceError):
            load("fuzz.yaml", text)


def check_escape(case: tuple[str, int | None]) -> None:
    text, max_len = case
    out = escape(text, max_len=max_len)
    assert max_len is None or len(out) <= max_len
    assert not [c for c in out if unicodedata.category(c) in UNSAFE and c not in "\u200c\u200d"]


class Pipeline:
    """The offline pipeline of ``rmm-sensor analyze``, wired as its single-process run is."""

    def __init__(self, index: SignatureIndex) -> None:
        self.index = index

    def __call__(self, frames: list[Frame]) -> None:
        out, table = io.StringIO(), io.StringIO()
        verdicts = Verdicts(PolicySettings(), [JsonLinesSink(out, True), TableSink(table, True)])
        sessions = Sessions(SessionBuilder(), verdicts)
        detection = Detection(
            FlowSettings(max_flows=64),
            Detector(self.index, ENRICHERS),
            sessions.add,
            on_flow=verdicts.flow,
            on_tick=sessions.tick,
            on_exploit=verdicts.exploit,
        )
        detection.run(framed(frames))
        detection.finish()
        sessions.finish()
        errors = dict(detection.engine.stats.decode_errors)
        assert "internal_error" not in errors, errors
        for line in out.getvalue().splitlines():
            json.loads(line)
        text = table.getvalue()
        assert not [c for c in text if c != "\n" and unicodedata.category(c) in UNSAFE]


class ShardSieve:
    """A worker of two reads the frames with its sieve and without: the same results."""

    def __init__(self, index: SignatureIndex) -> None:
        self.index = index

    def __call__(self, frames: list[Frame]) -> None:
        for shard in ((0, 2), (1, 2)):
            assert self.run(frames, shard, True) == self.run(frames, shard, False)

    def run(self, frames: list[Frame], shard: tuple[int, int], sieve: bool) -> tuple[Any, ...]:
        flows: list[Any] = []
        sessions: list[Any] = []
        detection = Detection(
            FlowSettings(max_flows=64),
            Detector(self.index, ENRICHERS),
            sessions.append,
            on_flow=flows.append,
            shard=shard,
        )
        engine = detection.engine

        def sieved() -> Iterator[formats.Frame]:
            # As the capture reader asks, record by record, after the engine's previous packet.
            for frame in framed(frames):
                ts, linktype, buf, at, caplen, _wire = frame
                if engine.sieve is None or not engine.sieve.drops(linktype, buf, at, caplen, ts):
                    yield frame

        detection.run(sieved() if sieve else framed(frames))
        detection.finish()
        return flows, sessions, detection.snapshot()


@st.composite
def frame_windows(draw: st.DrawFn, corpus: Corpus) -> list[Frame]:
    """A run of consecutive real frames, some of them mutated, shuffled or repeated."""
    frames = draw(st.sampled_from([f for f in corpus.frames if f]))
    start = draw(st.integers(0, len(frames) - 1))
    window = list(frames[start : start + draw(st.integers(1, 48))])
    datas = [f[2] for f in window]
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(window) - 1))
        ts, linktype, data, wire = window[i]
        kind = draw(st.integers(0, 3))
        if kind == 0:
            window[i] = (ts, linktype, draw(mutated(datas, 4)), wire)
        elif kind == 1:
            window.insert(i, window[i])  # a duplicate (retransmission)
        elif kind == 2 and i:
            window[i - 1], window[i] = window[i], window[i - 1]  # reordered
        else:
            window[i] = (ts, draw(st.sampled_from(LINKTYPES)), data, wire)
    shift = draw(st.sampled_from(TIME_SHIFTS))
    return [(ts + shift, linktype, data, wire) for ts, linktype, data, wire in window]


RANDOM_FRAMES = st.lists(
    st.tuples(
        st.integers(0, 2**40).map(lambda s: s * 1000),
        st.sampled_from(LINKTYPES),
        st.binary(max_size=200),
        st.integers(0, 70000),
    ),
    max_size=20,
)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


def targets(corpus: Corpus, index: SignatureIndex) -> list[Target]:
    heads = corpus.streams + corpus.datagrams
    return [
        Target("tls", inputs(corpus, "streams", 4096), check_tls),
        Target("http", inputs(corpus, "streams", 4096), check_http),
        Target("dns", inputs(corpus, "dns", 600), check_dns),
        Target("x509", inputs(corpus, "certificates", 2048), check_x509),
        Target(
            "link+ip",
            st.tuples(st.sampled_from(LINKTYPES) | st.integers(0, 300), inputs(corpus, "files")),
            check_decode,
        ),
        Target("capture-reader", inputs(corpus, "files", 4096), check_reader),
        Target("tool-decoders", st.binary(max_size=600) | mutated(heads), check_decoders),
        Target("tool-enrichers", enrich_records(), check_enrichers),
        Target(
            "yaml",
            st.text(max_size=400)
            | mutated([t.encode() for t in corpus.yaml]).map(
                lambda b: b.decode("utf-8", "replace")
            ),
            check_yaml,
        ),
        Target("escape", st.tuples(st.text(), st.none() | st.integers(0, 80)), check_escape),
        Target("engine", frame_windows(corpus) | RANDOM_FRAMES, Pipeline(index)),
        Target("shard-sieve", frame_windows(corpus) | RANDOM_FRAMES, ShardSieve(index)),
    ]


# --- running -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    tried: int
    seconds: float
    failure: str | None


def fuzz(target: Target, seconds: float) -> Outcome:
    tried = 0

    @settings(
        max_examples=BATCH,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink),
        print_blob=True,
    )
    @given(target.strategy)
    def one(value: Any) -> None:
        nonlocal tried
        tried += 1
        target.check(value)

    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            one()
        except Exception:  # any failure of the target: report it, go on with the others
            report = "\n".join(line[:MAX_LINE] for line in traceback.format_exc().splitlines())
            return Outcome(target.name, tried, time.monotonic() - start, report)
    return Outcome(target.name, tried, time.monotonic() - start, None)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=300, help="total time, shared by the targets")
    p.add_argument("--only", action="append", default=[], metavar="TARGET", help="repeatable")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=HypothesisWarning)  # "overly large repr"
    started = time.monotonic()
    corpus = build_corpus()
    chosen = [t for t in targets(corpus, load_index()) if not args.only or t.name in args.only]
    print(
        f"corpus: {sum(map(len, corpus.frames)):,} frames, {len(corpus.files)} files, "
        f"{len(corpus.streams):,} TCP streams, {len(corpus.datagrams):,} UDP payloads, "
        f"{len(corpus.certificates)} certificates ({time.monotonic() - started:.0f} s)",
        flush=True,
    )
    share = args.seconds / max(len(chosen), 1)
    outcomes = []
    for target in chosen:
        outcome = fuzz(target, share)
        outcomes.append(outcome)
        state = "ok" if outcome.failure is None else "FAILED"
        rate = outcome.tried / max(outcome.seconds, 1e-9)
        print(f"{outcome.name:<15} {outcome.tried:>10,} inputs  {rate:>8,.0f}/s  {state}",
              flush=True)  # fmt: skip
        if outcome.failure is not None:
            print(outcome.failure, flush=True)
    total = sum(o.tried for o in outcomes)
    print(f"{'total':<15} {total:>10,} inputs in {time.monotonic() - started:.0f} s")
    return 1 if any(o.failure for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
