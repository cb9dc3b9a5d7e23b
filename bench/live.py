"""Highest replay rate the live sensor takes without a kernel drop, next to tcpdump.

A network namespace of its own holds a veth pair. tcpreplay sends the same packets into
``veth-a`` at each rate of a ladder (``--pps``) and one capturer at a time listens on ``veth-b``:
``rmm-sensor live`` with one worker, with two workers, and ``tcpdump -w /dev/null -B 131072``
(a 128 MiB buffer, the size of one sensor worker's ring). Each capturer starts fresh for each
rung, so every rung begins with an empty ring and an empty flow table.

Drops are the kernel's count for the capture sockets (PACKET_STATISTICS): the sensor's
``rmm_sensor_kernel_drops_total``, tcpdump's "dropped by kernel" line. A ring absorbs a burst,
so a replay that the sensor cannot keep up with shows no drop until the ring is full; the
catch-up column says how long after the replay the sensor took to finish what the ring held.

Run as root: ``.venv/bin/python bench/live.py`` (Markdown on stdout; ``--json PATH`` as well).
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from netns import Namespace  # bench/netns.py (this script runs from bench/)

REPO = Path(__file__).resolve().parents[1]
BENCH_CAPTURE = REPO / "bench" / "out" / "bench.pcap"
FALLBACK_CAPTURE = REPO / ".." / "shared" / "captures" / "bench-background-concat.pcap"
DEFAULT_RATES = "25000,50000,75000,100000,125000,150000,200000,300000,top"
DEFAULT_PACKETS = 900_000  # bench.pcap holds ~996,000: one pass, no preloading
TCPDUMP_BUFFER_KIB = 131_072
READY_TIMEOUT_S = 30.0
COUNT_TIMEOUT_S = 30.0
CATCH_UP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 120.0
POLL_S = 0.25
CAPTURERS = ("sensor-1w", "sensor-2w", "tcpdump")

# Run inside the namespace (its /proc/sys/net is the namespace's): no IPv6, so the kernel sends
# nothing of its own on the pair and every packet counted is one tcpreplay sent.
# Run inside the namespace: /metrics of the sensor, printed as it came ("" = no answer).
GET_METRICS = """\
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as reply:
        sys.stdout.write(reply.read().decode())
except OSError:
    pass
