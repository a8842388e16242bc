"""Event times in the forms feeds write them: ISO-8601 text (the default), Unix epochs in
seconds, milliseconds, microseconds or nanoseconds, or a `strptime` layout, with a time zone for
values that carry none. Every form ends as capstone stores time: naive UTC.

A field declares its form in capstone.toml: `ts = { type = "timestamp", format = "epoch_ms" }`,
or `format = "%d/%m/%Y %H:%M:%S", timezone = "Europe/Paris"`.
"""

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic_core import PydanticCustomError

from capstone.timeutil import to_utc_naive

__all__ = ["EPOCH_UNITS", "check_format", "check_timezone", "parser"]

EPOCH_UNITS = {"epoch_s": 1, "epoch_ms": 1_000, "epoch_us": 1_000_000, "epoch_ns": 1_000_000_000}
"""Units per second of each epoch format."""

_EPOCH = datetime(1970, 1, 1)
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
_STRPTIME_DIRECTIVE = re.compile(r"%[aAwdbBmyYHIpMSfzjUWcxX%GuV:]")


def check_format(value: str) -> str:
    """A field's `format` setting: an epoch unit or a `strptime` layout; ValueError otherwise."""
    if value in EPOCH_UNITS:
        return value
    if not _STRPTIME_DIRECTIVE.search(value):
        raise ValueError(
            f"format {value!r} is neither {', '.join(EPOCH_UNITS)} nor a strptime layout "
            "such as '%d/%m/%Y %H:%M:%S'"
        )
    try:
        datetime.strptime(datetime(2001, 2, 3, 4, 5, 6).strftime(value), value)
    except ValueError as error:
        raise ValueError(
            f"format {value!r} is not a strptime layout capstone can use: {error}"
        ) from None
    return value


def check_timezone(value: str) -> str:
    """A field's `timezone` setting: an IANA zone name; ValueError otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone {value!r} is not a known time zone; use an IANA name such as "
            "'Europe/Paris' or 'UTC'"
        ) from None
    return value


def parser(fmt: str | None, timezone: str | None) -> Callable[[Any], Any] | None:
    """A validator turning a value of the form `fmt` (None: ISO text, left to pydantic) into a
    datetime, or None when pydantic's ISO parsing needs no help."""
    zone = None if timezone is None else ZoneInfo(timezone)
    if fmt in EPOCH_UNITS:
        return _epoch(EPOCH_UNITS[fmt], fmt)
    if fmt is not None:
        return _layout(fmt, zone)
    return None


def in_zone(timezone: str) -> Callable[[datetime], datetime]:
    """An after-validator reading a naive datetime as wall time in `timezone`, then as UTC."""
    zone = ZoneInfo(timezone)

    def convert(value: datetime) -> datetime:
        return to_utc_naive(value.replace(tzinfo=zone) if value.tzinfo is None else value)

    return convert


def _epoch(per_second: int, name: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> datetime:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _mismatch(value, name)
        if isinstance(value, str):
            text = value.strip()
            if not _NUMBER.fullmatch(text):
                raise _mismatch(value, name)
            number: int | float = int(text) if text.lstrip("+-").isdigit() else float(text)
        else:
            number = value
        if isinstance(number, float) and not math.isfinite(number):
            raise _mismatch(value, name)
        # Integers stay exact: a float holds nanoseconds since 1970 only to about 0.2 µs.
        micros = (
            number * 1_000_000 // per_second
            if isinstance(number, int)
            else round(number * 1_000_000 / per_second)
        )
        try:
            return _EPOCH + timedelta(microseconds=micros)
        except OverflowError:
            raise PydanticCustomError(
                "format",
                "{value} {unit} lies outside the years 1-9999",
                {"value": value, "unit": name},
            ) from None

    return convert


def _layout(fmt: str, zone: ZoneInfo | None) -> Callable[[Any], Any]:
    def convert(value: Any) -> datetime:
        if not isinstance(value, str):
            raise _mismatch(value, fmt)
        try:
            moment = datetime.strptime(value.strip(), fmt)
        except ValueError:
            raise _mismatch(value, fmt) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone or UTC)
        return moment

    return convert


def _mismatch(value: Any, fmt: str) -> PydanticCustomError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return PydanticCustomError(
        "format", "{value} does not fit the format {format}", {"value": shown, "format": fmt}
    )
