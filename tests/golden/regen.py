"""Regenerate the golden outputs in tests/golden/ from the captures in pcaps/.

Each ``tests/golden/<capture>.jsonl`` holds the session records that
``rmm-sensor analyze --format json --signatures signatures <capture>`` prints (no ``--flows``,
default configuration), byte for byte and in output order. tests/test_golden.py compares the
current output with them.

Run it from the repository root after an intended change of the output, then read the diff
before committing it:

    .venv/bin/python tests/golden/regen.py
    git diff tests/golden/
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PCAP_DIR = ROOT / "pcaps"
GOLDEN_DIR = ROOT / "tests" / "golden"
SIGNATURES = ROOT / "signatures"
KEPT_EVENTS = frozenset({"session"})
REGEN_COMMAND = ".venv/bin/python tests/golden/regen.py"


def captures() -> list[Path]:
    return sorted(PCAP_DIR.glob("*.pcap"))


def golden_path(capture: Path) -> Path:
    return GOLDEN_DIR / f"{capture.stem}.jsonl"


def current_output(capture: Path) -> str:
    """The session lines `rmm-sensor analyze --format json` prints for one capture."""
    from sensor.cli import main

    out = io.StringIO()
    argv = ["analyze", "--format", "json", "--signatures", str(SIGNATURES), str(capture)]
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code not in (0, 1):
        raise RuntimeError(f"rmm-sensor analyze {capture} exited with status {code}")
    kept = [
        line
        for line in out.getvalue().splitlines()
        if json.loads(line).get("event_type") in KEPT_EVENTS
    ]
    return "".join(line + "\n" for line in kept)


def regenerate(selected: Sequence[Path]) -> list[Path]:
    """Write the golden file of every selected capture whose output changed; return those."""
    changed = []
    for capture in selected:
        path = golden_path(capture)
        text = current_output(capture)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def stale() -> list[Path]:
    """Golden files whose capture no longer exists."""
    wanted = {golden_path(c) for c in captures()}
    return sorted(p for p in GOLDEN_DIR.glob("*.jsonl") if p not in wanted)


def main(argv: Sequence[str]) -> int:
    selected = [Path(a).resolve() for a in argv] or captures()
    for capture in selected:
        if capture.parent != PCAP_DIR or not capture.is_file():
            print(f"regen: {capture} is not a capture in {PCAP_DIR}", file=sys.stderr)
            return 2
    changed = regenerate(selected)
    for path in changed:
        print(f"updated {path.relative_to(ROOT)}")
    for path in stale():
        path.unlink()
        print(f"removed {path.relative_to(ROOT)} (its capture is gone)")
    if not changed:
        print(f"{len(selected)} golden files already up to date")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # the checkout's sensor package, installed or not
    sys.exit(main(sys.argv[1:]))
