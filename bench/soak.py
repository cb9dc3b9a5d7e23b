"""Soak: the live sensor under tcpreplay at a fixed rate for minutes, in a network namespace.

A namespace of its own holds a veth pair. ``tcpreplay`` loops a capture into ``veth-a`` at
``--pps`` with ``--unique-ip`` (the addresses change on every pass, so flows keep starting and
ending as on a real mirror port) for ``--minutes``; ``rmm-sensor live`` watches ``veth-b`` with
``--workers`` workers and writes alerts to a file in a temporary directory. Every ``--every``
seconds the script reads, from ``/proc``, the resident set size and the open descriptors of
the supervisor and of each worker, and from ``/metrics`` the packet, flow and drop counters.

At the end it prints the samples as a Markdown table (the memory curve), each process's RSS
growth from the first sample after ``--warm-up`` to the last, the largest descriptor counts,
and ``rmm_sensor_kernel_drops_total``.

The flow table fills for ``flows.tcp_idle_s`` (600 s by default) before flows start to time
out, so with the defaults memory rises for the first minutes and levels off once timeouts (or
evictions at ``flows.max_flows`` per worker) keep pace with new flows; ``--config`` with a
shorter idle time reaches that steady state sooner.

Run as root: ``.venv/bin/python bench/soak.py [--minutes 10] [--pps 20000] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netns import Namespace  # bench/netns.py (this script runs from bench/)
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
BENCH_CAPTURE = REPO / "bench" / "out" / "bench.pcap"
FALLBACK_CAPTURE = REPO / ".." / "shared" / "captures" / "bench-background-concat.pcap"
PRELOAD_LIMIT = 64 * 1024 * 1024  # smaller captures are held in tcpreplay's memory
METRICS_PORT = 9808  # the namespace is ours alone
READY_TIMEOUT_S = 60.0
CATCH_UP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
POLL_S = 0.5
SENSOR_MAIN = "import sys; from sensor.cli import main; sys.exit(main())"

# Run inside the namespace: no IPv6, so the kernel sends nothing of its own on the pair.
# Run inside the namespace: the sensor's /metrics as it came ("" = no answer).
GET_METRICS = """\
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as reply:
        sys.stdout.write(reply.read().decode())
except OSError:
    pass
"""


class SoakNamespace(Namespace):
    """The namespace of bench/netns.py, with what this benchmark does in it."""

    def metrics(self) -> dict[str, float]:
        """Every sample of the sensor's /metrics, keyed ``name{labels}``; {} if no answer."""
        text = self.run(sys.executable, "-I", "-c", GET_METRICS,
                        f"http://127.0.0.1:{METRICS_PORT}/metrics")  # fmt: skip
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessSample:
    pid: int
    rss_kib: int
    fds: int


def process_sample(pid: int) -> ProcessSample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None  # it exited while we looked
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return ProcessSample(pid, int(found.group(1)) if found else 0, fds)


def workers(supervisor: int) -> list[int]:
    """The supervisor's children that multiprocessing spawned (the capture workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def capturing(supervisor: int) -> int:
    """Packet sockets bound to a running interface in the supervisor's namespace."""
    try:
        rows = Path(f"/proc/{supervisor}/net/packet").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for row in rows if row.split()[5] == "1")


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


# --- the soak ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    supervisor: ProcessSample | None
    workers: tuple[ProcessSample, ...]
    packets: int
    kernel_packets: int
    kernel_drops: int
    flows_active: int
    flows_total: int
    alerts: int


@dataclass
class Soak:
    capture: str
    pps: int
    minutes: float
    workers: int
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    achieved_pps: float = 0.0
    final: dict[str, float] = field(default_factory=dict)
    sensor_exit: int | None = None


def sample(ns: SoakNamespace, supervisor: int, t0: float) -> Sample:
    m = ns.metrics()
    alerts = sum(v for k, v in m.items() if k.startswith("rmm_sensor_alerts_total"))
    return Sample(
        t_s=round(time.monotonic() - t0, 1),
        supervisor=process_sample(supervisor),
        workers=tuple(s for pid in workers(supervisor) if (s := process_sample(pid)) is not None),
        packets=int(m.get("rmm_sensor_packets_total", 0)),
        kernel_packets=int(m.get("rmm_sensor_kernel_packets_total", 0)),
        kernel_drops=int(m.get("rmm_sensor_kernel_drops_total", 0)),
        flows_active=int(m.get("rmm_sensor_flows_active", 0)),
        flows_total=int(m.get("rmm_sensor_flows_total", 0)),
        alerts=int(alerts),
    )


