"""The reject threshold of a file's run: `--max-rejects 100` or `--max-rejects 5%`.

Past it, the file is taken to be the wrong file (another pipeline's, a broken export) rather than
a file with a few bad records: its run fails and keeps nothing, not even dead letters.
"""

import re
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

__all__ = ["ANOTHER_PIPELINE", "MaxRejects", "RejectLimit", "lacking", "over_limit"]

_LIMIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*")


class RejectLimit(BaseModel):
    """At most `count` rejected records, or at most `percent` of a file's records."""

    model_config = ConfigDict(frozen=True)

    count: int | None = None
    percent: float | None = None

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.count}"

    @classmethod
    def parse(cls, value: Any) -> "RejectLimit":
        """From 100, "100" or "5%"; ValueError naming the accepted forms otherwise."""
        if isinstance(value, RejectLimit):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return cls(count=value)
        match = _LIMIT.fullmatch(value) if isinstance(value, str) else None
        if match is None or (not match[2] and "." in match[1]):
            raise ValueError(
                f"max_rejects must be a count of records (100) or a percentage (5%), not {value!r}"
            )
        if match[2]:
            percent = float(match[1])
            if percent > 100:
                raise ValueError(f"max_rejects {value!r} is over 100%")
            return cls(percent=percent)
        return cls(count=int(match[1]))

    def exceeded(self, rejected: int, records: int, *, final: bool) -> bool:
        """Whether `rejected` of `records` is past the limit; a percentage is judged only on the
        `final` count, a count as soon as it is passed."""
        if self.count is not None:
            return rejected > self.count
        assert self.percent is not None
        return final and rejected * 100 > self.percent * records


MaxRejects = Annotated[RejectLimit, BeforeValidator(RejectLimit.parse)]
"""A pipeline setting or option: a RejectLimit from 100, "100" or "5%"."""


def over_limit(
    limit: RejectLimit,
    source: str,
    rejected: int,
    records: int,
    reasons: Counter[str],
    required: Sequence[str],
) -> str:
    """The one line that says a file's run passed its reject limit, with the most common reason
    and, when every record lacks one of the `required` fields, the likely cause."""
    line = f"{source}: {rejected:,} of {records:,} records rejected, over --max-rejects {limit}"
    if reasons:
        code, n = reasons.most_common(1)[0]
        line += f" (most common reason: {code}, {n:,} records)"
    line += "; the run was rolled back and nothing was kept"
    missing = lacking(required, reasons, records)
    if missing and rejected == records:
        line += f". No record has {', '.join(repr(f) for f in missing)}: {ANOTHER_PIPELINE}"
    return line


ANOTHER_PIPELINE = (
    "the file may belong to another pipeline (--pipeline NAME; `capstone pipelines` lists them)"
)
"""The hint when no record of a file has a field its pipeline needs."""


def lacking(required: Sequence[str], reasons: Counter[str], records: int) -> list[str]:
    """The `required` fields that every one of a file's `records` was rejected for missing."""
    return [f for f in required if reasons[f"{f}.missing"] == records > 0]
