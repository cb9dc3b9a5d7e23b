"""Exhaustion: a SYN flood of distinct flows and one 2 GB TCP flow keep the sensor's memory
within its documented bounds, and the AnyDesk sessions inside the flood are still reported.

The flood (300,000 flows, written record by record to a pcap) is read by `rmm-sensor analyze`
in child processes, whose peak RSS comes from ``os.wait4``; ``bench/exhaustion.py`` runs the
same code on a million flows. Measured on the 2-CPU development machine (compiled build):
1,224 bytes per table entry by tracemalloc (a SYN-only flow), about 1,720 bytes of RSS per entry
above a sensor that holds no flows; 254 MiB peak with the default 131,072 entries, 56 MiB with
10,000; a million-flow flood read in 13.6 s.

Bound asserted: peak RSS <= baseline + entries x 2 KiB + 48 MiB (interpreter and allocator;
evicted flows are freed at once by reference counting), where entries is the table size or the
number of flows, whichever is smaller. The long flow's cost does not depend on its
length: inspection stops after the first 512 bytes of an unknown protocol, and an HTTP body is
passed over without being buffered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import exhaustion as bench
from sensor.flows.table import FlowSettings

FLOOD_FLOWS = 300_000  # more than the default table holds, so it evicts too
FLOOD_PPS = 3_000
SMALL_TABLE = 10_000
BYTES_PER_ENTRY = 2048
TRACED_BYTES_PER_ENTRY = 1536
SLACK_KIB = 48 * 1024
BIG_FRAMES = 1_500_000  # 2.1 GB of payload
BIG_FLOW_GROWTH_KIB = 4 * 1024
DEFAULT_TABLE = FlowSettings().max_flows


class Flood:
    """The flood capture, the AnyDesk frames alone, and the analyze runs over them (cached)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        frames, anydesk = bench.flood_with_anydesk(FLOOD_FLOWS, FLOOD_PPS)
        self.capture = work / "flood.pcap"
        self.alone = work / "anydesk-alone.pcap"
        self.anydesk_frames = bench.write_pcap(self.alone, anydesk)
        self.frames = bench.write_pcap(self.capture, frames)
        self.baseline = bench.analyze(self.alone, None, work)
        self._runs: dict[int | None, bench.AnalyzeRun] = {}

    def run(self, max_flows: int | None) -> bench.AnalyzeRun:
        if max_flows not in self._runs:
            self._runs[max_flows] = bench.analyze(self.capture, max_flows, self.work)
        return self._runs[max_flows]


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flood]:
    yield Flood(tmp_path_factory.mktemp("flood"))


def test_the_capture_holds_the_flood_and_both_anydesk_sessions(flood: Flood) -> None:
    assert flood.frames == FLOOD_FLOWS + flood.anydesk_frames
    assert flood.capture.stat().st_size == 24 + FLOOD_FLOWS * (16 + 60) + (
        flood.alone.stat().st_size - 24
    )
    tools = {(tool, channel) for tool, channel, *_ in flood.baseline.sessions}
    assert tools == {("anydesk", "dns"), ("anydesk", "direct"), ("anydesk", "relay")}


@pytest.mark.parametrize("max_flows", [None, SMALL_TABLE], ids=["default-table", "small-table"])
def test_flood_memory_stays_within_the_bound(flood: Flood, max_flows: int | None) -> None:
    run = flood.run(max_flows)
    entries = min(run.max_flows, FLOOD_FLOWS)
    bound = flood.baseline.max_rss_kib + entries * BYTES_PER_ENTRY // 1024 + SLACK_KIB
    assert run.max_rss_kib <= bound, (run.max_rss_kib, bound)


@pytest.mark.parametrize("max_flows", [None, SMALL_TABLE], ids=["default-table", "small-table"])
def test_flood_evictions_are_counted(flood: Flood, max_flows: int | None) -> None:
    run = flood.run(max_flows)
    table = run.max_flows
    m = run.metrics
    assert m["rmm_sensor_packets_total"] == flood.frames
    assert m["rmm_sensor_flows_total"] >= FLOOD_FLOWS
    created = m["rmm_sensor_flows_total"]
    ended = sum(v for k, v in m.items() if k.startswith("flows_ended_"))
    assert ended == created  # every flow ended, and was counted once
    assert m["flows_ended_end"] == table  # the flood kept the table full to the end
    # Every flow beyond the table's size pushed one out (a few AnyDesk flows closed instead).
    assert FLOOD_FLOWS - table <= run.evicted <= created - table


@pytest.mark.parametrize("max_flows", [None, SMALL_TABLE], ids=["default-table", "small-table"])
def test_anydesk_sessions_survive_the_flood(flood: Flood, max_flows: int | None) -> None:
    assert flood.run(max_flows).sessions == flood.baseline.sessions
    assert flood.run(max_flows).exit_code == flood.baseline.exit_code == 1


def test_a_small_table_bounds_memory_below_the_default(flood: Flood) -> None:
    default, small = flood.run(None), flood.run(SMALL_TABLE)
    grown_default = default.max_rss_kib - flood.baseline.max_rss_kib
    grown_small = small.max_rss_kib - flood.baseline.max_rss_kib
    # Upper bounds only: a process's peak RSS is not a reliable lower bound on a busy machine.
    assert grown_small * 1024 <= SMALL_TABLE * BYTES_PER_ENTRY + SLACK_KIB * 1024
    assert grown_default * 1024 <= DEFAULT_TABLE * BYTES_PER_ENTRY + SLACK_KIB * 1024
    assert small.evicted > default.evicted  # the small table pays in evictions, not memory


def test_bytes_per_table_entry() -> None:
    assert bench.traced_bytes_per_flow(20_000) <= TRACED_BYTES_PER_ENTRY


@pytest.mark.parametrize("kind", bench.BIG_KINDS)
def test_a_2gb_flow_costs_no_memory(kind: str) -> None:
    run = bench.big_flow_run(kind, BIG_FRAMES)
    assert run.payload_bytes >= 2_000_000_000
    assert run.rss_after_kib - run.rss_before_kib <= BIG_FLOW_GROWTH_KIB
    assert run.pkts_toserver == BIG_FRAMES + 1  # and the SYN
    last = len(bench.last_segment()) if kind == "http-upload" else bench.SEGMENT
    payload = (BIG_FRAMES - 1) * bench.SEGMENT + last
    assert run.bytes_toserver == 60 + BIG_FRAMES * bench.HEADERS + payload
    if kind == "unknown":
        assert (run.app_proto, run.requests) == ("unknown", 0)
    else:
        # The POST's body was passed over to the request after it, 2 GB later.
        assert (run.app_proto, run.requests) == ("http", 2)
