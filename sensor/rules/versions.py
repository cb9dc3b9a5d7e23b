"""Version strings as the wire shows them, compared numerically ("19.2.24707.7131" < "23.9.8")."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"\d+")


def version_key(text: str) -> tuple[int, ...]:
    """The leading dotted numbers: '23.9.8.8811-2863243764' -> (23, 9, 8, 8811)."""
    head = re.match(r"[0-9][0-9.]*", text.strip())
    if head is None:
        return ()
    return tuple(int(n) for n in _NUMBER.findall(head.group(0)))


def older_than(version: str, minimum: str) -> bool:
    """True when ``version`` is known and below ``minimum`` (missing parts count as zero)."""
    have, want = version_key(version), version_key(minimum)
    if not have or not want:
        return False
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) < want + (0,) * (width - len(want))