"""

SENSOR_MAIN = "import sys; from sensor.cli import main; sys.exit(main())"
METRICS_PORT = 9808  # the namespace is ours alone: nothing else listens there


@dataclass(frozen=True, slots=True)
class Replay:
    sent: int
    seconds: float
    pps: float


ReplayFn = Callable[[], tuple[str, "Replay"]]  # sends the rung's packets: (rate, what was sent)


@dataclass(frozen=True, slots=True)
class Step:
    capturer: str
    offered: str  # packets per second, or "top"
    replay: Replay
    kernel_packets: int
    drops: int
    catch_up_s: float | None  # sensor only; None when it did not finish in time


class Bench(Namespace):
    """The namespace of bench/netns.py, with what this benchmark does in it."""

    def replay(self, capture: Path, rate: str, packets: int, loop: int) -> Replay:
        speed = ["--topspeed"] if rate == "top" else ["--pps", rate]
        argv = ["tcpreplay", "-i", "veth-a", *speed, f"--limit={packets}", str(capture)]
        if loop > 1:
            argv[1:1] = [f"--loop={loop}", "--preload-pcap"]
        out = self.run(*argv, timeout=3600)
        found = re.search(r"Actual: (\d+) packets \(\d+ bytes\) sent in ([\d.]+) seconds", out)
        rated = re.search(r"Rated: .*?([\d.]+) pps", out)
        if found is None or rated is None:
            raise RuntimeError(f"unexpected tcpreplay summary:\n{out}")
        return Replay(int(found.group(1)), float(found.group(2)), float(rated.group(1)))


def running_sockets(pid: int) -> int:
    """Packet sockets bound to a running interface in the namespace of process ``pid``."""
    try:
        rows = Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]
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


def stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the capturers ---------------------------------------------------------------------------


def sensor_step(ns: Bench, workers: int, replay: ReplayFn) -> Step:
    argv = [sys.executable, "-c", SENSOR_MAIN, "live", "--interface", "veth-b", "--workers",
            str(workers), "--metrics-address", f"127.0.0.1:{METRICS_PORT}"]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(ns.cmd(*argv), stdout=subprocess.DEVNULL, stderr=log)
        try:
            return _sensor_run(ns, proc, workers, replay)
        finally:
            stop(proc, signal.SIGTERM)
            if proc.returncode not in (0, -signal.SIGKILL):
                print(f"sensor exit status {proc.returncode}: {_tail(log)}", file=sys.stderr)


def _sensor_run(ns: Bench, proc: subprocess.Popen[bytes], workers: int, replay: ReplayFn) -> Step:
    if not wait_until(lambda: running_sockets(proc.pid) == workers, READY_TIMEOUT_S):
        raise RuntimeError("the sensor did not start")
    rate, result = replay()
    ended = time.monotonic()
    counters: dict[str, float] = {}

    def counted() -> bool:
        counters.update(metrics(ns))
        return counters.get("rmm_sensor_kernel_packets_total", 0) >= result.sent

    wait_until(counted, COUNT_TIMEOUT_S)
    drops = int(counters.get("rmm_sensor_kernel_drops_total", 0))

    def caught_up() -> bool:
        counters.update(metrics(ns))
        return counters.get("rmm_sensor_packets_total", 0) + drops >= result.sent

    done = wait_until(caught_up, CATCH_UP_TIMEOUT_S)
    catch_up = round(time.monotonic() - ended, 1) if done else None
    return Step(f"sensor-{workers}w", rate, result,
                int(counters.get("rmm_sensor_kernel_packets_total", 0)), drops,
                catch_up)  # fmt: skip


def tcpdump_step(ns: Bench, replay: ReplayFn) -> Step:
    argv = ["tcpdump", "-i", "veth-b", "-w", "/dev/null", "-B", str(TCPDUMP_BUFFER_KIB)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(ns.cmd(*argv), stdout=subprocess.DEVNULL, stderr=log)
        try:
            if not wait_until(lambda: running_sockets(proc.pid) == 1, READY_TIMEOUT_S):
                raise RuntimeError("tcpdump did not start")
            rate, result = replay()
            time.sleep(1.0)  # each packet is in the buffer by now, or counted as dropped
        finally:
            stop(proc, signal.SIGINT)
        summary = _tail(log)
    received = re.search(r"(\d+) packets? received by filter", summary)
    dropped = re.search(r"(\d+) packets? dropped by kernel", summary)
    if received is None or dropped is None:
        raise RuntimeError(f"unexpected tcpdump summary:\n{summary}")
    return Step("tcpdump", rate, result, int(received.group(1)), int(dropped.group(1)), None)


def _tail(log: IO[bytes]) -> str:
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - 2000))
    return log.read().decode("utf-8", "backslashreplace")


def metrics(ns: Bench) -> dict[str, float]:
    """Unlabelled samples of the sensor's /metrics."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    out = {}
    for line in ns.run(sys.executable, "-I", "-c", GET_METRICS, url).splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


# --- the report ------------------------------------------------------------------------------


