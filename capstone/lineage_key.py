"""A record key given as text, one value per key field, turned into the text lineage stores."""

from collections.abc import Sequence

from capstone.errors import ConfigError
from capstone.schema import PipelineSpec

__all__ = ["from_parts"]


def from_parts(parts: Sequence[str], spec: PipelineSpec | None = None) -> str:
    """The lineage text of a key: its single part, or the parts typed and joined as the pipeline
    `spec` writes them (a JSON array for a composite key)."""
    if spec is None:
        if len(parts) != 1:
            raise ConfigError("a key of several parts needs --pipeline to say whose key it is")
        return parts[0]
    if len(parts) != len(spec.key):
        raise ConfigError(
            f"pipeline {spec.name!r} has a key of {len(spec.key)} part(s) "
            f"({', '.join(spec.key)}); give {len(spec.key)} value(s), not {len(parts)}"
        )
    typed: list[str | int] = []
    for name, part in zip(spec.key, parts, strict=True):
        if spec.fields[name].type == "integer":
            try:
                typed.append(int(part))
            except ValueError:
                raise ConfigError(f"key field {name!r} is an integer, not {part!r}") from None
        else:
            typed.append(part)
    return spec.lineage_key(tuple(typed))
