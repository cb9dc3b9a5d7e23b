"""Measure rmm-sensor, ndpiReader, tshark and a Python baseline on the same capture.

Every command runs as a child process with its output sent to /dev/null. Wall time is taken
around spawn and reap, and peak memory is the child's maximum resident set size as reported by
``os.wait4``. Each command runs ``--repeat`` times; the report shows the best wall time, the
packet rate at that time, and the largest RSS of all runs. The packet count comes from the file.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTURE = REPO / "bench" / "out" / "bench.pcap"
DEFAULT_SENSOR = REPO / ".venv" / "bin" / "rmm-sensor"
TOOLS = ("sensor", "ndpi", "tshark", "python")
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAP_FILE_HEADER = 24
PCAP_RECORD_HEADER = 16
VERSION_TIMEOUT_S = 30
STDERR_TAIL = 400
WALK_WINDOW = 64 << 20


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    argv: tuple[str, ...]
    ok_exit: frozenset[int] = frozenset({0})


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    max_rss_kb: int
    exit_code: int


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    command: str
    packets: int
    wall_s: tuple[float, ...]
    best_wall_s: float | None
    packets_per_s: float | None
    max_rss_mb: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Machine:
    nproc: int
    cpu_model: str
    memory_gib: float
    kernel: str


@dataclass(frozen=True, slots=True)
class Report:
    capture: str
    packets: int
    megabytes: float
    machine: Machine
    versions: dict[str, str]
    repeat: int
    rss_floor_mb: float
    results: tuple[Result, ...]


# --- the Python baseline -------------------------------------------------------------------------


def walk_pcap(path: Path) -> tuple[int, int]:
    """Count packets and captured bytes by walking the record headers of a classic pcap.

    Each record's bytes are sliced out, as any Python reader must do before parsing, so this is
    the most a per-packet Python loop can reach on this machine. Pages already walked are
    dropped from the mapping (the page cache keeps them), so the RSS stays at the working set.
    """
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        endian = PCAP_MAGICS.get(m[:4])
        if endian is None:
            raise ValueError(f"{path}: not a classic pcap file")
        unpack = struct.Struct(endian + "IIII").unpack_from
        size = len(m)
        off = PCAP_FILE_HEADER
        packets = captured = 0
        while off + PCAP_RECORD_HEADER <= size:
            limit = min(size, off + WALK_WINDOW)
            while off + PCAP_RECORD_HEADER <= limit:
                caplen = unpack(m, off)[2]
                start = off + PCAP_RECORD_HEADER
                data = m[start : start + caplen]
                captured += len(data)
                packets += 1
                off = start + caplen
            m.madvise(mmap.MADV_DONTNEED, 0, min(off, size) // mmap.PAGESIZE * mmap.PAGESIZE)
        if off != size:
            raise ValueError(f"{path}: truncated record at offset {off}")
    return packets, captured


# --- measuring -----------------------------------------------------------------------------------


def measure(argv: Sequence[str]) -> tuple[Run, str]:
    """Run one command with stdin/stdout on /dev/null; return its run and its stderr's tail.

    The child is made with fork, not posix_spawn: a vfork-style child inherits the parent's
    peak RSS into its own ru_maxrss at exec, while a forked one starts from the parent's
    current RSS (the floor that ``spawn_floor_mb`` reports).
    """
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _exec_child(argv, err.fileno())
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - started
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - STDERR_TAIL))
        tail = err.read().decode("utf-8", "backslashreplace").strip()
    # ru_maxrss is in kilobytes on Linux.
    return Run(wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)), tail


def _exec_child(argv: Sequence[str], stderr_fd: int) -> None:
    """In the forked child: redirect, exec, and never return."""
    try:
        null_in = os.open(os.devnull, os.O_RDONLY)
        null_out = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null_in, 0)
        os.dup2(null_out, 1)
        os.dup2(stderr_fd, 2)
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        os.write(2, f"cannot run {argv[0]}: {exc}\n".encode())
    finally:
        os._exit(127)


def spawn_floor_mb() -> float:
    """Max RSS reported for `true`: the least any measured command can show."""
    run, _ = measure(["true"])
    return run.max_rss_kb / 1024


def bench(job: Job, packets: int, repeat: int) -> Result:
    runs: list[Run] = []
    error = None
    if shutil.which(job.argv[0]) is None:
        return Result(
            job.name,
            shlex.join(job.argv),
            packets,
            (),
            None,
            None,
            None,
            f"not found: {job.argv[0]}",
        )
    for _ in range(repeat):
        run, tail = measure(job.argv)
        runs.append(run)
        if run.exit_code not in job.ok_exit:
            error = f"exit {run.exit_code}: {tail.splitlines()[-1] if tail else ''}".rstrip()
            break
    command = shlex.join(job.argv)
    walls = tuple(round(r.wall_s, 3) for r in runs)
    if error is not None or not runs:
        return Result(job.name, command, packets, walls, None, None, None, error)
    best = min(r.wall_s for r in runs)
    rss_mb = max(r.max_rss_kb for r in runs) / 1024
    return Result(job.name, command, packets, walls, round(best, 3), packets / best, rss_mb, None)


def jobs_for(args: argparse.Namespace, capture: str) -> list[Job]:
    jobs: list[Job] = []
    if "sensor" not in args.skip:
        base = [*shlex.split(args.sensor_cmd), "analyze", "--format", "json"]
        extra = shlex.split(args.sensor_args)
        ok = frozenset(args.sensor_ok_exit)
        # Sessions only (what incident response asks first), and every flow as well.
        for label, flows in (("", []), (" --flows", ["--flows"])):
            jobs.append(Job(f"rmm-sensor{label}", (*base, *flows, *extra, capture), ok))
            for n in args.workers:
                with_workers = (*base, *flows, *extra, "--workers", str(n), capture)
                jobs.append(Job(f"rmm-sensor{label} --workers {n}", with_workers, ok))
    if "ndpi" not in args.skip:
        # -q: no per-flow report; detection itself runs in full.
        jobs.append(Job("ndpiReader", ("ndpiReader", "-i", capture, "-q")))
    if "tshark" not in args.skip:
        fields = ["frame.number", "tls.handshake.extensions_server_name", "dns.qry.name"]
        fields.append("http.host")
        argv = ["tshark", "-r", capture, "-n", "-q", "-T", "fields"]
        for field in fields:
            argv += ["-e", field]
        jobs.append(Job("tshark", tuple(argv)))
    if "python" not in args.skip:
        jobs.append(
            Job("python mmap walk", (sys.executable, str(Path(__file__)), "--walk", capture))
        )
    return jobs


# --- describing the machine ----------------------------------------------------------------------


def first_line(argv: Sequence[str], pattern: str = "") -> str:
    """The first output line of a version command (matching pattern), or 'unknown'."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="backslashreplace",
            timeout=VERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip() and re.search(pattern, line):
            return line.strip()
    return "unknown"


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for key in ("model name", "Model", "cpu model", "Hardware"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024**2 if match else None


def machine() -> Machine:
    return Machine(
        nproc=len(os.sched_getaffinity(0)),
        cpu_model=cpu_model(),
        memory_gib=round(memory_gib() or 0.0, 1),
        kernel=platform.release(),
    )


def versions(args: argparse.Namespace) -> dict[str, str]:
    found: dict[str, str] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}"
    }
    if "sensor" not in args.skip:
        found["rmm-sensor"] = first_line([*shlex.split(args.sensor_cmd), "--version"])
    if "ndpi" not in args.skip:
        ndpi = first_line(["ndpiReader", "-h"], r"nDPI")
        package = first_line(["dpkg-query", "-W", "-f", "${Version}", "libndpi-bin"])
        found["ndpiReader"] = f"{ndpi} (libndpi-bin {package})"
    if "tshark" not in args.skip:
        found["tshark"] = first_line(["tshark", "-v"], r"TShark")
    return found


