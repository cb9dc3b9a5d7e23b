"""Refuse to test a stale build: a compiled module older than its source would shadow it.

With ``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) hypothesis draws the same examples on every
run, so that whether main passes never depends on the draw. Elsewhere each run draws new ones
(and ``make fuzz`` many more): that is where new failing cases are found, then pinned with
``@example``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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
