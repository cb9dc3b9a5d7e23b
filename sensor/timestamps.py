"""Packet time as calendar time, for any timestamp a capture can hold (compiled).

A pcapng timestamp is 64 bits of units as small as a nanosecond, and an interface may add a 64-bit
offset in seconds: a damaged or hostile file can place a packet hundreds of thousands of years
away, where ``datetime`` (years 1 to 9999) raises. Output must still be written, so the calendar
is computed with integers here, for every year.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

NS: Final = 1_000_000_000
_S_PER_DAY: Final = 86_400
_EPOCH_DAY: Final = dt.date(1970, 1, 1).toordinal()
_TWO_DIGITS: Final = tuple(f"{n:02d}" for n in range(100))


def civil_date(days: int) -> tuple[int, int, int]:
    """(year, month, day) of the proleptic Gregorian calendar, ``days`` after 1970-01-01.

    Howard Hinnant's ``civil_from_days``: count 400-year eras of 146,097 days from 0000-03-01,
    so that the leap day ends each year of the count. Floor division keeps it right before 1970.
    """
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097  # day of era, 0..146096
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365  # year of era, 0..399
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of year from March 1st, 0..365
    mp = (5 * doy + 2) // 153  # month from March, 0..11
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def iso_time(ts_ns: int) -> str:
    """ISO 8601 UTC with microseconds, as Suricata's EVE writes it (at least four year digits).

    Written with integer division and a table of two-digit strings: it runs three times per flow
    record, and ``divmod`` and format specifications took most of a flow's output time.
    """
    sec = ts_ns // NS
    micros = ts_ns % NS // 1_000
    days = sec // _S_PER_DAY
    rest = sec % _S_PER_DAY
    year, month, day = civil_date(days)
    year_text = str(year) if 1_000 <= year <= 9_999 else f"{year:04d}"
    return (
        f"{year_text}-{_TWO_DIGITS[month]}-{_TWO_DIGITS[day]}T{_TWO_DIGITS[rest // 3_600]}"
        f":{_TWO_DIGITS[rest // 60 % 60]}:{_TWO_DIGITS[rest % 60]}"
        f".{str(1_000_000 + micros)[1:]}+0000"
    )


def utc_date(ts_ns: int) -> dt.date:
    """The UTC day of ``ts_ns``; a time beyond ``datetime``'s years is held at its first or last
    day (a comparison with an expiry date then still says the right thing)."""
    ordinal = _EPOCH_DAY + ts_ns // NS // _S_PER_DAY
    return dt.date.fromordinal(min(max(ordinal, 1), dt.date.max.toordinal()))
