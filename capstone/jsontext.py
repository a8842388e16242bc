"""JSON text that keeps integers beyond 64 bits exact, where orjson cannot.

orjson reads such integers as floats and refuses to write them. A rejected
123456789012345678901234567 must not come back from its dead letter as 1.2345678901234568e+26, a
valid float that a replay would load, nor crash the code that names or exports it. Both
functions take orjson's fast path and fall back to the standard library only for such numbers.
"""

import json
import math
import re
from typing import Any

import orjson

__all__ = ["dumps_exact", "has_non_finite", "loads_exact"]

_LONG_NUMBER = re.compile("[0-9]{20}")
_LONG_NUMBER_BYTES = re.compile(b"[0-9]{20}")


def loads_exact(raw: bytes | str) -> Any:
    """orjson.loads, with integers beyond 64 bits kept as integers.

    Raises orjson.JSONDecodeError for text that is not JSON.
    """
    parsed = orjson.loads(raw)
    found = _LONG_NUMBER_BYTES.search(raw) if isinstance(raw, bytes) else _LONG_NUMBER.search(raw)
    if found:
        try:
            return json.loads(raw)  # valid JSON, orjson said so: only number types can differ
        except RecursionError:
            return parsed
    return parsed


def dumps_exact(value: Any) -> str:
    """Compact JSON text of `value`, as orjson writes it, integers beyond 64 bits included."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def has_non_finite(value: Any) -> bool:
    """Whether a parsed value holds NaN or an infinity anywhere.

    pydantic's JSON parser reads the non-JSON literals NaN and Infinity (and 1e999) into values of
    type Any, and orjson then writes them as null: the stored record would silently differ from
    the input. Iterative, so deep nesting cannot exhaust the stack.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return True
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False
