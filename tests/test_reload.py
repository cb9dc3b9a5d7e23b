"""Configuration reloads: unit tests of the watcher, then a running `rmm-sensor analyze -` fed a
pcap stream through a pipe while its configuration file changes underneath it.

The process is driven deterministically. A session is judged when it is emitted, which happens
on a tick (once per second of packet time) once its flow has been idle for the UDP timeout and
the session for the session gap; so each round sends one AnyDesk discovery datagram, then a
"clock" datagram 500 s of packet time later, and waits for the session on stdout. The watcher
runs on the same ticks: after SIGHUP the next packet a second or more later reloads; after a
bare file change the watcher needs its 2 s wall-clock poll interval to pass first.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from prometheus_client import CollectorRegistry

from sensor.capture.files import read_frames
from sensor.config import Settings, load_settings
from sensor.metrics import Metrics
from sensor.reload import ConfigWatcher
from tests.capbuild import plain

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
T0_S = 1_709_283_600  # 2024-03-01T09:00:00Z
WAIT_S = 15.0  # generous bound on any single wait for the process
POLL_WAIT_S = 2.5  # longer than the watcher's 2 s file poll interval

EMPTY = "sanctioned: []\n"
HELPDESK = """\
sanctioned:
  - name: Helpdesk AnyDesk
    tool: anydesk
    clients: [10.20.0.0/16]
