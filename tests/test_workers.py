"""`analyze --workers N` gives the output of one worker, whichever worker runs ahead.

The capture is built so that the order of events matters: a VNC session's first connection
closes, a second one starts 5 s later but runs on (it is reported only at the end of the
capture), and other traffic carries packet time far past the joining gap. One worker ends the
first session at the tick after the gap, before the second connection is reported; workers that
merely delivered in arrival order would join the two.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "captures"
T0 = 1_709_283_600.0  # 2024-03-01T09:00:00Z
BANNER = b"RFB 003.008\n"


def vnc_connection(client: str, server: str, sport: int, t0: float, close: bool) -> list[Packet]:
    c2s = Ether() / IP(src=client, dst=server)
    s2c = Ether() / IP(src=server, dst=client)
    steps: list[tuple[Packet, float]] = [
        (c2s / TCP(sport=sport, dport=5900, flags="S", seq=100), 0.0),
        (s2c / TCP(sport=5900, dport=sport, flags="SA", seq=500, ack=101), 0.01),
        (c2s / TCP(sport=sport, dport=5900, flags="A", seq=101, ack=501), 0.02),
        (s2c / TCP(sport=5900, dport=sport, flags="PA", seq=501, ack=101) / Raw(BANNER), 0.03),
        (c2s / TCP(sport=sport, dport=5900, flags="PA", seq=101, ack=513) / Raw(BANNER), 0.04),
    ]
    for i in range(20):  # a few seconds of screen updates
        pkt = s2c / TCP(sport=5900, dport=sport, flags="PA", seq=513 + i * 100, ack=113)
        steps.append((pkt / Raw(b"\x00" * 100), 0.1 + i * 0.25))
    if close:
        seq = 513 + 20 * 100
        steps.append((c2s / TCP(sport=sport, dport=5900, flags="FA", seq=113, ack=seq), 5.5))
        steps.append((s2c / TCP(sport=5900, dport=sport, flags="FA", seq=seq, ack=114), 5.51))
    packets = []
    for pkt, dt in steps:
        pkt.time = t0 + dt
        packets.append(pkt)
    return packets


def chatter(t0: float, seconds: int) -> list[Packet]:
    """Other hosts' traffic, once a second: it moves packet time on. Pings and ARP among it:
    packets that no shard owns are counted once, whatever the number of workers."""
    packets = []
    for i in range(seconds):
        pkt = Ether() / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=40000, dport=9999)
        pkt = pkt / Raw(b"x")
        pkt.time = t0 + i
        packets.append(pkt)
        if i % 10 == 0:
            ping = Ether() / IP(src=f"10.9.1.{i % 250}", dst="10.9.0.2") / ICMP()
            ping.time = t0 + i + 0.5
            arp = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.9.0.1", pdst="10.9.0.2")
            arp.time = t0 + i + 0.6
            packets += [ping, arp]
    return packets


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    packets = [
        # Two pairs of hosts, so that with two workers each worker has a session of its own.
        *vnc_connection("10.1.0.5", "192.0.2.10", 50001, T0, close=True),
        *vnc_connection("10.1.0.5", "192.0.2.10", 50002, T0 + 11, close=False),
        *vnc_connection("10.1.0.6", "192.0.2.11", 50003, T0 + 1, close=True),
        *vnc_connection("10.1.0.6", "192.0.2.11", 50004, T0 + 12, close=False),
        *chatter(T0, 400),
    ]
    packets.sort(key=lambda p: float(p.time))
    path = tmp_path_factory.mktemp("workers") / "vnc-reconnect.pcap"
    wrpcap(str(path), packets)
    return path


def analyze(
    workers: int, *captures: Path, metrics: Path | None = None, signatures: Path | None = None
) -> list[dict[str, Any]]:
    extra = ["--metrics-out", str(metrics)] if metrics else []
    extra += ["--signatures", str(signatures)] if signatures else []
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from sensor.cli import main; sys.exit(main())",
         "analyze", "--format", "json", "--workers", str(workers), *extra, *map(str, captures)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def samples(metrics: Path) -> list[str]:
    """Every sample but the worker count: packets, bytes, errors, flows, sessions, alerts."""
    lines = metrics.read_text(encoding="utf-8").splitlines()
    return sorted(x for x in lines if not x.startswith(("#", "rmm_sensor_workers ")))


def comparable(events: list[dict[str, Any]]) -> list[str]:
    """Events without their numbering, sorted: session and alert ids count in arrival order,
    and flow ids are unique per worker (worker i of n numbers i+1, i+1+n, ...)."""
    out = []
    for original in events:
        event = dict(original)
        event.pop("session_id", None)
        event.pop("flow_id", None)
        if "rmm" in event:
            event["rmm"] = {k: v for k, v in event["rmm"].items() if k != "flow_ids"}
        if "alert" in event:
            event["alert"] = {k: v for k, v in event["alert"].items() if k != "alert_id"}
        out.append(json.dumps(event, sort_keys=True))
    return sorted(out)


def test_one_worker_splits_a_session_whose_second_connection_is_reported_late(
    capture: Path,
) -> None:
    sessions = [e for e in analyze(1, capture) if e["event_type"] == "session"]
    spans = sorted((e["src_ip"], e["src_port"]) for e in sessions)
    assert spans == [("10.1.0.5", 50001), ("10.1.0.5", 50002),
                     ("10.1.0.6", 50003), ("10.1.0.6", 50004)]  # fmt: skip


@pytest.mark.parametrize("workers", [2, 3])
def test_several_workers_give_the_same_output_as_one(
    capture: Path, workers: int, tmp_path: Path
) -> None:
    one = comparable(analyze(1, capture, metrics=tmp_path / "one.prom"))
    assert comparable(analyze(workers, capture, metrics=tmp_path / "n.prom")) == one
    one_samples = samples(tmp_path / "one.prom")
    assert 'rmm_sensor_other_protocol_packets_total{protocol="icmp"} 40.0' in one_samples
    assert "rmm_sensor_non_ip_packets_total 40.0" in one_samples
    assert samples(tmp_path / "n.prom") == one_samples


def test_several_workers_on_real_captures(tmp_path: Path) -> None:
    captures = [
        SHARED / "anydesk-2022-ndpi.pcapng",
        SHARED / "bg-ndpi-1kxun.pcap",
        ROOT / "pcaps" / "incident-2023.pcap",
        ROOT / "pcaps" / "demo-mixed.pcap",
        SHARED / "bg-ndpi-dns.pcap",
    ]
    one = comparable(analyze(1, *captures, metrics=tmp_path / "one.prom"))
    assert sum('"event_type": "session"' in e for e in one) >= 5
    assert comparable(analyze(2, *captures, metrics=tmp_path / "two.prom")) == one
    # Each shard counts the packets it owns, shard 0 those nobody owns: the sums are exact.
    one_samples = samples(tmp_path / "one.prom")
    assert any(x.startswith("rmm_sensor_packets_total ") for x in one_samples)
    assert samples(tmp_path / "two.prom") == one_samples


def test_workers_use_the_signatures_given_on_the_command_line(tmp_path: Path) -> None:
    # Only AnyDesk's file: the ScreenConnect sessions of the sample must go unnamed in every
    # worker, as they do with one.
    (tmp_path / "sigs").mkdir()
    shutil.copy(ROOT / "signatures" / "anydesk.yaml", tmp_path / "sigs")
    capture = ROOT / "pcaps" / "demo-mixed.pcap"
    tools = {e["rmm"]["tool"] for e in analyze(1, capture) if "rmm" in e}
    assert {"anydesk", "screenconnect"} <= tools
    for workers in (1, 2):
        events = analyze(workers, capture, signatures=tmp_path / "sigs")
        assert {e["rmm"]["tool"] for e in events if "rmm" in e} == {"anydesk"}


def test_damaged_capture_reports_once_and_keeps_what_was_read(tmp_path: Path) -> None:
    # The default table on a buffered stdout (as in a pipe): workers are forked, so anything
    # left in the parent's buffers would come out once per worker.
    whole = (ROOT / "pcaps" / "demo-mixed.pcap").read_bytes()
    damaged = tmp_path / "cut.pcap"
    damaged.write_bytes(whole[: len(whole) // 2])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    runs = []
    for workers in (1, 2):
        runs.append(subprocess.run(
            [sys.executable, "-c", "import sys; from sensor.cli import main; sys.exit(main())",
             "analyze", "--workers", str(workers), str(damaged)],
            capture_output=True, text=True, timeout=300, check=False, env=env,
        ))  # fmt: skip
    for run in runs:
        assert run.returncode == 2
        lines = run.stderr.splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith(f"rmm-sensor: error: {damaged}: offset ")
    assert runs[0].stderr == runs[1].stderr
    assert "Remote-access sessions (" in runs[0].stdout
    assert runs[1].stdout == runs[0].stdout
