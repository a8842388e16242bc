"""Target tables both backends share the rules for: which definition a table holds, what may change.

A pipeline's definition is stored with its target table (`pipeline_schemas`). Before a run the
configured definition is compared with the stored one: optional fields are added as columns,
changes that would lose or reinterpret stored data are refused before anything is written.
"""

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from capstone.errors import ConfigError, StoreError
from capstone.spec import PipelineSpec

__all__ = ["TableSync", "quote", "sync_plan"]


def quote(name: str) -> str:
    """A quoted identifier; names are checked against `[A-Za-z_][A-Za-z0-9_]*` by the schema."""
    return f'"{name}"'


@dataclass(frozen=True)
class TableSync:
    """What a run does to the target table before staging, and what it records."""

    create: bool = False
    add: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    """Descriptions for `schema_changes`; empty when the stored definition is current."""
    clear_watermark: bool = False
    """The pipeline moved to a new, empty table; its watermark tells what the old table holds."""


def stored_spec(spec: PipelineSpec, definition: str) -> tuple[PipelineSpec, bool]:
    """The definition stored for `spec`'s pipeline, and whether it was read whole. When its
    constraints no longer pass (an older capstone stored settings it would refuse today), it is
    read without them: the table's layout (target, key, event time, field types) is all a change
    is checked against, and the run then stores the configured constraints in their place."""
    try:
        stored = orjson.loads(definition)
        try:
            return PipelineSpec.model_validate({**stored, "name": spec.name}), True
        except ValidationError:
            return PipelineSpec.model_validate({**_layout_of(stored), "name": spec.name}), False
    except (ValidationError, orjson.JSONDecodeError, TypeError, AttributeError, KeyError) as error:
        text = " ".join(str(error).split())
        raise StoreError(
            f"the stored definition of pipeline {spec.name!r} cannot be read ({text[:300]}); it "
            "was written by another capstone version or edited by hand. Restore table "
            "pipeline_schemas from a backup, or start the pipeline afresh: DELETE FROM "
            f"pipeline_schemas WHERE pipeline = '{spec.name}', rename or drop its table, and "
            f"`capstone reset-watermark -p {spec.name} --yes`"
        ) from None


def _layout_of(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored definition without its fields' constraints (type and required kept)."""
    fields = {
        name: {"type": value["type"], "required": value.get("required", True)}
        for name, value in stored["fields"].items()
    }
    return {**stored, "fields": fields}


def sync_plan(
    spec: PipelineSpec,
    stored: str | None,
    *,
    target_exists: bool,
    target_owner: str | None,
) -> TableSync:
    """Decide how the target table follows the configured definition; raise when it must not."""
    if target_owner is not None and target_owner != spec.name:
        raise ConfigError(
            f"table {spec.target!r} holds pipeline {target_owner!r}; give pipeline "
            f"{spec.name!r} another target"
        )
    fresh_table_taken = ConfigError(
        f"table {spec.target!r} already exists and is no pipeline's current target (it may be "
        "one a pipeline moved away from, kept as it was); capstone writes only into tables it "
        f"creates, so choose another target for pipeline {spec.name!r}, or rename or drop that "
        "table"
    )
    if stored is None:
        if target_exists and not spec.is_builtin:
            raise fresh_table_taken
        if target_exists:
            return TableSync(changes=[f"adopted table {spec.target}"])
        return TableSync(create=True, changes=[f"created table {spec.target}"])
    old, whole = stored_spec(spec, stored)
    if old.target != spec.target and old.target.lower() == spec.target.lower():
        raise ConfigError(
            f"target {spec.target!r} of pipeline {spec.name!r} differs from its table "
            f"{old.target!r} only in case, and table names are compared without case; write "
            f"{old.target!r}"
        )
    if old.target != spec.target:
        # A new target starts empty and the old table is left as it is. The watermark goes with
        # the old table: kept, it would make the next run skip everything the new table lacks.
        if target_exists:
            raise fresh_table_taken
        return TableSync(
            create=True,
            clear_watermark=True,
            changes=[
                f"target table {old.target} -> {spec.target} (created; watermark cleared, "
                "the new table starts empty)"
            ],
        )
    plan = plan_changes(old, spec)
    if plan.refused:
        raise ConfigError(
            f"pipeline {spec.name!r} changed in a way that would lose or reinterpret the data in "
            f"table {spec.target!r}: {'; '.join(plan.refused)}. Nothing was changed; restore the "
            "previous definition, or give the pipeline a new target table (it starts empty, "
            "and the next run loads into it from a cleared watermark)"
        )
    changes = [f"added optional field {name!r}" for name in plan.added] + plan.other
    if not whole and not changes:
        changes.append("stored constraints capstone no longer accepts replaced by the configured")
    return TableSync(add=plan.added, changes=changes)


# -- schema changes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaPlan:
    """How a stored definition becomes the configured one."""

    added: list[str]
    """Optional fields to add as columns."""
    refused: list[str]
    """Changes that would lose or reinterpret stored data."""
    other: list[str]
    """Changes with nothing to migrate (constraints, unknown-field policy, target)."""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.refused or self.other)


def plan_changes(old: PipelineSpec, new: PipelineSpec) -> SchemaPlan:
    """Compare the stored definition with the configured one."""
    added: list[str] = []
    refused: list[str] = []
    other: list[str] = []
    if old.key != new.key:
        refused.append(f"key ({', '.join(old.key)}) became ({', '.join(new.key)})")
    if old.event_time != new.event_time:
        refused.append(f"event_time {old.event_time!r} became {new.event_time!r}")
    for name, spec in old.fields.items():
        if name not in new.fields:
            refused.append(f"field {name!r} was removed (its column holds data)")
        elif new.fields[name].type != spec.type:
            refused.append(f"field {name!r} changed type {spec.type} -> {new.fields[name].type}")
        elif new.fields[name] != spec:
            other.append(f"constraints of field {name!r} changed")
    for name, added_spec in new.fields.items():
        if name in old.fields:
            continue
        if name.lower() in {n.lower() for n in old.fields}:
            refused.append(f"field {name!r} differs from stored {name.lower()!r} only in case")
        elif added_spec.required:
            refused.append(
                f"new field {name!r} is required, but stored rows have no value for it "
                "(add it with required = false)"
            )
        else:
            added.append(name)
    if old.delete_field != new.delete_field:
        other.append(f"delete_field {old.delete_field or '-'} -> {new.delete_field or '-'}")
    if old.ties != new.ties:
        other.append(f"ties {old.ties} -> {new.ties}")
    if old.unknown != new.unknown:
        other.append(f"unknown fields policy {old.unknown} -> {new.unknown}")
    if old.target != new.target:
        other.append(f"target table {old.target} -> {new.target}")
    return SchemaPlan(added, refused, other)
