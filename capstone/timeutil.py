"""Timestamps and durations: one canonical text form so SQL can compare timestamps as strings."""

import re
from datetime import UTC, datetime, timedelta

from capstone.errors import ConfigError

__all__ = [
    "earlier",
    "format_ts",
    "later",
    "parse_duration",
    "parse_ts",
    "to_utc_naive",
    "utcnow",
]

_DURATION_PART = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def utcnow() -> datetime:
    """The current time in UTC, naive (capstone stores naive UTC everywhere)."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_utc_naive(value: datetime) -> datetime:
    """Naive timestamps already mean UTC; aware ones are converted to UTC and made naive."""
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        # 0001-01-01T00:00+05:00 is a valid text but has no UTC time in years 1-9999.
        raise ValueError("lies outside the years 1-9999 once converted to UTC") from None


def format_ts(value: datetime) -> str:
    """ISO-8601 without offset. Text order is time order: the fields are fixed-width, and the
    fraction (left out when zero) only ever extends the text of the same second."""
    return value.isoformat()


EPOCH = datetime(1970, 1, 1)
MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """A naive UTC time as whole microseconds since 1970 (negative before): how lineage stores
    event times. Exact, unlike a float timestamp."""
    return (value - EPOCH) // MICROSECOND


def parse_ts(text: str) -> datetime:
    """Parse an ISO-8601 timestamp to naive UTC; raises ValueError when it is not one."""
    return to_utc_naive(datetime.fromisoformat(text))


_LONGEST = timedelta(days=999_999_999)
"""The longest timedelta Python can hold."""


def parse_duration(text: str) -> timedelta:
    """Parse '90s', '15m', '2h', '3d' or combinations such as '1h30m' into a timedelta."""
    cleaned = text.strip().lower()
    if cleaned in {"", "0"}:
        return timedelta(0)
    parts = _DURATION_PART.findall(cleaned)
    if not parts or _DURATION_PART.sub("", cleaned).strip():
        raise ConfigError(
            f"cannot read duration {text!r}: use a number and a unit, such as 90s, 15m, 2h or 3d"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    if seconds > _LONGEST.total_seconds():
        raise ConfigError(
            f"duration {text!r} is longer than {_LONGEST.days:,} days; use a shorter one"
        )
    return timedelta(seconds=seconds)


def earlier(moment: datetime, span: timedelta) -> datetime:
    """`moment - span`, or the earliest datetime when that is before year 1."""
    try:
        return moment - span
    except OverflowError:
        return datetime.min


def later(moment: datetime, span: timedelta) -> datetime:
    """`moment + span`, or the latest datetime when that is after year 9999."""
    try:
        return moment + span
    except OverflowError:
        return datetime.max
