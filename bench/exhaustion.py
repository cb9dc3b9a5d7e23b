"""Exhaustion: the sensor's memory under a SYN flood of distinct flows and on one huge TCP flow.

Three measurements, each in a child process of its own so its peak resident set size
(``os.wait4``) is its alone:

* **flood**: a classic pcap written record by record (never held in memory) holding a SYN
  flood of ``--flows`` distinct flows at ``--pps``, with the two AnyDesk sessions of
  ``anydesk-2022-ndpi.pcapng`` re-timed into its middle, read by ``rmm-sensor analyze`` with
  ``flows.max_flows`` at its default (131,072) and at ``--small-table``. Reported: peak RSS, the
  flows evicted (``rmm_sensor_flows_ended_total{reason="evicted"}``) and whether the AnyDesk
  sessions of the same frames without the flood are all still reported.
* **baseline**: the AnyDesk frames alone, for the RSS of a sensor that holds almost no flows.
* **big flow**: ``sensor.pipeline.Engine.run`` fed by a generator of one TCP flow of
  ``--big-frames`` segments of 1400 bytes (2.1 GB with the default), with an unknown protocol
  (inspection stops after 512 bytes) and as one HTTP upload (the client direction is followed
  through the whole body, to see a next request). Reported: RSS before and after, time.

Per flow, ``tracemalloc`` counts the bytes the flow table holds for each of ``--traced``
SYN-only flows (the engine alone, no eviction).

Run: ``.venv/bin/python bench/exhaustion.py`` (Markdown on stdout; about 2 minutes per million
flows). ``tests/robustness/test_exhaustion.py`` runs the same code on a smaller flood.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import ipaddress
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sensor.capture.files import Frame, frame, frame_bytes, read_frames
from sensor.flows.table import FlowSettings
from sensor.model import FlowRecord
from sensor.pipeline import Engine

REPO = Path(__file__).resolve().parents[1]
ANYDESK = REPO / ".." / "shared" / "captures" / "anydesk-2022-ndpi.pcapng"
NS = 1_000_000_000
EPOCH_NS = 1_700_000_000 * NS
DEFAULT_MAX_FLOWS = FlowSettings().max_flows
SEGMENT = 1400
HEADERS = 14 + 20 + 20  # Ethernet, IPv4, TCP without options
MAX_GAP_NS = 60 * NS  # longer silences in a source capture shrink to SHRUNK_GAP_NS
SHRUNK_GAP_NS = 5 * NS
FLOOD_SOURCE = int(ipaddress.IPv4Address("100.64.0.0"))  # 100.64.0.0/10: room for 4M sources
FLOOD_TARGET = ipaddress.IPv4Address("198.51.100.80").packed
PORTS_PER_SOURCE = 50_000
MACS = bytes.fromhex("3c22fb123456") + bytes.fromhex("00163e0a0b0c")
SENSOR_MAIN = "import sys; from sensor.cli import main; sys.exit(main())"
BIG_KINDS = ("unknown", "http-upload")

SessionKey = tuple[str, str, str, str, int]
Packet = tuple[int, int, bytes, int]  # (ts_ns, linktype, packet bytes, wire_len)

# --- frames ------------------------------------------------------------------------------------


def tcp_frame(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int, flags: int, payload: bytes = b""
) -> bytes:
    """Ethernet + IPv4 + TCP, padded to the 60-byte minimum (checksums zero: nothing checks)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 0x50, flags, 65535, 0, 0)
    frame = MACS + b"\x08\x00" + ip + tcp + payload
    return frame + bytes(60 - len(frame)) if len(frame) < 60 else frame


def syn_flood(flows: int, pps: int, start_ns: int = EPOCH_NS) -> Iterator[Packet]:
    """One SYN per flow, every flow distinct (source address and port), at ``pps``."""
    for i in range(flows):
        source, port = divmod(i, PORTS_PER_SOURCE)
        src = (FLOOD_SOURCE + source).to_bytes(4, "big")
        frame = tcp_frame(src, FLOOD_TARGET, 10_000 + port, 80, i * 7919, 0x02)
        yield start_ns + i * NS // pps, 1, frame, len(frame)