def markdown(
    steps: Sequence[Step], capture: str, packets: int, repeat: int, load: tuple[str, str]
) -> str:
    rates = list(dict.fromkeys(s.offered for s in steps))
    by = {(s.capturer, s.offered): s for s in steps}
    lines = [
        f"Capture: `{capture}`, first {packets:,} packets per replay, best of {repeat}. "
        f"Machine: {os.cpu_count()} CPUs, kernel {platform.release()}; load average "
        f"{load[0]} before, {load[1]} after (anything above ~1 means other work shared the CPUs).",
        "",
        "| rate offered (pps) | achieved (pps) | sensor-1w drops | sensor-2w drops "
        "| tcpdump drops | sensor-1w catch-up (s) | sensor-2w catch-up (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in rates:
        row = [by.get((c, rate)) for c in CAPTURERS]
        achieved = [s.replay.pps for s in row if s is not None]
        low, high = min(achieved, default=0), max(achieved, default=0)
        span = f"{low:,.0f}" if high - low <= 0.01 * high else f"{low:,.0f} to {high:,.0f}"
        offered = "top speed" if rate == "top" else f"{int(rate):,}"
        cells = [offered, span, *(_drops(s) for s in row),
                 *(_catch_up(s) for s in row[:2])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for capturer in CAPTURERS:
        lines.append(f"- {capturer}: {_clean_up_to([s for s in steps if s.capturer == capturer])}")
    return "\n".join(lines)


def _clean_up_to(steps: Sequence[Step]) -> str:
    """The fastest rung below the first one with a drop (the ladder is in rising order)."""
    if not steps:
        return "not run"
    clean: list[Step] = []
    for step in steps:
        if step.drops:
            break
        clean.append(step)
    if not clean:
        return "drops at every rate"
    text = f"no drop up to {clean[-1].replay.pps:,.0f} pps achieved"
    if len(clean) < len(steps) and any(s.drops == 0 for s in steps[len(clean) :]):
        text += " (a faster rung was clean again: the machine was busy, run it again)"
    return text


def _drops(step: Step | None) -> str:
    if step is None:
        return "n/a"
    if step.drops == 0:
        return "0"
    share = 100 * step.drops / max(step.kernel_packets, 1)
    return f"{step.drops:,} ({share:.1f} %)"


def _catch_up(step: Step | None) -> str:
    if step is None:
        return "n/a"
    if step.catch_up_s is None:
        return f">{CATCH_UP_TIMEOUT_S:.0f}"
    return f"{step.catch_up_s}"


# --- main ------------------------------------------------------------------------------------


def _load() -> str:
    """The 5-minute load average, the span of one ladder."""
    return Path("/proc/loadavg").read_text().split()[1]


def count_packets(path: Path) -> int:
    out = subprocess.run(
        ["capinfos", "-c", "-M", str(path)], capture_output=True, text=True, check=False
    )
    found = re.search(r"Number of packets:\s+(\d+)", out.stdout)
    if found is None:
        raise RuntimeError(f"capinfos could not count {path}: {out.stderr.strip()}")
    return int(found.group(1))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--capture", type=Path, help="pcap to replay (default: bench/out/bench.pcap, "
                   "else shared/captures/bench-background-concat.pcap looped)")  # fmt: skip
    p.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help="packets per replay")
    p.add_argument("--rates", default=DEFAULT_RATES, help="comma-separated pps, 'top' = top speed")
    p.add_argument("--repeat", type=int, default=1, help="tries per rung; the fewest drops count")
    p.add_argument("--skip", action="append", default=[], choices=CAPTURERS)
    p.add_argument("--json", type=Path, help="also write the steps as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/live.py needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    for tool in ("ip", "tcpreplay", "tcpdump", "capinfos"):
        if shutil.which(tool) is None:
            print(f"bench/live.py needs {tool} (make system-deps)", file=sys.stderr)
            return 2
    capture = args.capture or (BENCH_CAPTURE if BENCH_CAPTURE.exists() else FALLBACK_CAPTURE)
    capture = capture.resolve()
    in_file = count_packets(capture)
    loop = -(-args.packets // in_file)  # a small capture is replayed several times over
    steps: list[Step] = []
    load_before = _load()
    with Bench("rmm-bench").created() as ns:
        for rate in args.rates.split(","):
            for capturer in CAPTURERS:
                if capturer in args.skip:
                    continue

                def replay(rate: str = rate) -> tuple[str, Replay]:
                    return rate, ns.replay(capture, rate, args.packets, loop)

                tries = []
                for _ in range(args.repeat):
                    if capturer == "tcpdump":
                        tries.append(tcpdump_step(ns, replay))
                    else:
                        tries.append(sensor_step(ns, int(capturer[-2]), replay))
                    print(f"{capturer} at {rate}: {tries[-1]}", file=sys.stderr, flush=True)
                # Other work on the machine only adds drops: the fewest is the capturer's own.
                steps.append(min(tries, key=lambda s: s.drops))
    shown = capture.relative_to(REPO) if capture.is_relative_to(REPO) else capture
    print(markdown(steps, str(shown), args.packets, args.repeat, (load_before, _load())))
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in steps], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
