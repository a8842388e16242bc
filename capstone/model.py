"""The record model: what a valid event is, and how a failed validation reads."""

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
)

from capstone.fates import Reason
from capstone.timeutil import to_utc_naive

__all__ = [
    "MAX_TEXT_LENGTH",
    "Event",
    "iso_text_only",
    "no_separators",
    "number_not_bool",
    "reasons_from_error",
]

MAX_TEXT_LENGTH = 256
"""Longest `key` or `name` accepted; longer ones are rejected, never truncated."""


def number_not_bool(value: Any) -> Any:
    if type(value) is float:  # the common case first: this runs for every record
        if not math.isfinite(value):
            raise ValueError("NaN and Infinity are not allowed")
        return value
    # bool is an int subclass, so pydantic would read true as 1.0; an event value never means that.
    if isinstance(value, bool):
        raise ValueError("booleans are not numbers")
    if isinstance(value, str) and "_" in value:
        no_separators(value)
    return value


def no_separators(text: str) -> None:
    """Python, and so pydantic, reads "1_000" as 1000; in a data file that is a typo or a code."""
    try:
        float(text)
    except ValueError:
        return  # not a number with or without them: pydantic says what is wrong
    raise ValueError("digit separators (_) are not part of a number")


def iso_text_only(value: Any) -> Any:
    # pydantic would read a number, or digits as text, as Unix seconds; capstone promises
    # ISO-8601 text only, which always starts with a four-digit year and a dash.
    if not isinstance(value, str) or value[4:5] != "-":
        raise ValueError("must be an ISO-8601 timestamp string such as 2025-01-15T09:30:00")
    return value


Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH)
]


class Event(BaseModel):
    """One event: key, name, value, ts. Unknown fields are kept in `model_extra`."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    key: Text
    name: Text
    value: Annotated[float, BeforeValidator(number_not_bool)]
    ts: Annotated[datetime, BeforeValidator(iso_text_only), AfterValidator(to_utc_naive)]


def reasons_from_error(error: ValidationError) -> list[Reason]:
    """One reason per failing field: code `field.type` and a message naming the field."""
    reasons: list[Reason] = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "record"
        kind = "invalid" if item["type"] == "value_error" else item["type"]
        message = item["msg"].removeprefix("Value error, ")
        reasons.append((f"{field}.{kind}", f"{field}: {message}"))
    return reasons