def as_frames(packets: Iterable[Packet]) -> Iterator[Frame]:
    """Packets as the engine reads them, one at a time."""
    for packet in packets:
        yield frame(*packet)


def retimed(frames: Sequence[Packet], start_ns: int) -> list[Packet]:
    """The frames from ``start_ns`` on, in their order, with long silences shortened."""
    out: list[Packet] = []
    now = start_ns
    for i, (ts, linktype, data, wire_len) in enumerate(frames):
        if i:
            gap = ts - frames[i - 1][0]
            now += SHRUNK_GAP_NS if gap > MAX_GAP_NS else max(gap, 0)
        out.append((now, linktype, data, wire_len))
    return out


def anydesk_frames(start_ns: int) -> list[Packet]:
    packets = [(f[0], f[1], frame_bytes(f), f[5]) for f in read_frames(str(ANYDESK))]
    return retimed(packets, start_ns)


def flood_with_anydesk(flows: int, pps: int) -> tuple[Iterator[Packet], list[Packet]]:
    """The flood with the AnyDesk frames in its middle, and those frames alone."""
    extra = anydesk_frames(EPOCH_NS)
    span = extra[-1][0] - extra[0][0]
    middle = EPOCH_NS + max(flows * NS // pps - span, 0) // 2
    extra = retimed(extra, middle)
    return heapq.merge(syn_flood(flows, pps), extra, key=lambda f: f[0]), extra


def write_pcap(path: Path, frames: Iterable[Packet]) -> int:
    """A classic pcap (Ethernet, microseconds), written as the frames come; returns the count."""
    n = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262_144, 1))
        pack = struct.Struct("<IIII").pack
        for ts, _linktype, data, wire_len in frames:
            sec, ns = divmod(ts, NS)
            fh.write(pack(sec, ns // 1000, len(data), wire_len))
            fh.write(data)
            n += 1
    return n


def big_flow(frames: int, kind: str, seq0: int = 0xFFFF0000) -> Iterator[Packet]:
    """One TCP connection whose client sends ``frames`` segments of 1400 bytes after the
    handshake; the sequence numbers wrap around 2**32 early on.

    ``unknown``: binary bytes. ``http-upload``: a POST whose body fills every segment but the
    last, which holds a second request (the engine must pass over the body to see it).
    """
    client = ipaddress.IPv4Address("10.1.0.5").packed
    server = ipaddress.IPv4Address("203.0.113.9").packed
    ts = EPOCH_NS
    yield ts, 1, tcp_frame(client, server, 40000, 443, seq0 - 1, 0x02), 60
    yield ts + 1000, 1, tcp_frame(server, client, 443, 40000, 7, 0x12), 60
    body = (bytes(range(256)) * (SEGMENT // 256 + 1))[:SEGMENT]
    first = last = body
    if kind == "http-upload":
        first = upload_head(frames)
        first += body[: SEGMENT - len(first)]
        last = last_segment()
    elif kind != "unknown":
        raise ValueError(f"unknown kind {kind!r}")
    # The segments between differ only in their sequence number: build the rest once.
    template = tcp_frame(client, server, 40000, 443, 0, 0x18, body)
    before, after = template[:38], template[42:]
    seq = seq0
    for i in range(frames):
        ts += 10_000
        if i == 0 or i == frames - 1:
            data = tcp_frame(client, server, 40000, 443, seq, 0x18, first if i == 0 else last)
        else:
            data = before + (seq & 0xFFFFFFFF).to_bytes(4, "big") + after
        yield ts, 1, data, len(data)
        seq += len(data) - HEADERS


def last_segment() -> bytes:
    """The upload's last segment: a second request, then empty lines (which HTTP allows)."""
    request = b"GET /done HTTP/1.1\r\nHost: files.example\r\n\r\n"
    return request + b"\r\n" * ((SEGMENT - len(request)) // 2)


def upload_head(frames: int) -> bytes:
    """The POST head whose Content-Length covers the segments up to the last one."""
    length = 0
    for _ in range(3):  # the number's own digits change the head's length
        head = b"POST /upload HTTP/1.1\r\nHost: files.example\r\nContent-Length: %d\r\n\r\n"
        head %= length
        length = (frames - 1) * SEGMENT - len(head)
    assert str(length).encode() in head
    return head


# --- measurements ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnalyzeRun:
    capture: str
    max_flows: int
    exit_code: int
    seconds: float
    max_rss_kib: int
    sessions: tuple[SessionKey, ...]
    metrics: dict[str, float]  # unlabelled samples plus flows_ended_<reason>

    @property
    def evicted(self) -> int:
        return int(self.metrics.get("flows_ended_evicted", 0))


def session_keys(lines: Iterable[str]) -> tuple[SessionKey, ...]:
    keys = set()
    for line in lines:
        event = json.loads(line)
        if event["event_type"] == "session":
            rmm = event["rmm"]
            keys.add(
                (rmm["tool"], rmm["channel"], event["src_ip"], event["dest_ip"], event["dest_port"])
            )
    return tuple(sorted(keys))


def read_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rmm_sensor_flows_ended_total":
                out[f"flows_ended_{sample.labels['reason']}"] = sample.value
            elif not sample.labels:
                out[sample.name] = sample.value
    return out


def analyze(capture: Path, max_flows: int | None, work: Path) -> AnalyzeRun:
    """`rmm-sensor analyze --format json` in a child process; its peak RSS from os.wait4.

    ``max_flows`` None runs without a configuration file: the default table size.
    """
    name = f"{capture.stem}-{max_flows or 'default'}"
    metrics = work / f"{name}.prom"
    out = work / f"{name}.jsonl"
    argv = [sys.executable, "-c", SENSOR_MAIN, "analyze", "--format", "json",
            "--metrics-out", str(metrics)]  # fmt: skip
    if max_flows is not None:
        config = work / f"{name}.yaml"
        config.write_text(f"flows:\n  max_flows: {max_flows}\n")
        argv += ["--config", str(config)]
    argv.append(str(capture))
    start = time.perf_counter()
    with open(out, "wb") as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if proc.returncode not in (0, 1):
            stderr.seek(0)
            raise RuntimeError(f"analyze exited {proc.returncode}: {stderr.read().decode()}")
    return AnalyzeRun(
        capture=capture.name,
        max_flows=DEFAULT_MAX_FLOWS if max_flows is None else max_flows,
        exit_code=proc.returncode,
        seconds=round(seconds, 1),
        max_rss_kib=usage.ru_maxrss,
        sessions=session_keys(out.read_text().splitlines()),
        metrics=read_metrics(metrics.read_text()),
    )


@dataclass(frozen=True, slots=True)
class BigFlowRun:
    kind: str
    frames: int
    payload_bytes: int
    seconds: float
    rss_before_kib: int
    rss_after_kib: int
    bytes_toserver: int
    pkts_toserver: int
    app_proto: str
    requests: int


def big_flow_child(kind: str, frames: int) -> BigFlowRun:
    """Run in the child: the engine on the generated flow, RSS before and after."""
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(), records.append)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    engine.run(as_frames(big_flow(frames, kind)))
    engine.flush()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (record,) = records
    http = record.http
    return BigFlowRun(kind, frames, frames * SEGMENT, round(seconds, 1), before, after,
                      record.bytes_toserver, record.pkts_toserver, record.app_proto,
                      len(http.requests) if http is not None else 0)  # fmt: skip


def big_flow_run(kind: str, frames: int) -> BigFlowRun:
    argv = [sys.executable, str(Path(__file__).resolve()), "big-flow", kind, str(frames)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO)
    return BigFlowRun(**json.loads(done.stdout))


def traced_bytes_per_flow(flows: int) -> float:
    """Bytes the engine holds per SYN-only flow, by tracemalloc (no eviction)."""
    engine = Engine(FlowSettings(max_flows=flows + 1), lambda _record: None)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        engine.run(as_frames(syn_flood(flows, 10_000)))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert engine.table.active == flows
    return held / flows


# --- the report --------------------------------------------------------------------------------


def markdown(
    baseline: AnalyzeRun,
    runs: Sequence[AnalyzeRun],
    reference: tuple[SessionKey, ...],
    big: Sequence[BigFlowRun],
    per_flow: float,
    flows: int,
) -> str:
    lines = [
        f"SYN flood of {flows:,} distinct flows with the AnyDesk sessions in its middle; "
        f"{os.cpu_count()} CPUs. Baseline (the AnyDesk frames alone): peak RSS "
        f"{baseline.max_rss_kib / 1024:.0f} MiB.",
        "",
        "| max_flows | peak RSS (MiB) | above baseline per table entry (bytes) | evicted "
        "| AnyDesk sessions found | time (s) |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for run in runs:
        entries = min(run.max_flows, flows)
        above = (run.max_rss_kib - baseline.max_rss_kib) * 1024 / entries
        found = set(reference) <= set(run.sessions)
        lines.append(
            f"| {run.max_flows:,} | {run.max_rss_kib / 1024:.0f} | {above:,.0f} "
            f"| {run.evicted:,} | {'all ' if found else 'NOT all '}{len(reference)} "
            f"| {run.seconds} |"
        )
    lines += [
        "",
        f"tracemalloc: {per_flow:,.0f} bytes held per SYN-only flow in the table.",
        "",
        "| one TCP flow | payload | peak RSS before / after (MiB) | app | time (s) |",
        "|---|---:|---:|---|---:|",
    ]
    for b in big:
        lines.append(
            f"| {b.kind} | {b.payload_bytes / 1e9:.2f} GB | {b.rss_before_kib / 1024:.0f} / "
            f"{b.rss_after_kib / 1024:.0f} | {b.app_proto} ({b.requests} requests) | {b.seconds} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    child = sub.add_parser("big-flow", help="(internal) one big-flow measurement, as JSON")
    child.add_argument("kind", choices=BIG_KINDS)
    child.add_argument("frames", type=int)
    p.add_argument("--flows", type=int, default=1_000_000, help="distinct flows in the flood")
    p.add_argument("--pps", type=int, default=5_000, help="flood rate in packet time")
    p.add_argument("--small-table", type=int, default=10_000, help="the small flows.max_flows")
    p.add_argument("--big-frames", type=int, default=1_500_000, help="segments of the big flow")
    p.add_argument("--traced", type=int, default=50_000, help="flows for the tracemalloc count")
    p.add_argument("--work", type=Path, help="directory for the capture (default: a temporary)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.command == "big-flow":
        print(json.dumps(asdict(big_flow_child(args.kind, args.frames))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        frames, extra = flood_with_anydesk(args.flows, args.pps)
        capture = work / "flood.pcap"
        alone = work / "anydesk-retimed.pcap"
        write_pcap(alone, extra)
        print(f"writing {capture}", file=sys.stderr, flush=True)
        write_pcap(capture, frames)
        baseline = analyze(alone, None, work)
        runs = []
        for max_flows in (None, args.small_table):
            print(f"analyze, max_flows {max_flows or 'default'}", file=sys.stderr, flush=True)
            runs.append(analyze(capture, max_flows, work))
        big = []
        for kind in BIG_KINDS:
            print(f"big flow: {kind}", file=sys.stderr, flush=True)
            big.append(big_flow_run(kind, args.big_frames))
        per_flow = traced_bytes_per_flow(args.traced)
    print(markdown(baseline, runs, baseline.sessions, big, per_flow, args.flows))
    if args.json:
        results = {
            "baseline": asdict(baseline),
            "runs": [asdict(r) for r in runs],
            "big": [asdict(b) for b in big],
            "traced_bytes_per_flow": per_flow,
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
