"""Outputs that fail, and outputs that must stay safe whatever the wire carries.

Failing outputs: the JSON alert file on a full disk (``/dev/full``, and a 64 KiB tmpfs filled
up) and in a read-only directory (a read-only tmpfs: root ignores directory modes), syslog to a
UDP port nothing listens on and to a unix socket path that does not exist. Alerts wait in the
bounded spool and are delivered, in order, once the output works again; what the full spool
drops is counted; ``rmm_sensor_output_failures_total``, ``rmm_sensor_output_spooled_alerts``
and ``rmm_sensor_output_dropped_alerts_total`` say so. The tmpfs cases run in a child process
in a private mount namespace (``unshare --mount``), so nothing stays mounted.

Escaping: captures whose SNI, HTTP Host and User-Agent, DNS names and AnyDesk discovery host
and user names hold control characters, terminal escapes, bidi overrides and invalid UTF-8 give
tables without one raw control or format character, log lines and syslog datagrams of printable
ASCII, and JSON lines that parse back to exactly the text the wire carried.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from sensor.addresses import syslog_target
from sensor.alerts.sinks import JsonFileSink, SpoolingSink, StdoutSink, SyslogSink
from sensor.analysis import Sink
from sensor.commands.analyze import analyze_captures
from sensor.config import Settings
from sensor.metrics import Metrics
from sensor.model import Alert, Evidence, Session
from sensor.output import eve
from sensor.output.sinks import JsonLinesSink, TableSink
from sensor.signatures.index import SignatureIndex
from sensor.signatures.loader import load_index
from tests import capbuild

REPO = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
T0 = 1_709_283_600 * NS  # 2024-03-01T09:00:00Z
SPOOL = 5


# --- alerts and metrics ------------------------------------------------------------------------


def alert(n: int) -> Alert:
    """Alert ``n`` of an unsanctioned ScreenConnect relay session (about 1.4 KB as JSON)."""
    session = Session(
        session_id=n, tool="screenconnect", channel="relay", proto=6, src_ip="10.20.0.21",
        src_port=50000 + n, dest_ip="198.51.100.7", dest_port=8041, community_id="1:x=",
        start_ns=T0 + n * NS, end_ns=T0 + n * NS + 30 * NS, bytes_toserver=3534,
        bytes_toclient=1856, pkts_toserver=19, pkts_toclient=16,
        server_name="support.vendor.example", instance="support.vendor.example",
        confidence="high",
        evidence=(Evidence("screenconnect-relay-87", "payload.client", "87151000", "high"),),
        attributes=(("relay_host", "support.vendor.example"), ("note", "x" * 600)),
        verdict="unsanctioned", verdict_reason="no sanctioned entry for tool screenconnect",
        severity="high",
    )  # fmt: skip
    return Alert(n, "unsanctioned_rmm_session", "high", T0 + n * NS, f"alert {n}", session)


def alert_ids(lines: list[str]) -> list[int]:
    return [json.loads(line)["alert"]["alert_id"] for line in lines]


@dataclasses.dataclass(frozen=True, slots=True)
class Counters:
    failures: float
    spooled: float
    dropped: float


def counters(registry: CollectorRegistry, output: str) -> Counters:
    def get(name: str) -> float:
        value = registry.get_sample_value(name, {"output": output})
        return 0.0 if value is None else value

    return Counters(
        get("rmm_sensor_output_failures_total"),
        get("rmm_sensor_output_spooled_alerts"),
        get("rmm_sensor_output_dropped_alerts_total"),
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def send(sink: SpoolingSink, ids: range) -> None:
    for n in ids:
        sink.alert(alert(n))


# --- the alert file ----------------------------------------------------------------------------


def test_alert_file_on_a_full_device_spools_and_delivers_after_the_switch(
    registry: CollectorRegistry, tmp_path: Path
) -> None:
    sink = JsonFileSink("/dev/full", SPOOL, Metrics(registry))
    send(sink, range(1, 9))
    c = counters(registry, "file")
    assert c == Counters(failures=8, spooled=SPOOL, dropped=3)
    assert sink.last_error == os.strerror(28)  # ENOSPC
    assert [json.loads(line)["alert"]["alert_id"] for _, line in sink.spool] == [4, 5, 6, 7, 8]
    # The administrator points the output at a disk with room, and log rotation reopens it.
    sink.path = str(tmp_path / "alerts.jsonl")
    sink.reopen()
    assert counters(registry, "file") == Counters(failures=8, spooled=0, dropped=3)
    sink.alert(alert(9))
    sink.close()
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert alert_ids(lines) == [4, 5, 6, 7, 8, 9]


def test_alert_file_in_a_missing_directory_waits_for_it(
    registry: CollectorRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "not-yet" / "alerts.jsonl"
    sink = JsonFileSink(str(path), SPOOL, Metrics(registry))
    send(sink, range(1, 4))
    assert counters(registry, "file") == Counters(failures=3, spooled=3, dropped=0)
    sink.retry()  # a tick while it is still missing: one more failure, nothing lost
    assert counters(registry, "file") == Counters(failures=4, spooled=3, dropped=0)
    path.parent.mkdir()
    sink.retry()
    sink.close()
    assert alert_ids(path.read_text().splitlines()) == [1, 2, 3]
    assert counters(registry, "file").spooled == 0


# Run in a private mount namespace: two 64 KiB tmpfs, one filled up, one read-only. Reads the
# alert lines to send from argv[2]; prints what the sink did, as JSON.
MOUNT_CHILD = r"""
import json, os, subprocess, sys
from prometheus_client import CollectorRegistry
from sensor.addresses import syslog_target
from sensor.alerts.sinks import JsonFileSink
from sensor.metrics import Metrics