def soak(args: argparse.Namespace, capture: Path, work: Path) -> Soak:
    result = Soak(str(capture), args.pps, args.minutes, args.workers)
    seconds = max(int(args.minutes * 60), 1)
    argv = [sys.executable, "-c", SENSOR_MAIN, "live", "--interface", "veth-b",
            "--workers", str(args.workers), "--metrics-address", f"127.0.0.1:{METRICS_PORT}",
            "--alerts", str(work / "alerts.jsonl")]  # fmt: skip
    if args.config is not None:
        argv += ["--config", str(args.config.resolve())]
    with SoakNamespace("rmm-soak").created() as ns, open(work / "sensor.log", "wb") as log:
        sensor = subprocess.Popen(ns.cmd(*argv), stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
        try:
            if not wait_until(lambda: capturing(sensor.pid) == args.workers, READY_TIMEOUT_S):
                raise RuntimeError("the sensor did not start capturing")
            replay = ["tcpreplay", "-i", "veth-a", "--pps", str(args.pps), "--loop", "0",
                      "--unique-ip", f"--duration={seconds}", str(capture)]  # fmt: skip
            if capture.stat().st_size <= PRELOAD_LIMIT:
                replay.insert(1, "--preload-pcap")
            t0 = time.monotonic()
            with tempfile.TemporaryFile() as out:
                player = subprocess.Popen(ns.cmd(*replay), stdout=out, stderr=subprocess.STDOUT)
                next_at = t0
                while player.poll() is None:
                    if time.monotonic() >= next_at:
                        result.samples.append(sample(ns, sensor.pid, t0))
                        print(_row(result.samples[-1]), file=sys.stderr, flush=True)
                        next_at += args.every
                    time.sleep(POLL_S)
                out.seek(0)
                summary = out.read().decode(errors="replace")
            sent = re.search(r"Actual: (\d+) packets \(\d+ bytes\) sent in ([\d.]+) seconds",
                             summary)  # fmt: skip
            if sent is None:
                raise RuntimeError(f"unexpected tcpreplay summary:\n{summary}")
            result.sent = int(sent.group(1))
            result.achieved_pps = result.sent / max(float(sent.group(2)), 1e-9)

            def caught_up() -> bool:
                m = ns.metrics()
                done = m.get("rmm_sensor_packets_total", 0) + m.get(
                    "rmm_sensor_kernel_drops_total", 0
                )
                return done >= m.get("rmm_sensor_kernel_packets_total", 1) > 0

            wait_until(caught_up, CATCH_UP_TIMEOUT_S)
            result.samples.append(sample(ns, sensor.pid, t0))
            result.final = ns.metrics()
        finally:
            sensor.send_signal(signal.SIGTERM)
            try:
                result.sensor_exit = sensor.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                sensor.kill()
                sensor.wait()
    return result


# --- the report --------------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def _row(s: Sample) -> str:
    sup = s.supervisor
    return (
        f"| {s.t_s:.0f} | {_mib(sup.rss_kib) if sup else '-'} "
        f"| {' / '.join(_mib(w.rss_kib) for w in s.workers)} "
        f"| {sup.fds if sup else '-'} | {' / '.join(str(w.fds) for w in s.workers)} "
        f"| {s.packets:,} | {s.flows_active:,} | {s.flows_total:,} | {s.kernel_drops:,} "
        f"| {s.alerts:,} |"
    )


def markdown(result: Soak, warm_up_s: float) -> str:
    samples = result.samples
    lines = [
        f"Capture `{result.capture}` looped with new addresses on every pass at "
        f"{result.pps:,} pps for {result.minutes:g} min: {result.sent:,} packets sent "
        f"({result.achieved_pps:,.0f} pps achieved). `rmm-sensor live` with "
        f"{result.workers} workers; {os.cpu_count()} CPUs, kernel {platform.release()}.",
        "",
        "| t (s) | supervisor RSS (MiB) | worker RSS (MiB) | supervisor fds | worker fds "
        "| packets | flows active | flows total | kernel drops | alerts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(s) for s in samples),
        "",
    ]
    steady = [s for s in samples if s.t_s >= warm_up_s] or samples[-1:]
    first, last = steady[0], steady[-1]
    if first.supervisor and last.supervisor:
        growth = last.supervisor.rss_kib - first.supervisor.rss_kib
        lines.append(
            f"- supervisor RSS from {first.t_s:.0f} s to {last.t_s:.0f} s: "
            f"{_mib(first.supervisor.rss_kib)} -> {_mib(last.supervisor.rss_kib)} MiB "
            f"({growth / 1024:+.1f} MiB)"
        )
    for i, (a, b) in enumerate(zip(first.workers, last.workers, strict=False)):
        lines.append(
            f"- worker {i} RSS from {first.t_s:.0f} s to {last.t_s:.0f} s: {_mib(a.rss_kib)} -> "
            f"{_mib(b.rss_kib)} MiB ({(b.rss_kib - a.rss_kib) / 1024:+.1f} MiB)"
        )
    fds = [s.supervisor.fds for s in samples if s.supervisor]
    worker_fds = [w.fds for s in samples for w in s.workers]
    lines.append(
        f"- open descriptors: supervisor {min(fds, default=0)}-{max(fds, default=0)}, "
        f"workers {min(worker_fds, default=0)}-{max(worker_fds, default=0)}"
    )
    final = result.final
    drops = int(final.get("rmm_sensor_kernel_drops_total", 0))
    kernel = int(final.get("rmm_sensor_kernel_packets_total", 0))
    lines.append(
        f"- rmm_sensor_kernel_drops_total {drops:,} of {kernel:,} packets the kernel passed "
        f"({100 * drops / max(kernel, 1):.3f} %); rmm_sensor_packets_total "
        f"{int(final.get('rmm_sensor_packets_total', 0)):,}; sensor exit status "
        f"{result.sensor_exit}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10, help="replay time (default 10)")
    p.add_argument("--pps", type=int, default=20_000, help="replay rate (default 20000)")
    p.add_argument("--workers", type=int, default=2, help="sensor workers (default 2)")
    p.add_argument("--every", type=float, default=10, help="seconds between samples")
    p.add_argument("--warm-up", type=float, default=60, help="seconds before growth is measured")
    p.add_argument("--capture", type=Path, help="pcap to replay (default: bench/out/bench.pcap, "
                   "else shared/captures/bench-background-concat.pcap)")  # fmt: skip
    p.add_argument("--config", type=Path, help="sensor configuration (e.g. smaller flows.*)")
    p.add_argument("--json", type=Path, help="also write the samples as JSON")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/soak.py needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            print(f"bench/soak.py needs {tool} (make system-deps)", file=sys.stderr)
            return 2
    capture = args.capture or (BENCH_CAPTURE if BENCH_CAPTURE.exists() else FALLBACK_CAPTURE)
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(args, capture.resolve(), Path(tmp))
    print(markdown(result, args.warm_up))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