"""
ALLOWED_REASON = "sanctioned by entry 'Helpdesk AnyDesk'"
DENIED_REASON = "no sanctioned entry for tool anydesk"

# Broken files (each otherwise an empty allowlist): name, text, line, key path of the error.
BROKEN = [
    ("bad YAML", "sanctioned: []\npolicy:\n  allowed_tools: []\n bad: 1\n", 4, "invalid YAML"),
    ("unknown top-level key", "sanctionned: []\n", 1, "sanctionned"),
    ("unknown key in a section", "policy:\n  alowed_tools: [anydesk]\n", 2,
     "policy.alowed_tools"),
    ("unknown key in an entry",
     "sanctioned:\n  - name: A\n    tool: anydesk\n    client: [10.20.0.0/16]\n", 4,
     "sanctioned[0].client"),
    ("wrong type", "policy:\n  condense_window_s: hourly\n", 2, "policy.condense_window_s"),
    ("bad CIDR", "sanctioned:\n  - name: A\n    tool: anydesk\n    clients: [10.20.0.0/33]\n",
     4, "sanctioned[0].clients[0]"),
    ("bad wildcard",
     "sanctioned:\n  - name: A\n    tool: anydesk\n    hosts: ['relay-*.net.anydesk.com']\n", 4,
     "sanctioned[0].hosts[0]"),
    ("bad port", "sanctioned:\n  - name: A\n    tool: anydesk\n    ports: [70700]\n", 4,
     "sanctioned[0].ports[0]"),
    ("duplicate entry name",
     "sanctioned:\n  - name: A\n    tool: anydesk\n    ports: [1]\n  - name: A\n"
     "    tool: anydesk\n    ports: [2]\n", 5, "sanctioned[1].name"),
    ("bad expires date",
     "sanctioned:\n  - name: A\n    tool: anydesk\n    expires: 2024-02-30\n", 4,
     "sanctioned[0].expires"),
    ("bad hex key",
     "sanctioned:\n  - name: A\n    tool: anydesk\n    client_certs: [not-a-sha1]\n", 4,
     "sanctioned[0].client_certs[0]"),
    ("negative number", "policy:\n  max_alerts_per_minute: -1\n", 2,
     "policy.max_alerts_per_minute"),
    ("allowed and forbidden overlap",
     "policy:\n  allowed_tools: [rustdesk]\n  forbidden_tools: [anydesk, rustdesk]\n", 3,
     "policy.forbidden_tools"),
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Packets: Ethernet / IPv4 / UDP with correct checksums, and the AnyDesk discovery layout (§2.5).


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def udp_frame(
    src: str, dst: str, sport: int, dport: int, payload: bytes, ip_id: int = 0, ttl: int = 128
) -> bytes:
    s, d = _ip4(src), _ip4(dst)
    udp_len = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ip_id, 0x4000, ttl, 17, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return _mac(d) + _mac(s) + b"\x08\x00" + ip + udp


def _mac(ip: bytes) -> bytes:
    if ip[0] >= 224:  # IPv4 multicast: 01:00:5e and the low 23 bits of the group
        return b"\x01\x00\x5e" + bytes((ip[1] & 0x7F, ip[2], ip[3]))
    return b"\x02\x0a" + ip[1:2] + b"\x00" + ip[2:4]  # 02:0a:14:00:<x>:<y> for 10.20.x.y


def _lv(text: bytes) -> bytes:
    return struct.pack("!I", len(text)) + text


def discovery_payload(anydesk_id: int, hostname: bytes, user: bytes) -> bytes:
    return (
        b"\x3e\xd1\x01"
        + struct.pack("!I", anydesk_id)
        + bytes(4)
        + b"\x02\x01"  # OS code 1
        + _lv(hostname)
        + _lv(user)
        + bytes(4)
        + _lv(b"ad")
        + b"\x00"
        + _lv(b"main")
        + b"\x02\xc3\x51"
    )


def discovery(
    client: str,
    anydesk_id: int = 123456789,
    ip_id: int = 0x3100,
    hostname: bytes = b"FRONTDESK-PC",
    user: bytes = b"alice",
) -> bytes:
    payload = discovery_payload(anydesk_id, hostname, user)
    return udp_frame(client, "239.255.102.18", 50001, 50001, payload, ip_id, ttl=1)


def clock() -> bytes:
    """A datagram no signature knows: it only moves packet time on."""
    return udp_frame("10.20.0.41", "10.20.5.10", 41000, 9, b"tick")


PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262_144, 1)


def pcap_record(at_s: float, frame: bytes) -> bytes:
    us = round(at_s * 1_000_000)
    sec, frac = divmod(us, 1_000_000)
    return struct.pack("<IIII", T0_S + sec, frac, len(frame), len(frame)) + frame


def test_packet_builder_matches_the_project_capture() -> None:
    frames = plain(read_frames(str(REPO / "pcaps" / "ad-discovery.pcap")))
    assert frames[0] == (T0_S * NS, 1, discovery("10.20.0.31"), 102)
    lab = discovery("10.20.0.32", 987654321, 0x3200, b"LAB-01", b"bob")
    assert frames[2] == (T0_S * NS + 7_250_000_000, 1, lab, 94)


# --------------------------------------------------------------------------------------------
# ConfigWatcher on its own


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "rmm-sensor.yaml"
    path.write_text(EMPTY, encoding="utf-8")
    return path


def _watcher(path: Path, poll_s: float = 0.0) -> tuple[ConfigWatcher, list[Settings], Metrics]:
    applied: list[Settings] = []
    metrics = Metrics(CollectorRegistry())
    watcher = ConfigWatcher(str(path), load_settings(str(path)), applied.append, metrics, poll_s)
    return watcher, applied, metrics


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _reloads(metrics: Metrics) -> tuple[float | None, float | None, float | None]:
    return (
        _sample(metrics, "rmm_sensor_config_reloads_total", result="success"),
        _sample(metrics, "rmm_sensor_config_reloads_total", result="failure"),
        _sample(metrics, "rmm_sensor_config_last_reload_successful"),
    )


def test_unchanged_file_is_not_reloaded(config_file: Path) -> None:
    watcher, applied, metrics = _watcher(config_file)
    assert not watcher.check()
    assert not watcher.check()
    assert applied == []
    assert _reloads(metrics) == (0.0, 0.0, 1.0)
    stamp = _sample(metrics, "rmm_sensor_config_last_reload_success_timestamp_seconds")
    assert stamp is not None
    assert abs(stamp - time.time()) < 60


def test_request_reloads_an_unchanged_file(config_file: Path) -> None:
    watcher, applied, metrics = _watcher(config_file, poll_s=3600)
    watcher.request()
    assert watcher.check()
    assert applied == [load_settings(str(config_file))]
    assert not watcher.requested
    assert not watcher.check()  # one request, one reload
    assert _reloads(metrics) == (1.0, 0.0, 1.0)


def test_changed_file_is_reloaded_on_the_next_poll(config_file: Path) -> None:
    watcher, applied, metrics = _watcher(config_file)
    config_file.write_text(HELPDESK, encoding="utf-8")
    assert watcher.check()
    assert [s.policy.sanctioned[0].name for s in applied] == ["Helpdesk AnyDesk"]
    assert watcher.settings is applied[0]
    assert not watcher.check()
    assert _reloads(metrics) == (1.0, 0.0, 1.0)


def test_file_is_not_polled_before_the_interval(config_file: Path) -> None:
    watcher, applied, _ = _watcher(config_file, poll_s=3600)
    config_file.write_text(HELPDESK, encoding="utf-8")
    assert not watcher.check()
    assert applied == []
    watcher.request()  # SIGHUP does not wait for the poll
    assert watcher.check()
    assert len(applied) == 1


@pytest.mark.parametrize(
    ("text", "line", "key"), [pytest.param(*case[1:], id=case[0]) for case in BROKEN]
)
def test_broken_file_keeps_the_last_good_settings(
    config_file: Path, caplog: pytest.LogCaptureFixture, text: str, line: int, key: str
) -> None:
    config_file.write_text(HELPDESK, encoding="utf-8")
    watcher, applied, metrics = _watcher(config_file)
    good = watcher.settings
    config_file.write_text(text, encoding="utf-8")
    assert not watcher.check()
    assert watcher.settings is good
    assert applied == []
    assert watcher.failures == 1
    assert _reloads(metrics) == (0.0, 1.0, 0.0)
    [record] = [r for r in caplog.records if r.name == "sensor.reload"]
    assert record.levelname == "ERROR"
    assert record.getMessage().startswith(
        f"configuration not reloaded, keeping the last good one: {config_file}:{line}: {key}: "
    )
    # The same broken file is not retried on every poll ...
    assert not watcher.check()
    assert watcher.failures == 1
    # ... and fixing it recovers.
    config_file.write_text(EMPTY + "# fixed\n", encoding="utf-8")
    assert watcher.check()
    assert applied[0].policy.sanctioned == ()
    assert _reloads(metrics) == (1.0, 1.0, 1.0)


def test_deleted_file_keeps_the_last_good_settings(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, applied, metrics = _watcher(config_file)
    config_file.unlink()
    assert not watcher.check()
    assert applied == []
    assert _reloads(metrics) == (0.0, 1.0, 0.0)
    assert f"{config_file}:0: No such file or directory" in caplog.text


# --------------------------------------------------------------------------------------------
# A running process


class Sensor:
    """`rmm-sensor analyze --format json --config CFG -` fed through a pipe."""

    def __init__(self, config: Path, metrics_out: Path) -> None:
        self.config = config
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # see each JSON line as it is written
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sensor.cli", "analyze", "--format", "json",
             "--config", str(config), "--metrics-out", str(metrics_out), "-"],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin.buffer
        self.stdin.write(PCAP_HEADER)
        self.stdin.flush()
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        self.alerts: list[dict[str, object]] = []
        self.late_sessions: list[dict[str, object]] = []
        self.readers = [
            threading.Thread(target=_pump, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=_pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def send(self, at_s: float, frame: bytes) -> None:
        self.stdin.write(pcap_record(at_s, frame))
        self.stdin.flush()

    def next_session(self) -> dict[str, object]:
        """The next session record on stdout (alerts before it go to ``alerts``)."""
        while True:
            record = json.loads(self._get(self.stdout, "a session record"))
            if record["event_type"] == "session":
                return dict(record)
            self.alerts.append(record)

    def stderr_line(self, start: str) -> str:
        while True:
            line = self._get(self.stderr, f"a stderr line starting {start!r}")
            self.err_lines.append(line)
            if line.startswith(start):
                return line

    def sighup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def finish(self) -> int:
        """Close stdin, wait for the exit; sort what was still unread into ``alerts`` and
        ``late_sessions``."""
        self.stdin.close()
        code = self.proc.wait(WAIT_S)
        self._close_pipes()
        for line in _drain(self.stderr):
            self.err_lines.append(line.rstrip("\n"))
        for line in _drain(self.stdout):
            record = json.loads(line)
            if record["event_type"] == "alert":
                self.alerts.append(record)
            else:
                self.late_sessions.append(record)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT_S)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for reader in self.readers:
            reader.join(WAIT_S)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def _get(self, q: queue.Queue[str], what: str) -> str:
        try:
            line = q.get(timeout=WAIT_S)
        except queue.Empty:
            pytest.fail(f"no {what} within {WAIT_S} s; stderr so far: {self.err_lines}")
        if line == "":
            pytest.fail(f"output ended before {what}; stderr: {self.err_lines}")
        return line.rstrip("\n")


def _drain(q: queue.Queue[str]) -> list[str]:
    """Lines already read (the readers have ended), without the end marker."""
    lines = []
    while not q.empty():
        line = q.get_nowait()
        if line:
            lines.append(line)
    return lines


def _pump(stream: IO[str] | None, sink: queue.Queue[str]) -> None:
    assert stream is not None
    for line in iter(stream.readline, ""):
        sink.put(line)
    sink.put("")  # end of output


@pytest.fixture
def start_sensor(tmp_path: Path) -> Iterator[Callable[[str], Sensor]]:
    started: list[Sensor] = []

    def start(config_text: str) -> Sensor:
        config = tmp_path / "rmm-sensor.yaml"
        config.write_text(config_text, encoding="utf-8")
        sensor = Sensor(config, tmp_path / "metrics.prom")
        started.append(sensor)
        return sensor

    yield start
    for sensor in started:
        sensor.kill()


def session_round(sensor: Sensor, base_s: float, client: str) -> dict[str, object]:
    """A discovery datagram at ``base_s``; the clock 500 s later makes the sensor emit it."""
    sensor.send(base_s, discovery(client))
    return finish_round(sensor, base_s)


def finish_round(sensor: Sensor, base_s: float) -> dict[str, object]:
    sensor.send(base_s + 500, clock())
    return sensor.next_session()


def judged(record: dict[str, object]) -> tuple[object, object, object]:
    rmm = record["rmm"]
    assert isinstance(rmm, dict)
    return record["src_ip"], rmm["verdict"], rmm["verdict_reason"]


def metric_lines(path: Path) -> set[str]:
    return {line for line in path.read_text().splitlines() if line.startswith("rmm_sensor_config")}


@pytest.mark.parametrize("trigger", ["sighup", "file-change"])
def test_running_sensor_applies_a_new_policy(
    start_sensor: Callable[[str], Sensor], tmp_path: Path, trigger: str
) -> None:
    sensor = start_sensor(EMPTY)
    before = session_round(sensor, 0, "10.20.0.31")
    assert judged(before) == ("10.20.0.31", "unsanctioned", DENIED_REASON)

    sensor.config.write_text(HELPDESK, encoding="utf-8")
    if trigger == "sighup":
        sensor.sighup()
    else:
        time.sleep(POLL_WAIT_S)
    # The tick of this packet (over a second after the last) reloads.
    sensor.send(1000, discovery("10.20.0.32", anydesk_id=987654321))
    assert sensor.stderr_line("rmm-sensor: ") == (
        f"rmm-sensor: WARNING: configuration reloaded from {sensor.config}"
    )
    after = finish_round(sensor, 1000)
    assert judged(after) == ("10.20.0.32", "sanctioned", ALLOWED_REASON)
    # The same client as before is now sanctioned too: the policy, not the session, changed.
    again = session_round(sensor, 2000, "10.20.0.31")
    assert judged(again) == ("10.20.0.31", "sanctioned", ALLOWED_REASON)

    assert sensor.finish() == 1  # the session before the reload raised an alert
    assert sensor.late_sessions == []
    assert [a["src_ip"] for a in sensor.alerts] == ["10.20.0.31"]
    assert sensor.err_lines == [f"rmm-sensor: WARNING: configuration reloaded from {sensor.config}"]
    assert {
        'rmm_sensor_config_reloads_total{result="success"} 1.0',
        'rmm_sensor_config_reloads_total{result="failure"} 0.0',
        "rmm_sensor_config_last_reload_successful 1.0",
    } <= metric_lines(tmp_path / "metrics.prom")


def test_running_sensor_keeps_the_old_policy_on_a_broken_file(
    start_sensor: Callable[[str], Sensor], tmp_path: Path
) -> None:
    sensor = start_sensor(HELPDESK)
    assert judged(session_round(sensor, 0, "10.20.0.100")) == (
        "10.20.0.100",
        "sanctioned",
        ALLOWED_REASON,
    )
    for i, (name, text, line, key) in enumerate(BROKEN, start=1):
        base = 1000 * i
        client = f"10.20.0.{100 + i}"
        sensor.config.write_text(text, encoding="utf-8")
        if name == "bad CIDR":
            time.sleep(POLL_WAIT_S)  # one of them through the file poll, without a signal
        else:
            sensor.sighup()
        sensor.send(base, discovery(client))
        error = sensor.stderr_line("rmm-sensor: ")
        assert error.startswith(
            "rmm-sensor: ERROR: configuration not reloaded, keeping the last good one: "
            f"{sensor.config}:{line}: {key}: "
        ), name
        assert judged(finish_round(sensor, base)) == (client, "sanctioned", ALLOWED_REASON), name

    # A good file after all the broken ones is applied again.
    base = 1000 * (len(BROKEN) + 1)
    sensor.config.write_text(EMPTY, encoding="utf-8")
    sensor.sighup()
    sensor.send(base, discovery("10.20.0.31"))
    assert sensor.stderr_line("rmm-sensor: ").endswith(f"reloaded from {sensor.config}")
    assert judged(finish_round(sensor, base)) == ("10.20.0.31", "unsanctioned", DENIED_REASON)

    assert sensor.finish() == 1
    assert sensor.late_sessions == []
    assert [a["src_ip"] for a in sensor.alerts] == ["10.20.0.31"]  # only after the good reload
    assert len(sensor.err_lines) == len(BROKEN) + 1  # one line per reload, no traceback
    assert {
        'rmm_sensor_config_reloads_total{result="success"} 1.0',
        f'rmm_sensor_config_reloads_total{{result="failure"}} {float(len(BROKEN))}',
        "rmm_sensor_config_last_reload_successful 1.0",
    } <= metric_lines(tmp_path / "metrics.prom")
