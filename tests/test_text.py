"""Tests for escape(): terminal/log safety of untrusted text."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensor.text import ELLIPSIS, escape

# Unicode Bidi_Control characters (UAX #9): marks, embeddings, overrides and isolates.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _unescape(text: str) -> str:
    """Read the escapes back (they follow Python's string-literal syntax)."""
    return text.encode("ascii", "backslashreplace").decode("unicode_escape")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain ascii", "plain ascii"),
        ("", ""),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("line1\r\nline2", "line1\\r\\nline2"),
        ("a\tb", "a\\tb"),
        ("nul\x00byte", "nul\\x00byte"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b31m\x85", "c1\\x9b31m\\x85"),
        ("back\\slash", "back\\\\slash"),
        ("\\x41", "\\\\x41"),
        ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
        ("\u2066iso\u2069 \u200e\u200f\u061c", "\\u2066iso\\u2069 \\u200e\\u200f\\u061c"),
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("soft\xadhyphen", "soft\\xadhyphen"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("lone\ud800surrogate", "lone\\ud800surrogate"),
        ("emoji 🎉👍🏽", "emoji 🎉👍🏽"),
        ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),
        ("bücher.example 例え.jp", "bücher.example 例え.jp"),
        ("nbsp\xa0kept", "nbsp\xa0kept"),
        ("private\ue000use", "private\ue000use"),
    ],
)
def test_escape_table(raw: str, expected: str) -> None:
    assert escape(raw) == expected
    assert _unescape(expected) == raw


@pytest.mark.parametrize(
    ("raw", "max_len", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("eleven char", 10, "eleven ch…"),
        ("abc", 1, "…"),
        ("abc", 0, ""),
        ("", 0, ""),
        ("ab\x1bcd", 5, "ab…"),  # "\x1b" takes 4 characters and is never cut in half
        ("ab\x1bcd", 7, "ab\\x1b…"),
        ("ab\x1bcd", 8, "ab\\x1bcd"),
        ("🎉🎉🎉🎉", 3, "🎉🎉…"),
        ("\\\\\\", 4, "\\\\…"),
    ],
)
def test_truncation(raw: str, max_len: int, expected: str) -> None:
    assert escape(raw, max_len=max_len) == expected


def test_negative_max_len_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_len"):
        escape("x", max_len=-1)


def test_escaping_twice_stays_safe() -> None:
    once = escape("\x1b[0m\u202e\\")
    twice = escape(once)
    assert twice == once.replace("\\", "\\\\")
    assert _unescape(twice) == once


ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)


@given(ANY_TEXT)
def test_no_control_bidi_or_separator_survives(text: str) -> None:
    result = escape(text)
    for char in result:
        category = unicodedata.category(char)
        assert category not in FORBIDDEN_CATEGORIES, repr(char)
        assert char not in BIDI_CONTROLS, repr(char)
        assert category != "Cf" or char in "\u200c\u200d", repr(char)
    result.encode("utf-8")  # no lone surrogates: always writable to a UTF-8 log
    assert _unescape(result) == text


@given(ANY_TEXT, st.integers(0, 40))
def test_truncated_result_is_a_safe_prefix(text: str, max_len: int) -> None:
    full = escape(text)
    cut = escape(text, max_len=max_len)
    assert len(cut) <= max_len
    if len(full) <= max_len:
        assert cut == full
    else:
        if max_len == 0:
            assert cut == ""
        else:
            assert cut.endswith(ELLIPSIS)
        assert full.startswith(cut.removesuffix(ELLIPSIS))
        # Nothing is cut in half: what is kept reads back to a prefix of the input.
        assert text.startswith(_unescape(cut.removesuffix(ELLIPSIS)))
