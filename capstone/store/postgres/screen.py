"""Valid records PostgreSQL cannot store, named before they fail a run.

PostgreSQL text cannot hold NUL characters, and its indexes cannot hold a key of more than about
2.7 KB. `screen_for` names the fields of a valid record that PostgreSQL cannot store, so the
record can be rejected with a reason instead of failing the run; NULs in the text of dead letters
and lineage are written as the four characters `\\x00`.
"""

from typing import Any

import orjson

from capstone.fates import Reason, Screen, StagedRow
from capstone.spec import PipelineSpec

__all__ = ["MAX_KEY_BYTES", "jsonb_text", "nul_free", "screen_for"]

MAX_KEY_BYTES = 2_000
"""A key PostgreSQL can index: a B-tree entry holds at most 2,704 bytes, and the target's primary
key and the lineage index hold the key with a few bytes around it."""

_NUL_MESSAGE = "contains a NUL character (\\x00), which PostgreSQL cannot store"


def nul_free(text: str) -> str:
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def jsonb_text(text: str | None) -> str | None:
    """JSON text for a jsonb column, or None when it holds a NUL (\\u0000), which jsonb refuses.

    A dead letter without its parsed record is replayed from its raw text, as any other is.
    """
    return None if text is None or "\\u0000" in text else text


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def screen_for(spec: PipelineSpec) -> Screen:
    """The reasons PostgreSQL cannot store a valid record of `spec`, as a per-row check.

    Strings are checked for NUL, JSON text for the escape orjson writes for a NUL (which jsonb
    refuses as well). The model already bounds integers to 64 bits. The lineage key is built from
    key fields checked already.
    """
    layout = spec.staging
    texts = [(layout.index(n), n) for n, f in spec.fields.items() if f.type == "string"]
    documents: list[tuple[int, str | None]] = [
        (layout.index(n), n) for n, f in spec.fields.items() if f.type == "json"
    ]
    documents.append((layout.attributes, None))  # attributes: named by each extra field
    key_texts = [(layout.index(k), k) for k in spec.key if spec.fields[k].type == "string"]
    # The lineage index holds the lineage key: the key itself, or the key parts as JSON (where
    # quotes and escapes add bytes), which is never shorter than the primary key's parts.
    lineage_at = layout.lineage_key

    def unstorable(row: StagedRow) -> list[Reason]:
        reasons: list[Reason] = []
        # Four bytes a character at most: only a long key needs counting.
        if key_texts and 4 * len(lineage_key := row[lineage_at]) > MAX_KEY_BYTES:
            size = len(lineage_key.encode("utf-8", "surrogatepass"))
            if size > MAX_KEY_BYTES:
                name = max(key_texts, key=lambda pair: len(row[pair[0]]))[1]
                reasons.append(
                    (
                        f"{name}.key_too_long",
                        f"{name}: the key takes {size:,} bytes in an index; PostgreSQL indexes "
                        f"keys of up to {MAX_KEY_BYTES:,}",
                    )
                )
        for index, name in texts:
            text = row[index]
            if text is not None and "\x00" in text:
                reasons.append((f"{name}.nul_character", f"{name}: {_NUL_MESSAGE}"))
        for index, column in documents:
            document = row[index]
            if document is None or "\\u0000" not in document:
                continue
            # The escape may be an escaped backslash followed by "u0000": parse to be sure.
            if column is not None:
                if _has_nul(orjson.loads(document)):
                    reasons.append((f"{column}.nul_character", f"{column}: {_NUL_MESSAGE}"))
                continue
            for field, value in orjson.loads(document).items():
                if _has_nul(field) or _has_nul(value):
                    shown = nul_free(field)
                    reasons.append((f"{shown}.nul_character", f"{shown}: {_NUL_MESSAGE}"))
        return reasons

    return unstorable
