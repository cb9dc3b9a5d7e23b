"""Safe display of untrusted text (wire data) in terminals, logs and syslog.

``escape`` turns every character that could move the cursor, start a terminal escape sequence,
split a log line, reorder text (bidi overrides) or hide itself (zero-width format characters)
into a visible backslash escape. The backslash itself is doubled, so the output can be read
back unambiguously: it is a valid Python string literal body.
"""

from __future__ import annotations

import re
import unicodedata
from types import MappingProxyType
from typing import Final

__all__ = ["escape"]

ELLIPSIS: Final = "\u2026"

# Everything outside printable ASCII (minus the backslash) needs a per-character decision.
_NOT_PLAIN: Final = re.compile(r"[^\x20-\x5b\x5d-\x7e]")
_SHORT: Final = MappingProxyType({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
# Categories that are never shown raw: controls, lone surrogates (not encodable as UTF-8),
# line and paragraph separators (they break lines in some viewers), format characters.
_ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp", "Cf"})
# Joiners are format characters that emoji sequences and several scripts need; they cannot
# reorder or break text, so they stay.
_KEPT_FORMAT: Final = frozenset({"\u200c", "\u200d"})


def escape(text: str, *, max_len: int | None = None) -> str:
    """Return ``text`` with control, bidi and invisible format characters escaped.

    With ``max_len``, the result is at most ``max_len`` characters: when it would be longer it
    is cut (never inside an escape) and ends with "…". Raises ``ValueError`` for a negative
    ``max_len``.
    """
    if max_len is not None and max_len < 0:
        raise ValueError("max_len must not be negative")
    escaped = _NOT_PLAIN.sub(_escape_match, text)
    if max_len is None or len(escaped) <= max_len:
        return escaped
    return _truncate(text, max_len)


def _escape_match(match: re.Match[str]) -> str:
    return _escape_char(match.group())


def _escape_char(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    if char.isprintable() or char in _KEPT_FORMAT:
        return char
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char  # other "unprintable" characters: spaces, private use, unassigned
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _truncate(text: str, max_len: int) -> str:
    if max_len == 0:
        return ""
    budget = max_len - len(ELLIPSIS)
    pieces: list[str] = []
    used = 0
    # Every character yields at least one output character, so ``budget`` characters suffice.
    for char in text[:budget]:
        piece = _escape_char(char) if _NOT_PLAIN.match(char) else char
        if used + len(piece) > budget:
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces) + ELLIPSIS
