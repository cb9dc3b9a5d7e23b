"""Packet times far outside the calendar ``datetime`` knows (years 1 to 9999).

A pcapng interface may shift its packets by any 64-bit number of seconds (``if_tsoffset``), and a
damaged or hostile file does. The sample's sessions moved about 146 billion years ahead, and as
far back, are still written by every output, and the sanctioned-entry expiry check still decides
(a time past the calendar's end is past every expiry date).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensor.capture.files import read_frames
from sensor.timestamps import iso_time, utc_date
from tests import capbuild

REPO = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
SENSOR_MAIN = "import sys; from sensor.cli import main; sys.exit(main())"
FIRST_DAY_S = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST_SECOND_S = 253_402_300_799  # 9999-12-31T23:59:59Z


def shifted_capture(tmp_path: Path, offset_s: int) -> Path:
    frames = [
        (ts + offset_s * NS, lt, data, wire)
        for ts, lt, data, wire in capbuild.plain(
            read_frames(str(REPO / "pcaps" / "demo-mixed.pcap"))
        )
    ]
    iface = capbuild.Iface(tsoffset=offset_s)
    built = capbuild.pcapng([[iface]], frames, [(0, 0, "epb")] * len(frames), extras=False)
    path = tmp_path / f"shifted{offset_s}.pcapng"
    path.write_bytes(built.data)
    return path


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", SENSOR_MAIN, "analyze", *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    return done


@pytest.mark.parametrize("offset_s", [1 << 62, -(1 << 62)])
def test_every_output_writes_sessions_dated_beyond_the_calendar(
    tmp_path: Path, offset_s: int
) -> None:
    capture = shifted_capture(tmp_path, offset_s)
    config = tmp_path / "rmm-sensor.yaml"
    config.write_text(
        "sanctioned:\n  - name: Old contract\n    tool: anydesk\n    expires: 2030-01-01\n",
        encoding="utf-8",
    )
    lines = analyze("--config", config, "--format", "json", "--flows", capture).stdout
    events = [json.loads(line) for line in lines.splitlines()]
    sessions = [e for e in events if e["event_type"] == "session"]
    assert len(sessions) == 5
    assert sum(e["event_type"] == "flow" for e in events) >= 5
    years = {int(e["timestamp"][: e["timestamp"].index("-", 1)]) for e in events}
    assert all(y > 9999 for y in years) if offset_s > 0 else all(y < 1 for y in years)
    anydesk = {e["rmm"]["verdict_reason"] for e in sessions if e["rmm"]["tool"] == "anydesk"}
    if offset_s > 0:
        assert anydesk == {"entry 'Old contract' matches but expired on 2030-01-01"}
    else:
        assert anydesk == {"sanctioned by entry 'Old contract'"}
    table = analyze("--flows", capture).stdout
    assert "Remote-access sessions (5)" in table
    assert "Flows (" in table


@given(st.integers(min_value=FIRST_DAY_S * NS, max_value=(LAST_SECOND_S + 1) * NS - 1))
def test_iso_time_agrees_with_datetime_within_its_years(ts_ns: int) -> None:
    sec, ns = divmod(ts_ns, NS)
    d = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=sec)
    expected = (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        f".{ns // 1000:06d}+0000"
    )
    assert iso_time(ts_ns) == expected
    assert utc_date(ts_ns) == d.date()


@given(st.integers(min_value=-(1 << 100), max_value=1 << 100))
def test_iso_time_and_utc_date_take_any_integer(ts_ns: int) -> None:
    text = iso_time(ts_ns)
    assert text.endswith("+0000")
    assert text[-27:-26] == "-"  # ...-MM-DDTHH:MM:SS.ffffff+0000
    day = utc_date(ts_ns)
    if ts_ns >= (LAST_SECOND_S + 1) * NS:
        assert day == dt.date.max
    if ts_ns < FIRST_DAY_S * NS:
        assert day == dt.date.min
