"""Version strings from Server headers, compared with the policy's minimum (protocols.md §1.6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensor.rules.versions import MAX_DIGITS, MAX_PARTS, older_than, version_key

FIX = "23.9.8"  # CVE-2024-1709/-1708 fixed in 23.9.8; everything up to 23.9.7 is affected


@pytest.mark.parametrize(
    ("version", "outdated"),
    [
        ("19.2.24707.7131", True),  # the 2019 build of the pharmacy incident (§1.9)
        ("23.9.7.8804", True),  # the last vulnerable build
        ("23.9.7", True),
        ("23.8.5.8707", True),
        ("22.4.20001.1", True),
        ("2.5.3553.3951", True),
        ("23.9.8", False),  # the fix itself
        ("23.9.8.8811-2863243764", False),  # the Server header form from §1.5
        ("23.9.8.0", False),
        ("23.9.10.8817", False),  # numeric, not text, comparison: 10 > 8
        ("23.10.1", False),
        ("24.1", False),
        ("24.1.0.8811", False),
        ("100", False),
        ("", False),  # garbage is never outdated
        ("abc", False),
        ("v23.9.7", False),
        ("-1.0", False),
        (".9", False),
        ("beta", False),
        ("1" * 5000, False),  # past int()'s digit limit: not a version
        ("1" * (MAX_DIGITS + 1) + ".0", False),
        (".".join(["1"] * (MAX_PARTS + 1)), False),
    ],
)
def test_older_than_the_fix(version: str, outdated: bool) -> None:
    assert older_than(version, FIX) is outdated


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("19.2.24707.7131", (19, 2, 24707, 7131)),
        ("23.9.8.8811-2863243764", (23, 9, 8, 8811)),
        ("  23.9.7 ", (23, 9, 7)),
        ("23.9.", (23, 9)),
        ("23..9", (23,)),
        ("24.1-beta", (24, 1)),
        ("24", (24,)),
        ("0" * MAX_DIGITS, (0,)),
        (".".join(["7"] * MAX_PARTS), (7,) * MAX_PARTS),
        ("", ()),
        ("x1.2", ()),
        ("٣.٤", ()),  # Arabic-Indic digits are digits to int(), not to a version
    ],
)
def test_version_key(text: str, key: tuple[int, ...]) -> None:
    assert version_key(text) == key


@pytest.mark.parametrize(
    ("version", "minimum", "outdated"),
    [
        ("23.9", "23.9.0", False),  # missing parts count as zero
        ("23.9", "23.9.0.1", True),
        ("23.9.8", "23.9.8", False),
        ("19.2.24707.7131", "19.2.24707.7132", True),
        ("19.2.24707.7131", "19.2", False),
        ("23.9.7.8804", "20", False),
        ("23.9.7", "", False),  # no usable minimum: nothing is outdated
        ("23.9.7", "latest", False),
    ],
)
def test_older_than_any_minimum(version: str, minimum: str, outdated: bool) -> None:
    assert older_than(version, minimum) is outdated


VERSIONS = st.lists(st.integers(0, 10**MAX_DIGITS - 1), min_size=1, max_size=MAX_PARTS).map(
    lambda parts: ".".join(map(str, parts))
)


@given(st.text(max_size=300), st.text(max_size=50))
def test_any_text_compares_without_raising(version: str, minimum: str) -> None:
    key = version_key(version)
    assert len(key) <= MAX_PARTS and all(0 <= n < 10**MAX_DIGITS for n in key)
    assert older_than(version, minimum) in (True, False)


@given(st.binary(max_size=300))
def test_any_wire_bytes_compare_without_raising(raw: bytes) -> None:
    text = raw.decode("utf-8", "backslashreplace")
    assert older_than(text, FIX) in (True, False)


@given(VERSIONS, VERSIONS)
def test_comparison_is_a_strict_order(a: str, b: str) -> None:
    assert not (older_than(a, b) and older_than(b, a))
    assert not older_than(a, a)
    if version_key(a) == version_key(b):
        assert not older_than(a, b)


@given(VERSIONS, VERSIONS, VERSIONS)
def test_comparison_is_transitive(a: str, b: str, c: str) -> None:
    if older_than(a, b) and older_than(b, c):
        assert older_than(a, c)


@given(VERSIONS, st.text(alphabet="-+ _abcdef0123456789", max_size=20))
def test_a_build_suffix_does_not_change_the_order(version: str, suffix: str) -> None:
    tagged = f"{version}-{suffix}"
    assert version_key(tagged) == version_key(version)
    assert older_than(tagged, FIX) is older_than(version, FIX)