base, lines = sys.argv[1], json.load(open(sys.argv[2]))
full, ro = os.path.join(base, "full"), os.path.join(base, "ro")
os.makedirs(full), os.makedirs(ro)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", full], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", ro], check=True)

def counters(registry):
    get = lambda name: registry.get_sample_value(name, {"output": "file"}) or 0.0
    return [get("rmm_sensor_output_failures_total"), get("rmm_sensor_output_spooled_alerts"),
            get("rmm_sensor_output_dropped_alerts_total")]

report = {}
registry = CollectorRegistry()
sink = JsonFileSink(os.path.join(full, "alerts.jsonl"), 5, Metrics(registry))
for line in lines[:2]:
    sink.enqueue("high", line)
report["before"] = counters(registry)
filler = os.path.join(full, "filler")
with open(filler, "wb", buffering=0) as fh:
    try:
        while True:
            fh.write(b"f" * 512)
    except OSError as exc:
        report["filled"] = exc.errno
for line in lines[2:10]:
    sink.enqueue("high", line)
report["full"] = counters(registry)
report["error"] = sink.last_error
os.remove(filler)
sink.retry()
report["freed"] = counters(registry)
sink.close()
report["full_file"] = open(os.path.join(full, "alerts.jsonl")).read()

registry = CollectorRegistry()
sink = JsonFileSink(os.path.join(ro, "alerts.jsonl"), 5, Metrics(registry))
for line in lines[10:13]:
    sink.enqueue("high", line)
report["ro"] = counters(registry)
report["ro_error"] = sink.last_error
subprocess.run(["mount", "-o", "remount,rw", ro], check=True)
sink.retry()
report["rw"] = counters(registry)
sink.close()
report["ro_file"] = open(os.path.join(ro, "alerts.jsonl")).read()
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    assert os.geteuid() == 0, "the tmpfs cases mount file systems: run the tests as root"
    assert shutil.which("unshare") and shutil.which("mount")
    base = tmp_path_factory.mktemp("mounts")
    lines = base / "lines.json"
    lines.write_text(json.dumps([eve.dumps(eve.alert_event(alert(n))) for n in range(1, 14)]))
    argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", MOUNT_CHILD,
            str(base), str(lines)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_alert_file_on_a_filled_tmpfs(mounted: dict[str, Any]) -> None:
    assert mounted["before"] == [0, 0, 0]
    assert mounted["filled"] == 28  # ENOSPC
    failures, spooled, dropped = mounted["full"]
    assert failures >= 7 and spooled == SPOOL and dropped == 3
    assert mounted["error"] == os.strerror(28)
    assert mounted["freed"] == [failures, 0, 3]
    # Every line of the file is whole: a write the full disk cut short was taken back and the
    # alert written again later, never glued to the next line.
    lines = mounted["full_file"].splitlines()
    assert alert_ids(lines) == [1, 2, 6, 7, 8, 9, 10]