# --- report --------------------------------------------------------------------------------------


def markdown(report: Report) -> str:
    mach = report.machine
    lines = [
        "# rmm-sensor benchmark",
        "",
        f"- capture: `{report.capture}`: {report.packets:,} packets, {report.megabytes:.1f} MB",
        f"- machine: {mach.nproc} CPUs (nproc), {mach.cpu_model}, {mach.memory_gib} GiB RAM, "
        f"Linux {mach.kernel}",
    ]
    lines += [f"- {name}: {value}" for name, value in report.versions.items()]
    lines += [
        f"- each command run {report.repeat} times: best wall time, its packets/s, largest max RSS "
        f"(any child of this harness shows at least {report.rss_floor_mb:.0f} MB)",
        "",
        "| tool | packets/s | best wall (s) | max RSS (MB) | all runs (s) | command |",
        "|---|---:|---:|---:|---|---|",
    ]
    results = report.results
    for r in results:
        runs = ", ".join(f"{w:.2f}" for w in r.wall_s) or "-"
        if r.error is not None or r.packets_per_s is None or r.max_rss_mb is None:
            lines.append(f"| {r.name} | failed | - | - | {runs} | `{r.command}` |")
            continue
        lines.append(
            f"| {r.name} | {r.packets_per_s:,.0f} | {r.best_wall_s:.2f} | {r.max_rss_mb:,.0f} "
            f"| {runs} | `{r.command}` |"
        )
    failures = [r for r in results if r.error is not None]
    if failures:
        lines.append("")
        lines += [f"- {r.name} failed: {r.error}" for r in failures]
    return "\n".join(lines) + "\n"


