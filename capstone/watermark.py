"""The watermark: the newest event time a pipeline has staged, so reruns skip what they saw."""

from datetime import datetime, timedelta

from capstone.errors import ConfigError, WatermarkError
from capstone.timeutil import format_ts, later, parse_ts

__all__ = ["advance", "check_stored", "parse_requested"]


def check_stored(
    pipeline: str, raw: str | None, now: datetime, tolerance: timedelta
) -> datetime | None:
    """Validate a stored watermark before a run trusts it; a bad one stops the run."""
    if raw is None:
        return None
    fix = f"repair it with `capstone reset-watermark --pipeline {pipeline}` (add --to TS to set it)"
    try:
        value = parse_ts(raw)
    except ValueError:
        raise WatermarkError(
            f"stored watermark of pipeline {pipeline!r} is {raw[:60]!r}, not a timestamp; {fix}"
        ) from None
    if value > later(now, tolerance):
        raise WatermarkError(
            f"stored watermark of pipeline {pipeline!r} ({format_ts(value)}) lies in the future "
            f"(now is {format_ts(now)} UTC), so every record would be skipped; {fix}"
        )
    return value


def parse_requested(text: str, now: datetime, tolerance: timedelta) -> str:
    """Validate a watermark an operator asks for and return it in canonical form (a bad one is a
    bad option value: ConfigError, exit 2)."""
    try:
        value = parse_ts(text)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not an ISO-8601 timestamp; use a form such as 2025-01-15T12:00:00"
        ) from None
    if value > later(now, tolerance):
        raise ConfigError(
            f"{format_ts(value)} lies in the future (now is {format_ts(now)} UTC); "
            "choose a time that has passed"
        )
    return format_ts(value)


def advance(old: datetime | None, newest_staged: datetime | None) -> datetime | None:
    """max(old, newest staged); rejected and skipped records never move it."""
    if old is None:
        return newest_staged
    if newest_staged is None:
        return old
    return max(old, newest_staged)
