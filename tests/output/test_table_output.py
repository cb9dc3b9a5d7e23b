"""The table output: what an analyst reads first, so its rows come in time order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "pcaps" / "demo-mixed.pcap"
MAIN = "import sys; from sensor.cli import main; sys.exit(main())"


def analyze(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", MAIN, "analyze", *args, str(DEMO)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the demo holds unsanctioned sessions
    return done.stdout


def section(text: str, title: str) -> list[str]:
    """The data rows of one table (after its header and rule lines)."""
    lines = text.split(f"{title} (", 1)[1].splitlines()
    rows = []
    for line in lines[3:]:
        if not line.strip():
            break
        rows.append(line)
    return rows


def test_alerts_and_sessions_are_listed_in_time_order() -> None:
    text = analyze()
    events = [json.loads(line) for line in analyze("--format", "json").splitlines()]
    alerts = [e for e in events if e["event_type"] == "alert"]
    # The demo's follow-up alert (sessions condensed into it) is written after later alerts.
    stamps = [a["timestamp"] for a in alerts]
    assert stamps != sorted(stamps)
    assert any(a["alert"]["repeats"] > 0 for a in alerts)

    alert_rows = section(text, "Alerts")
    session_rows = section(text, "Remote-access sessions")
    assert len(alert_rows) == len(alerts)
    assert len(session_rows) == sum(e["event_type"] == "session" for e in events)
    for rows in (alert_rows, session_rows):
        times = [row[:19] for row in rows]
        assert times == sorted(times)
    assert sorted(row[:19] for row in alert_rows) == sorted(
        s[:19].replace("T", " ") for s in stamps
    )