def exit_codes(text: str) -> list[int]:
    """Parse "0" or "0,1"."""
    return [int(part) for part in text.split(",") if part.strip()]


def worker_counts(text: str) -> list[int]:
    """Parse "2" or "2,4" (empty: none)."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("worker counts must be positive")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (default 3)")
    parser.add_argument(
        "--sensor-cmd", default=str(DEFAULT_SENSOR), help="rmm-sensor command (shell words)"
    )
    parser.add_argument("--sensor-args", default="", help="extra arguments for analyze")
    parser.add_argument(
        "--sensor-ok-exit",
        type=exit_codes,
        default=[0, 1],
        metavar="N[,N...]",
        help="sensor exit codes that mean success (default 0,1: 1 = unsanctioned tool seen)",
    )
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[2],
        metavar="N[,N...]",
        help='also time the sensor with --workers N for each N (default 2; "" for none)',
    )
    parser.add_argument(
        "--skip", action="append", default=[], choices=TOOLS, help="leave a tool out (repeatable)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--walk", type=Path, metavar="PCAP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.walk is not None:
        # Child mode for the Python baseline: the walk itself is what gets timed.
        print(*walk_pcap(args.walk))
        return 0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    capture = args.capture.resolve()
    if not capture.is_file():
        parser.error(f"{capture} not found: run bench/make_capture.py first")

    # Counting also pulls the file into the page cache, so the first timed run reads warm.
    packets, _ = walk_pcap(capture)
    tool_versions = versions(args)
    floor = spawn_floor_mb()
    results = []
    for job in jobs_for(args, str(capture)):
        print(f"running {job.name} x{args.repeat} ...", file=sys.stderr, flush=True)
        results.append(bench(job, packets, args.repeat))
    report = Report(
        capture=str(capture),
        packets=packets,
        megabytes=round(capture.stat().st_size / 1e6, 1),
        machine=machine(),
        versions=tool_versions,
        repeat=args.repeat,
        rss_floor_mb=round(floor, 1),
        results=tuple(results),
    )
    sys.stdout.write(markdown(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 1 if any(r.error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
