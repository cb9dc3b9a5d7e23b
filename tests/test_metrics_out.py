"""`analyze --metrics-out`: the metrics file, and no Prometheus library in runs that write none."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sensor.capture.files import read_frames

DEMO = Path(__file__).resolve().parent.parent / "pcaps" / "demo-mixed.pcap"

# Runs `rmm-sensor` in a fresh interpreter, then says on stderr whether the library was loaded.
PROBE = (
    "import sys; from sensor.cli import main; code = main(sys.argv[1:]); "
    "print('prometheus_client' in sys.modules, file=sys.stderr); sys.exit(code)"
)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done


def alerts(done: subprocess.CompletedProcess[str]) -> int:
    return sum(json.loads(line)["event_type"] == "alert" for line in done.stdout.splitlines())


def test_a_run_without_a_metrics_file_does_not_load_the_prometheus_library() -> None:
    done = run("analyze", "--format", "json", str(DEMO))
    assert done.stderr.splitlines()[-1] == "False"
    assert alerts(done) > 0  # the run did its work


def test_the_metrics_file_counts_the_run_without_created_series(tmp_path: Path) -> None:
    out = tmp_path / "rmm.prom"
    done = run("analyze", "--format", "json", "--metrics-out", str(out), str(DEMO))
    assert done.stderr.splitlines()[-1] == "True"
    text = out.read_text(encoding="utf-8")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("rmm_sensor_packets_total", ())] == sum(1 for _ in read_frames(str(DEMO)))
    counted = sum(v for (name, _), v in samples.items() if name == "rmm_sensor_alerts_total")
    assert counted == alerts(done) > 0
    assert not [name for name, _ in samples if name.endswith("_created")]
    assert all(name.startswith("rmm_sensor_") for name, _ in samples)