def test_alert_file_on_a_read_only_file_system(mounted: dict[str, Any]) -> None:
    assert mounted["ro"] == [3, 3, 0]
    assert mounted["ro_error"] == os.strerror(30)  # EROFS
    assert mounted["rw"] == [3, 0, 0]
    assert alert_ids(mounted["ro_file"].splitlines()) == [11, 12, 13]


def test_stdout_that_fails_spools(registry: CollectorRegistry) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    sink = StdoutSink(SPOOL, Metrics(registry), out=Broken())
    send(sink, range(1, 4))
    assert counters(registry, "stdout") == Counters(failures=3, spooled=3, dropped=0)
    sink.out = io.StringIO()
    sink.retry()
    assert alert_ids(sink.out.getvalue().splitlines()) == [1, 2, 3]
    assert counters(registry, "stdout").spooled == 0


# --- syslog ------------------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def received(sock: socket.socket) -> list[bytes]:
    out = []
    sock.settimeout(0.5)
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(sock.recv(65536))
    return out


def syslog_json(datagram: bytes) -> dict[str, Any]:
    head, sep, body = datagram.partition(b": ")
    assert sep and head.startswith(b"<") and b">rmm-sensor[" in head
    event: dict[str, Any] = json.loads(body)
    return event


def test_syslog_to_a_udp_port_nobody_listens_on(registry: CollectorRegistry) -> None:
    port = free_udp_port()
    sink = SyslogSink(f"127.0.0.1:{port}", SPOOL, Metrics(registry))
    send(sink, range(1, 12))
    c = counters(registry, "syslog")
    # Refused datagrams are failures: the spool holds the latest, the full spool drops are
    # counted. (A datagram UDP accepted before the refusal came back cannot be told apart.)
    assert c.failures >= 5
    assert 1 <= c.spooled <= SPOOL
    assert sink.last_error == os.strerror(111)  # ECONNREFUSED
    waiting = alert_ids([line for _, line in sink.spool])
    assert waiting == sorted(waiting) and waiting[-1] == 11
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", port))
        sink.retry()
        sink.alert(alert(12))
        sink.close()
        got = [syslog_json(d)["alert"]["alert_id"] for d in received(listener)]
    assert got == [*waiting, 12]
    assert counters(registry, "syslog").spooled == 0


def test_syslog_to_a_missing_unix_socket(registry: CollectorRegistry, tmp_path: Path) -> None:
    path = tmp_path / "log"
    sink = SyslogSink(str(path), SPOOL, Metrics(registry))
    send(sink, range(1, 9))
    assert counters(registry, "syslog") == Counters(failures=8, spooled=SPOOL, dropped=3)
    assert sink.last_error == os.strerror(2)  # ENOENT
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        sink.retry()
        sink.alert(alert(9))
        sink.close()
        got = [syslog_json(d)["alert"]["alert_id"] for d in received(listener)]
    assert got == [4, 5, 6, 7, 8, 9]
    assert counters(registry, "syslog") == Counters(failures=8, spooled=0, dropped=3)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def octet_counted(stream: bytes) -> list[bytes]:
    """Split an RFC 6587 octet-counting stream ("LEN SP MSG" ...); the stream must end whole."""
    out = []
    while stream:
        length, sep, rest = stream.partition(b" ")
        assert sep and length.isdigit(), stream[:40]
        out.append(rest[: int(length)])
        assert len(out[-1]) == int(length), "a message was cut"
        stream = rest[int(length) :]
    return out


def accept_all(listener: socket.socket) -> bytes:
    """Everything one connection sends until the sender closes it."""
    listener.settimeout(5)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(5)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_syslog_over_tcp_spools_while_nobody_listens_then_delivers_in_order(
    registry: CollectorRegistry,
) -> None:
    port = free_tcp_port()
    sink = SyslogSink(f"tcp://127.0.0.1:{port}", SPOOL, Metrics(registry))
    send(sink, range(1, 9))
    # Unlike UDP, every refused alert is noticed: all of them are failures, none is lost
    # silently, the spool keeps the latest and the overflow is counted.
    assert counters(registry, "syslog") == Counters(failures=8, spooled=SPOOL, dropped=3)
    assert sink.last_error == os.strerror(111)  # ECONNREFUSED
    with socket.create_server(("127.0.0.1", port)) as listener:
        sink.retry()
        sink.alert(alert(9))
        sink.close()
        got = [syslog_json(m)["alert"]["alert_id"] for m in octet_counted(accept_all(listener))]
    assert got == [4, 5, 6, 7, 8, 9]
    assert counters(registry, "syslog") == Counters(failures=8, spooled=0, dropped=3)


