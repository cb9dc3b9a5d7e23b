"""Refuse to test a stale build: a compiled module older than its source would shadow it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = [
        str(so.relative_to(ROOT))
        for so in sorted((ROOT / "sensor").rglob("*.so"))
        if (py := so.with_name(so.name.split(".", 1)[0] + ".py")).exists()
        and py.stat().st_mtime > so.stat().st_mtime
    ]
    if stale:
        pytest.exit(
            f"compiled modules are older than their sources ({', '.join(stale)}): "
            "run `make test` (or `pip install -e .`) to rebuild them",
            returncode=2,
        )
