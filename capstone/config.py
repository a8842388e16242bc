"""The project config file, `capstone.toml`: named pipelines beside the built-in `events`."""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from capstone.errors import ConfigError
from capstone.spec import BUILTIN, EVENTS, PipelineSpec

__all__ = ["CONFIG_NAME", "Config", "config_from_text", "load_config", "starter_config"]

CONFIG_NAME = "capstone.toml"


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipelines: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class Config:
    """The pipelines a project defines, always including the built-in `events`."""

    pipelines: dict[str, PipelineSpec] = field(default_factory=lambda: {BUILTIN: EVENTS})
    path: Path | None = None

    def pipeline(self, name: str) -> PipelineSpec:
        """The named pipeline's definition; an unknown name is a usage error that lists the known."""
        try:
            return self.pipelines[name]
        except KeyError:
            where = str(self.path) if self.path else f"no {CONFIG_NAME} was found"
            raise ConfigError(
                f"there is no pipeline {name!r} (known: {', '.join(self.pipelines)}; config: "
                f"{where}); check --pipeline, or define it in {CONFIG_NAME} (`capstone init`)"
            ) from None


def load_config(path: Path | None = None) -> Config:
    """Read `path`, or ./capstone.toml when there is one; without either, only `events` exists."""
    if path is None:
        path = Path(CONFIG_NAME)
        if not path.is_file():
            return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; check --config or create one with `capstone init`"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path} ({error}); check the file") from None
    try:
        return _parse(path, text)
    except RecursionError:
        raise ConfigError(
            f"{path}{_deepest(text)}: arrays or tables nest too deeply (capstone settings nest "
            "at most a few levels); fix it (`capstone init` writes a commented example)"
        ) from None


def config_from_text(path: Path, text: str) -> Config:
    """The config `text` would be as the file at `path` (ConfigError naming its line if not):
    for checking a change before it is written."""
    return _parse(path, text)


def _parse(path: Path, text: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}; fix the syntax") from None
    pipelines: dict[str, PipelineSpec] = {BUILTIN: EVENTS}
    try:
        document = _File.model_validate(data)
    except ValidationError as error:
        raise _config_error(path, text, error, ()) from None
    for name, body in document.pipelines.items():
        if name == BUILTIN:
            raise ConfigError(
                f"{path}{_at(text, ('pipelines', name))}: {BUILTIN!r} is the built-in pipeline; "
                "give yours another name"
            )
        if not isinstance(body, dict):
            raise ConfigError(
                f"{path}{_at(text, ('pipelines', name))}: pipelines.{name} must be a table "
                f"([pipelines.{name}]); see `capstone init` for an example"
            )
        try:
            pipelines[name] = PipelineSpec.model_validate({**body, "name": name})
        except ValidationError as error:
            raise _config_error(path, text, error, ("pipelines", name)) from None
    targets: dict[str, str] = {}
    for spec in pipelines.values():
        other = targets.setdefault(spec.target.lower(), spec.name)
        if other != spec.name:
            raise ConfigError(
                f"{path}{_at(text, ('pipelines', spec.name, 'target'))}: pipelines {other!r} "
                f"and {spec.name!r} share target table {spec.target!r}; give each its own"
            )
    return Config(pipelines, path)


def _config_error(
    path: Path, text: str, error: ValidationError, prefix: tuple[str, ...]
) -> ConfigError:
    first, *others = error.errors(include_url=False)

    def located(problem: Any) -> tuple[str, ...]:
        return prefix + tuple(
            str(part) for part in problem["loc"] if not str(part).startswith("function")
        )

    loc = located(first)
    setting = ".".join(loc) or "config"
    message = first["msg"].removeprefix("Value error, ")
    # A check across a pipeline's settings fails at the pipeline; the field it names is where
    # the line to fix is.
    named_field = re.search(r"\bfield '([^']+)'", message)
    where = (*loc, "fields", named_field.group(1)) if named_field and "fields" not in loc else loc
    # So is a setting the message opens with ("target 'x' is not a table name").
    first_word = re.match(r"(\w+)\b", message)
    if where == prefix and first_word and first_word.group(1) in PipelineSpec.model_fields:
        where = (*loc, first_word.group(1))
    if first["type"] == "extra_forbidden":
        message = "is not a setting capstone knows (check its spelling)"
    # The others are named, so one fix-and-rerun shows every setting to look at.
    named = ", ".join(".".join(located(problem)) for problem in others[:3])
    extra = f" (also: {named}{', ...' if len(others) > 3 else ''})" if others else ""
    return ConfigError(
        f"{path}{_at(text, where)}: {setting}: {message}{extra}; fix it (`capstone init` writes "
        "a commented example)"
    )


def _deepest(text: str, limit: int = 100) -> str:
    """' line N' for the line where brackets and braces first nest `limit` deep (strings and
    comments skipped roughly: a hint for the reader, not a parser)."""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        for char in re.sub(r"#.*|\"(?:[^\"\\]|\\.)*\"|'[^']*'", "", line):
            depth += (char in "[{") - (char in "]}")
            if depth >= limit:
                return f" line {number}"
    return ""


def _at(text: str, loc: tuple[str, ...]) -> str:
    """' line N' for the line that sets `loc`, found by scanning for each part in turn."""
    lines = text.splitlines()
    found: int | None = None
    start = 0
    for part in loc:
        name = re.escape(part)
        pattern = re.compile(
            rf"^\s*\[[^\]]*\b{name}\b[^\]]*\]|^\s*\"?{name}\"?\s*=|[{{,]\s*\"?{name}\"?\s*="
        )
        for number in range(start, len(lines)):
            if pattern.search(lines[number]):
                found, start = number + 1, number
                break
    return f" line {found}" if found else ""


def starter_config() -> str:
    """A commented `capstone.toml` with one realistic pipeline, written by `capstone init`."""
    return STARTER


STARTER = """\
# capstone.toml: pipelines capstone can run besides the built-in `events` (key, name, value, ts).
# Run one with:  capstone run --pipeline orders --input orders.jsonl
# List them with: capstone pipelines

[pipelines.orders]
target = "orders"                  # the target table (default: the pipeline's name)
key = ["order_id", "line"]         # one field, or several for a composite key
event_time = "updated_at"          # a required timestamp: the watermark and the newer-wins guard use it
unknown = "keep"                   # fields not declared below: keep (JSON column), reject, or drop
ties = "keep"                      # same event time as the stored row: keep it, or replace it (corrections)
# delete_field = "cancelled"       # a boolean field whose true value deletes the key (a tombstone)
lookback = "0s"                    # stage records this far behind the watermark unchecked (90s, 15m, 2h, 3d)
future_tolerance = "1d"            # reject event times later than now plus this
# keep_lineage = "90d"             # after each run, prune lineage of runs older than this (capstone prune)

# Types: string, integer, float, boolean, timestamp, json.
# Constraints: required (default true), min and max (numbers), min_length, max_length and
# pattern (strings), allowed (a list of values).
# Adding an optional field later adds a column; changing a type, the key or the event time,
# or removing a field, is refused (nothing is touched) because it would lose or reinterpret data.
[pipelines.orders.fields]
order_id = { type = "string", max_length = 32, pattern = "^O-[0-9]+$" }
line = { type = "integer", min = 1 }
sku = { type = "string", max_length = 64 }
quantity = { type = "integer", min = 0 }
unit_price = { type = "float", min = 0 }
status = { type = "string", allowed = ["placed", "paid", "shipped", "cancelled"] }
gift = { type = "boolean", required = false }
updated_at = { type = "timestamp" }
details = { type = "json", required = false }
"""