def test_syslog_over_tcp_reconnects_when_the_receiver_restarts(
    registry: CollectorRegistry,
) -> None:
    port = free_tcp_port()
    sink = SyslogSink(f"tcp://127.0.0.1:{port}", SPOOL, Metrics(registry))
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(5)
        sink.alert(alert(1))
        conn, _ = listener.accept()
        first = conn.recv(65536)
        conn.close()  # the receiver restarts
        time.sleep(0.2)  # its FIN reaches the sensor's socket
        sink.alert(alert(2))
        sink.close()
        second = accept_all(listener)
    assert [syslog_json(m)["alert"]["alert_id"] for m in octet_counted(first)] == [1]
    assert [syslog_json(m)["alert"]["alert_id"] for m in octet_counted(second)] == [2]
    assert counters(registry, "syslog").spooled == 0


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("/dev/log", ("unix", "/dev/log")),
        ("192.0.2.1:514", ("udp", ("192.0.2.1", 514))),
        ("udp://logs.example:514", ("udp", ("logs.example", 514))),
        ("tcp://[2001:db8::1]:6514", ("tcp", ("2001:db8::1", 6514))),
    ],
)
def test_syslog_addresses(address: str, expected: tuple[str, object]) -> None:
    assert syslog_target(address) == expected


@pytest.mark.parametrize("address", ["logs.example", "tls://h:514", "tcp://h:0", "tcp://:514"])
def test_syslog_address_mistakes_are_errors(address: str) -> None:
    with pytest.raises(ValueError, match="tcp://"):
        syslog_target(address)


# --- hostile wire text -------------------------------------------------------------------------

# Terminal escapes (CSI, OSC with BEL), C0 and C1 controls, DEL, bidi overrides and isolates,
# a line separator, a backslash, and bytes that are not UTF-8.
HOSTILE = (
    "\u202e\u2066\u2028\u200b".encode()
    + b"\x1b[2J\x1b]0;owned\x07\x00\x7f\xc2\x9b31m"
    + b"\\x41\xff\xfe\xc3"
)
HOSTILE_HTTP = HOSTILE.replace(b"\x00", b"")  # HTTP headers end at NUL-free CR LF
CLIENT, SERVER = "10.20.0.21", "198.51.100.7"


def wire_text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def tls_text(raw: bytes) -> str:
    """The TLS parser doubles a backslash, and writes C0 and C1 controls and DEL as ``\\xNN``."""
    return "".join(
        f"\\x{ord(c):02x}" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c
        for c in wire_text(raw.replace(b"\\", b"\\\\"))
    )


def tcp_session(sport: int, dport: int, client_data: bytes) -> list[Packet]:
    c = Ether() / IP(src=CLIENT, dst=SERVER)
    s = Ether() / IP(src=SERVER, dst=CLIENT)
    return [
        c / TCP(sport=sport, dport=dport, flags="S", seq=100),
        s / TCP(sport=dport, dport=sport, flags="SA", seq=500, ack=101),
        c / TCP(sport=sport, dport=dport, flags="A", seq=101, ack=501),
        c / TCP(sport=sport, dport=dport, flags="PA", seq=101, ack=501) / client_data,
        c / TCP(sport=sport, dport=dport, flags="FA", seq=101 + len(client_data), ack=501),
        s / TCP(sport=dport, dport=sport, flags="FA", seq=501, ack=102 + len(client_data)),
    ]


def client_hello(sni: bytes) -> bytes:
    from tests.protocols.tlsbuild import client_hello_body, handshake, record, sni_ext

    return record(22, handshake(1, client_hello_body(extensions=[sni_ext(sni)])), version=0x0301)


def discovery(host: bytes, user: bytes) -> bytes:
    head = b"\x3e\xd1\x01" + (123456789).to_bytes(4, "big") + bytes(4) + b"\x02\x01"
    return head + len(host).to_bytes(4, "big") + host + len(user).to_bytes(4, "big") + user


