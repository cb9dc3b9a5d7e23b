"""Version strings as the wire shows them, compared numerically ("19.2.24707.7131" < "23.9.8")."""

from __future__ import annotations

import re

_HEAD = re.compile(r"[0-9]+(?:\.[0-9]+)*")
# Real versions have a handful of short parts. Beyond these the text is not a version, and
# int() of a part over 4300 digits would raise ValueError: such text is never outdated.
MAX_PARTS = 8
MAX_DIGITS = 12


def version_key(text: str) -> tuple[int, ...]:
    """The leading dotted numbers: '23.9.8.8811-2863243764' -> (23, 9, 8, 8811); () if none."""
    head = _HEAD.match(text.strip())
    if head is None:
        return ()
    parts = head.group(0).split(".")
    if len(parts) > MAX_PARTS or any(len(p) > MAX_DIGITS for p in parts):
        return ()
    return tuple(int(p) for p in parts)


def older_than(version: str, minimum: str) -> bool:
    """True when ``version`` is known and below ``minimum`` (missing parts count as zero)."""
    have, want = version_key(version), version_key(minimum)
    if not have or not want:
        return False
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) < want + (0,) * (width - len(want))
