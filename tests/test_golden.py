"""Golden outputs: `rmm-sensor analyze --format json` on every capture in pcaps/, byte for byte.

Any change of a session record (a field, a value, the order) fails here with a diff. When the
change is intended, regenerate with tests/golden/regen.py and review the diff before committing.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from tests.golden.regen import (
    GOLDEN_DIR,
    KEPT_EVENTS,
    REGEN_COMMAND,
    captures,
    current_output,
    golden_path,
    stale,
)

MAX_DIFF_LINES = 200


def readable(text: str) -> list[str]:
    """One JSON record per line -> indented JSON, so a diff shows the field that changed."""
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            lines.append(f"(line {number} is not JSON) {line}")
            continue
        lines.append(f"--- record {number}")
        lines += json.dumps(record, indent=2, ensure_ascii=False).splitlines()
    return lines


def explain(capture: Path, expected: str, actual: str) -> str:
    golden = golden_path(capture)
    diff = list(
        difflib.unified_diff(
            readable(expected),
            readable(actual),
            fromfile=f"{golden.name} (golden)",
            tofile=f"{capture.name} (current output)",
            lineterm="",
        )
    )
    if not diff:  # same records, different bytes (spacing, key order, line ends)
        diff = list(
            difflib.unified_diff(
                expected.splitlines(), actual.splitlines(), "golden", "current", lineterm=""
            )
        )
    if len(diff) > MAX_DIFF_LINES:
        diff = [*diff[:MAX_DIFF_LINES], f"... {len(diff) - MAX_DIFF_LINES} more diff lines"]
    n_expected, n_actual = len(expected.splitlines()), len(actual.splitlines())
    return "\n".join(
        [
            f"{capture.name}: output differs from {golden.relative_to(GOLDEN_DIR.parents[1])} "
            f"({n_expected} records expected, {n_actual} produced)",
            *diff,
            "",
            "If this change is intended, run from the repository root:",
            f"    {REGEN_COMMAND}",
            "then review `git diff tests/golden/` and commit the golden files with the change.",
        ]
    )


CAPTURES = captures()


def test_there_are_captures() -> None:
    assert len(CAPTURES) >= 17


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_output_matches_golden_file(capture: Path) -> None:
    golden = golden_path(capture)
    if not golden.exists():
        pytest.fail(f"{golden} is missing: run {REGEN_COMMAND}", pytrace=False)
    expected = golden.read_text(encoding="utf-8")
    actual = current_output(capture)
    if actual != expected:
        pytest.fail(explain(capture, expected, actual), pytrace=False)


def test_no_golden_file_without_its_capture() -> None:
    assert stale() == [], f"remove them, or run {REGEN_COMMAND}"


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_golden_file_holds_only_kept_records(capture: Path) -> None:
    text = golden_path(capture).read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert all(r["event_type"] in KEPT_EVENTS for r in records)
    assert [r["session_id"] for r in records] == list(range(1, len(records) + 1))
    # Negative captures hold nothing; every other one holds at least one session.
    assert (records == []) == capture.name.startswith("neg-")


# --------------------------------------------------------------------------------------------
# The failure message itself


def _golden_text(name: str) -> str:
    return (GOLDEN_DIR / name).read_text(encoding="utf-8")


def test_failure_message_shows_the_changed_field_and_the_fix() -> None:
    capture = Path("sc-relay-m1-8041.pcap")
    expected = _golden_text("sc-relay-m1-8041.jsonl")
    actual = expected.replace('"confidence":"high"', '"confidence":"medium"', 1)
    assert actual != expected
    message = explain(capture, expected, actual)
    assert '\n-    "confidence": "high",\n+    "confidence": "medium",\n' in message
    assert REGEN_COMMAND in message
    assert "git diff tests/golden/" in message
    assert "1 records expected, 1 produced" in message


def test_failure_message_for_a_missing_record_and_for_byte_differences() -> None:
    capture = Path("ad-discovery.pcap")
    expected = _golden_text("ad-discovery.jsonl")
    first = expected.splitlines(keepends=True)[0]
    assert "2 records expected, 1 produced" in explain(capture, expected, first)
    spaced = expected.replace('","', '", "')
    message = explain(capture, expected, spaced)
    assert "golden" in message
    assert "current" in message
    assert '", "' in message