SNI = HOSTILE + b".screenconnect.com"
HOST = HOSTILE_HTTP + b".anydesk.com"
AGENT = b"AnyDesk/7.1.0 " + HOSTILE_HTTP
DNS_LABELS = (HOSTILE + b".in-label", b"anydesk", b"com")  # a dot inside a label shows as "\."
DISCOVERY_HOST, DISCOVERY_USER = b"PC-" + HOSTILE, HOSTILE + b"-user"


def dns_message(labels: tuple[bytes, ...], response: bool) -> bytes:
    """A query for the name of ``labels`` (any bytes), or its answer: one A record."""
    qname = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    header = struct.pack("!HHHHHH", 7, 0x8180 if response else 0x0100, 1, int(response), 0, 0)
    message = header + qname + struct.pack("!HH", 1, 1)
    if response:  # the answer's name points back at the question's (offset 12)
        message += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(SERVER)
    return message


def hostile_packets() -> list[Packet]:
    http = b"GET /AnyDesk.exe HTTP/1.1\r\nHost: " + HOST + b"\r\nUser-Agent: " + AGENT
    query, answer = dns_message(DNS_LABELS, False), dns_message(DNS_LABELS, True)
    lan = Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src=CLIENT, dst="10.20.0.255")
    packets = [
        *tcp_session(50001, 443, client_hello(SNI)),
        *tcp_session(50002, 80, http + b"\r\n\r\n"),
        Ether() / IP(src=CLIENT, dst="10.20.0.1") / UDP(sport=53000, dport=53) / query,
        Ether() / IP(src="10.20.0.1", dst=CLIENT) / UDP(sport=53, dport=53000) / answer,
        lan / UDP(sport=50001, dport=50001) / discovery(DISCOVERY_HOST, DISCOVERY_USER),
    ]
    for i, p in enumerate(packets):
        p.time = T0 / NS + i * 0.01
    return packets


@pytest.fixture(scope="module")
def index() -> SignatureIndex:
    return load_index()


@pytest.fixture(scope="module")
def hostile_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "hostile.pcap"
    wrpcap(str(path), hostile_packets())
    return path


def run_sinks(index: SignatureIndex, capture: Path, sinks: list[Sink]) -> None:
    args = argparse.Namespace(captures=[str(capture)], workers=1, flows=True, metrics_out=None,
                              config=None)  # fmt: skip
    _, errors = analyze_captures(args, Settings(), index, sinks)
    assert errors == []


UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
KEPT = frozenset({"\n", "\u200c", "\u200d"})  # line ends of the table; emoji joiners


def assert_terminal_safe(text: str) -> None:
    bad = [c for c in text if c not in KEPT and unicodedata.category(c) in UNSAFE_CATEGORIES]
    assert not bad, f"raw {[hex(ord(c)) for c in bad]} in {text!r}"


def assert_printable_ascii(line: bytes | str) -> None:
    data = line.encode() if isinstance(line, str) else line
    assert all(0x20 <= b <= 0x7E for b in data), data


def table_output(index: SignatureIndex, capture: Path) -> str:
    out = io.StringIO()
    run_sinks(index, capture, [TableSink(out, flows=True)])
    return out.getvalue()


