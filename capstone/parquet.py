"""Reading Parquet files with pyarrow (the optional extra `capstone[parquet]`).

A Parquet file is read one record batch at a time (`ParquetFile.iter_batches`), so memory
follows the batch, not the file. Each row becomes a record like a JSON object's: the same model
validates it, its position is its row number (from 1), and a rejected row's raw text is the row
written as JSON. Values Arrow holds in types JSON lacks are handed to the model in the forms it
reads from JSON: timestamps and dates as ISO-8601 text (with the offset of a zoned timestamp),
decimals as their exact text, binary as text; structs and lists stay objects and lists for
`json` fields (their nested values converted the same way).
"""

import base64
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from capstone._jsonarray import MAX_RECORD_BYTES, TooLarge
from capstone.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["INSTALL_HINT", "parquet_rows"]

INSTALL_HINT = "reading Parquet needs pyarrow; install it with: pip install 'capstone[parquet]'"

_BATCH_ROWS = 10_000
"""Rows per record batch read: a few MB of Python objects for a typical event table."""


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return pyarrow.parquet


def parquet_rows(
    path: str, name: str, limit: int = MAX_RECORD_BYTES
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(row number, the row as JSON text, the row) for every row of the Parquet file at `path`;
    InputError when pyarrow is missing or the file is not Parquet it can read, TooLarge for a
    row whose JSON text is longer than `limit`."""
    parquet = _pyarrow()
    import pyarrow as pa

    try:
        # One thread, no pre-buffering: memory follows the batch being read, not a read-ahead.
        reader = parquet.ParquetFile(path, memory_map=False, pre_buffer=False)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{name} is not a Parquet file capstone can read ({error})") from None
    converters = _converters(reader.schema_arrow)
    number = 0
    try:
        for batch in reader.iter_batches(batch_size=_BATCH_ROWS, use_threads=False):
            for row in batch.to_pylist():
                number += 1
                for column, convert in converters:
                    value = row[column]
                    if value is not None:
                        row[column] = convert(value)
                raw = orjson.dumps(row, default=_plain).decode()
                if len(raw) > limit:
                    raise TooLarge(name, f"row {number}", limit)
                yield number, raw, row
    except pa.ArrowException as error:
        raise InputError(
            f"{name}: reading Parquet failed after row {number} ({error}); the file may be cut "
            "off or damaged"
        ) from None
    finally:
        reader.close()
        # Arrow's allocator keeps freed pages for reuse; the merge that follows needs them more.
        pa.default_memory_pool().release_unused()


def _converters(schema: "pa.Schema") -> list[tuple[str, Callable[[Any], Any]]]:
    """Per column whose Python values are not JSON's, the function that makes them so; columns
    of numbers, text and booleans need none and cost nothing per row."""
    import pyarrow as pa

    plain = (
        pa.types.is_integer,
        pa.types.is_floating,
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_boolean,
        pa.types.is_null,
    )
    return [
        (field.name, _as_json_value)
        for field in schema
        if not any(check(field.type) for check in plain)
    ]


def _as_json_value(value: Any) -> Any:
    """A value from Arrow in the form the record model reads from JSON."""
    if isinstance(value, dict):
        return {key: None if v is None else _as_json_value(v) for key, v in value.items()}
    if isinstance(value, list):
        return [None if v is None else _as_json_value(v) for v in value]
    if isinstance(value, tuple):  # a map column: (key, value) pairs
        return [_as_json_value(v) for v in value]
    if isinstance(value, (int, float, str, bool)):
        return value
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    return str(value)
