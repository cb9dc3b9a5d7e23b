"""The shard sieve drops only packets whose absence the engine cannot notice.

A worker that reads with its sieve must end with exactly what it ends with when it reads every
frame: the same flow records, sessions and counters. Checked on real captures, on the project's
own, and on generated frames built to sit on every edge of the sieve's conditions (TCP header
lengths, IPv4 options and fragments, DNS responses, time running backwards, out-of-order
timestamps at the end of the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.analysis import Detection
from sensor.capture.files import read_frames
from sensor.config import Settings
from sensor.fingerprints import ENRICHERS
from sensor.fingerprints.detector import Detector
from sensor.signatures.loader import load_index
from tests.capbuild import CAPTURES, NS, addr, ethernet, ipv4, pcap, tcp, udp

ROOT = Path(__file__).resolve().parents[2]
INDEX = load_index(None)

REAL = [
    CAPTURES / "anydesk-2022-ndpi.pcapng",
    CAPTURES / "bg-ndpi-dns.pcap",
    CAPTURES / "bg-zeek-workshop_2011_browse.pcap",
    CAPTURES / "teamviewer-ndpi.pcap",
    CAPTURES / "bench-background-concat.pcap",
    ROOT / "pcaps" / "incident-2023.pcap",
    ROOT / "pcaps" / "demo-mixed.pcap",
]


class Spy:
    """The detector, with a record of the DNS answers it was given (every shard needs all)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.answers: list[tuple[int, bytes, Any]] = []

    def dns_answer(self, ts_ns: int, client: bytes, message: Any) -> None:
        self.answers.append((ts_ns, client, message))
        self.detector.dns_answer(ts_ns, client, message)

    def detect(self, record: Any) -> Any:
        return self.detector.detect(record)


def run(path: Path, shard: tuple[int, int], sieve: bool) -> tuple[Any, ...]:
    """One worker over one file: everything it would report, and how many frames it read."""
    config = Settings()
    detector = Spy(Detector(INDEX, ENRICHERS, internal_networks=config.policy.internal_networks))
    flows: list[Any] = []
    sessions: list[Any] = []
    ticks: list[int] = []
    detection = Detection(
        config.flows, detector, sessions.append, on_flow=flows.append, shard=shard
    )
    detection.on_tick = ticks.append
    frames = 0

    def counted(source: Any) -> Any:
        nonlocal frames
        for frame in source:
            frames += 1
            yield frame

    detection.run(counted(read_frames(str(path), detection.engine.sieve if sieve else None)))
    detection.finish()
    return flows, sessions, ticks, detector.answers, detection.snapshot(), frames


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
@pytest.mark.parametrize("shard", [(0, 2), (1, 2), (2, 3)])
def test_sieve_changes_nothing_a_worker_reports(path: Path, shard: tuple[int, int]) -> None:
    *sieved, read_sieved = run(path, shard, sieve=True)
    *full, read_full = run(path, shard, sieve=False)
    assert sieved == full
    assert read_sieved <= read_full


def test_every_shard_reads_every_dns_answer() -> None:
    path = CAPTURES / "bg-ndpi-dns.pcap"
    answers = [run(path, (i, 3), sieve=True)[3] for i in range(3)]
    assert answers[0] and answers[0] == answers[1] == answers[2]


def test_sieve_drops_most_of_another_shards_packets() -> None:
    # Without this, a sieve that never drops would pass every other test here.
    path = CAPTURES / "bench-background-concat.pcap"
    *_, owned_a, read_a = run(path, (0, 2), sieve=True)
    *_, owned_b, read_b = run(path, (1, 2), sieve=True)
    *_, total = run(path, (0, 1), sieve=False)
    assert owned_a.packets + owned_b.packets == total
    # Each worker reads its own packets, and only the other shard's it may not drop.
    assert owned_a.packets <= read_a and owned_b.packets <= read_b
    assert read_a + read_b < 1.25 * total


HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.1.7", "192.168.5.9"]


@st.composite
def frames(draw: st.DrawFn) -> tuple[int, int, bytes, int]:
    """An Ethernet frame near the edges of the engine's inline decode."""
    src, dst = draw(st.permutations(HOSTS))[:2]
    proto = draw(st.sampled_from([6, 17, 1, 47]))
    payload = draw(st.sampled_from([b"", b"x" * 30, b"\x16\x03\x01\x00\x05hello"]))
    if proto == 6:
        doff = draw(st.sampled_from([None, 4, 5, 8, 15]))
        flags = draw(st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x04]))
        l4 = tcp(draw(st.sampled_from([53, 443, 40000])), 443, payload, flags=flags, doff=doff)
    elif proto == 17:
        sport = draw(st.sampled_from([53, 5353, 40000]))
        # A response: "a" is 10.0.1.7.
        dns = (
            b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01"
            b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + addr("10.0.1.7")
        )
        l4 = udp(sport, draw(st.sampled_from([53, 40000])), dns if sport == 53 else payload)
    else:
        l4 = payload
    options = draw(st.sampled_from([b"", b"\x01\x01\x01\x00"]))
    frag = draw(st.sampled_from([0x4000, 0x2000, 0x0001]))
    total = draw(st.sampled_from([None, 20, 41, 60, 1500]))
    ip = ipv4(src, dst, proto, l4, options=options, frag=frag, total=total)
    data = ethernet(0x0800, ip)[: draw(st.sampled_from([None, 20, 40, 53, 54, 60]))]
    # Quarter seconds over 100 s, and now and then 5,000 s later: the frames come in any order,
    # so time also jumps back further than any flow can idle.
    ts = draw(st.integers(0, 400)) * NS // 4 + draw(st.sampled_from([0, 0, 0, 5000 * NS]))
    return ts, 1, data, len(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), min_size=1, max_size=40), st.sampled_from([(0, 2), (1, 2), (1, 3)]))
def test_sieve_on_generated_frames(
    tmp_path_factory: pytest.TempPathFactory,
    generated: list[tuple[int, int, bytes, int]],
    shard: tuple[int, int],
) -> None:
    path = tmp_path_factory.mktemp("sieve") / "frames.pcap"
    path.write_bytes(pcap(generated).data)
    *sieved, _ = run(path, shard, sieve=True)
    *full, _ = run(path, shard, sieve=False)
    assert sieved == full


def test_last_packet_time_counts_a_dropped_last_packet(tmp_path: Path) -> None:
    # The file ends with another shard's packet, stamped earlier than the one before it: the
    # worker's "last packet seen" is still the file's last packet, as with one worker.
    def frame(src: str, dst: str, ts: int) -> tuple[int, int, bytes, int]:
        data = ethernet(0x0800, ipv4(src, dst, 6, tcp(40000, 443, flags=0x10)))
        return ts, 1, data, len(data)

    own = frame("10.0.0.1", "10.0.0.1", 100 * NS)  # XOR of equal addresses: shard 0
    other = frame("10.0.0.1", "10.0.0.2", 99 * NS)  # 0x01 ^ 0x02: shard 1 of 2
    path = tmp_path / "tail.pcap"
    path.write_bytes(pcap([own, own, other]).data)
    *_, snap, read = run(path, (0, 2), sieve=True)
    assert read == 2
    assert snap.last_packet_ns == 99 * NS