def json_events(index: SignatureIndex, capture: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    run_sinks(index, capture, [JsonLinesSink(out, flows=True)])
    lines = out.getvalue().splitlines()
    for line in lines:
        assert_printable_ascii(line)
    return [json.loads(line) for line in lines]


def test_hostile_names_reach_the_json_exactly(index: SignatureIndex, hostile_capture: Path) -> None:
    events = json_events(index, hostile_capture)
    flows = [e for e in events if e["event_type"] == "flow"]
    sessions = {e["rmm"]["channel"]: e for e in events if e["event_type"] == "session"}
    assert {f.get("server_name") for f in flows} >= {tls_text(SNI)}
    http = next(f["http"] for f in flows if "http" in f)
    assert http["hostname"] == HOST.decode("latin-1")  # HTTP header text is latin-1
    assert http["http_user_agent"] == AGENT.decode("latin-1")
    dns = next(f["dns"] for f in flows if "dns" in f)
    # Backslashes and dots inside a label are escaped on the byte level, then decoded.
    first = wire_text(DNS_LABELS[0].replace(b"\\", b"\\\\").replace(b".", b"\\."))
    assert dns["queries"][0]["rrname"] == f"{first}.anydesk.com"
    assert dns["answers"][0]["rrname"] == f"{first}.anydesk.com"
    attributes = sessions["discovery"]["rmm"]["attributes"]
    assert attributes["hostname"] == wire_text(DISCOVERY_HOST)
    assert attributes["user"] == wire_text(DISCOVERY_USER)
    assert {s["rmm"]["tool"] for s in sessions.values()} == {"screenconnect", "anydesk"}


def test_hostile_names_are_escaped_in_the_table(
    index: SignatureIndex, hostile_capture: Path
) -> None:
    text = table_output(index, hostile_capture)
    assert_terminal_safe(text)
    # What was escaped is still there to read, backslash-escaped (cells are cut at 48).
    assert "\\u202e\\u2066\\u2028\\u200b\\x1b[2J\\x1b]0;owned\\x07" in text  # DNS name
    assert "\\u202e\\u2066\\u2028\\u200b\\\\x1b[2J" in text  # the SNI, escaped by TLS too
    # The Host header is latin-1: the UTF-8 bytes of U+202E show as a C1 control, escaped.
    assert "\u00e2\\x80\u00ae\u00e2\\x81\u00a6" in text


def test_hostile_names_in_alert_outputs_and_log_lines(
    index: SignatureIndex,
    hostile_capture: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        stdout = io.StringIO()
        sinks: list[Sink] = [
            SyslogSink(f"127.0.0.1:{port}", 100, metrics),
            JsonFileSink(str(tmp_path / "alerts.jsonl"), 100, metrics),
            StdoutSink(100, metrics, out=stdout),
        ]
        with caplog.at_level(logging.DEBUG):
            run_sinks(index, hostile_capture, sinks)
        datagrams = received(listener)
    file_lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(datagrams) == len(file_lines) == len(stdout.getvalue().splitlines()) >= 3
    for datagram in datagrams:
        assert_printable_ascii(datagram)
    for line in [*file_lines, *stdout.getvalue().splitlines(), *caplog.text.splitlines()]:
        assert_printable_ascii(line)
    events = [syslog_json(d) for d in datagrams]
    assert [json.loads(line) for line in file_lines] == events
    names = {e["rmm"]["server_name"] for e in events} | {
        e["rmm"]["attributes"].get("hostname") for e in events
    }
    assert {tls_text(SNI), wire_text(DISCOVERY_HOST)} <= names
    for output in ("syslog", "file", "stdout"):
        assert counters(registry, output) == Counters(0, 0, 0)


HEADER_SAFE = st.binary(min_size=1, max_size=120)


def frames_for(sni: bytes, host: bytes) -> bytes:
    """A pcap: a ClientHello with ``sni``, and a request with ``host`` as its Host header."""
    rows: list[capbuild.Frame] = []
    for i, (dport, payload) in enumerate(
        [(443, client_hello(sni)), (80, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")]
    ):
        sport = 40000 + i
        for j, (flags, seq, data) in enumerate(
            [(0x02, 99, b""), (0x18, 100, payload), (0x11, 100 + len(payload), b"")]
        ):
            ip = capbuild.ipv4(CLIENT, SERVER, capbuild.PROTO_TCP,
                               capbuild.tcp(sport, dport, data, seq=seq, flags=flags))  # fmt: skip
            frame = capbuild.ethernet(capbuild.ETH_IPV4, ip)
            rows.append((T0 + (3 * i + j) * 1000, 1, frame, len(frame)))
    return capbuild.pcap(rows).data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sni=HEADER_SAFE | HEADER_SAFE.map(lambda b: b + b".screenconnect.com"),
    host=HEADER_SAFE | HEADER_SAFE.map(lambda b: b + b".anydesk.com"),
)
def test_any_sni_and_host_bytes_give_valid_json_and_safe_tables(
    index: SignatureIndex, sni: bytes, host: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "random.pcap"
        capture.write_bytes(frames_for(sni, host))
        events = json_events(index, capture)
        assert_terminal_safe(table_output(index, capture))
    names = {e.get("server_name") for e in events if e["event_type"] == "flow"}
    assert tls_text(sni) in names
    assert len([e for e in events if e["event_type"] == "flow"]) == 2
