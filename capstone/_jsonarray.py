"""Stream the elements of one JSON array as exact raw text, in constant memory.

`json.JSONDecoder.raw_decode` (C) finds where each element ends inside a sliding text buffer, so
every element's raw text is kept exactly as it stood in the file, integers of any size and all
escapes included. Validation then parses the text once more, the same way as for JSON Lines.
"""

import codecs
import json
import re
from collections.abc import Iterator
from typing import IO

from capstone.errors import InputError

__all__ = ["MAX_RECORD_BYTES", "TooLarge", "array_elements"]

MAX_RECORD_BYTES = 64 * 1024 * 1024
"""The default size cap of one record, in every format (a pipeline's `max_record_bytes`)."""


class TooLarge(InputError):
    """A record larger than the cap: the file fails before the record is held whole."""

    def __init__(self, name: str, where: str, limit: int) -> None:
        super().__init__(
            f"{name}: the record at {where} is larger than {_size(limit)} (max_record_bytes); "
            "split the record, or raise max_record_bytes for the pipeline"
        )


def _size(limit: int) -> str:
    if limit % (1 << 20) == 0:
        return f"{limit >> 20} MB"
    if limit % (1 << 10) == 0:
        return f"{limit >> 10} KB"
    return f"{limit:,} bytes"


_CHUNK = 1 << 20
_BLANK = re.compile(r"[ \t\r\n]*")
_DECODER = json.JSONDecoder()
# The decoder's messages end in " at" or " starting at", before a buffer position left out here.
_POSITION_WORDS = re.compile(r"( starting)? at$")


class _Buffer:
    """A window of decoded text over a binary stream."""

    def __init__(self, fh: IO[bytes], name: str) -> None:
        self.fh = fh
        self.name = name
        self.text = ""
        self.pos = 0
        self.eof = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def more(self, room: int = _CHUNK) -> bool:
        """Read another chunk (keeping text from `pos` on); False at end of file. The chunk is
        as large as the unfinished element so far (but no more than `room`, what is left below
        the record cap): an element found whole only after n bytes is decoded about log(n)
        times, not n / 1 MB times."""
        if self.eof:
            return False
        chunk = self.fh.read(max(_CHUNK, min(len(self.text) - self.pos, room)))
        self.eof = not chunk
        try:
            decoded = self._utf8.decode(chunk, final=self.eof)
        except UnicodeDecodeError:
            raise InputError(f"{self.name} is not valid UTF-8; re-encode it as UTF-8") from None
        self.text = self.text[self.pos :] + decoded
        self.pos = 0
        return True

    def skip_blank(self) -> str:
        """Skip white space and return the next character ('' at end of file)."""
        while True:
            self.pos = _BLANK.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""


class _RunTogether(Exception):
    """A broken object's brackets only balance by taking in the elements after it."""


def _scan_end(text: str, start: int) -> int | None:
    """End of the JSON value at `start` by counting brackets, or None if `text` ends first.

    For values nested too deep to decode, and for broken objects, whose end decides where the
    next element starts. Inside an object, `, {` or `, [` at its top level cannot occur (a key
    must follow a comma). When what follows there is a whole value and then `,` or `]`, the count
    has run into the next elements, and guessing would swallow valid records into one dead
    letter, so `_RunTogether` is raised instead. (`{"a": 1, {"b": 2}}` stays one broken record.)
    """
    depth = 0
    in_string = escaped = after_comma = False
    is_object = text[start] == "{"
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if after_comma and char not in " \t\r\n":
            if char in "[{" and _whole_element_at(text, index):
                raise _RunTogether
            after_comma = False
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return index + 1
        elif char == "," and depth == 1 and is_object:
            after_comma = True
    return None


def _whole_element_at(text: str, index: int) -> bool:
    """Whether a whole JSON value starts at `index` and an array's `,` or `]` follows it."""
    try:
        _, end = _DECODER.raw_decode(text, index)
    except (json.JSONDecodeError, RecursionError):
        return False
    end = _BLANK.match(text, end).end()  # type: ignore[union-attr]
    return end < len(text) and text[end] in ",]"


def _closed(text: str, start: int, end: int) -> bool:
    return text[start] not in "-0123456789" or text[end] in " \t\r\n,]"


def _element_end(buffer: _Buffer, index: int, limit: int) -> int:
    """Where the element at `buffer.pos` ends, reading more of the file as needed; TooLarge once
    it is known to be longer than `limit`, before more of it is read."""
    while True:
        text, start = buffer.text, buffer.pos
        try:
            _, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as error:
            # (The decoder's line and column count from the buffer, not the file: left out.)
            problem: str | None = _POSITION_WORDS.sub("", error.msg)
            end = -1
            # Cut off by the end of what was read so far, the element may be whole further on;
            # a syntax error inside it is another matter.
            cut_off = error.msg.startswith("Unterminated string") or error.pos >= len(text)
            if not cut_off and start < len(text) and text[start] in "[{":
                # A broken object or array whose brackets balance is one malformed record, for
                # the dead-letter table, not a reason to refuse the whole file.
                found = _scan_end_or_fail(buffer, start, index, problem)
                if found is not None and found - start > limit:
                    raise TooLarge(buffer.name, f"element {index}", limit) from None
                if found is not None:
                    return found
        except RecursionError:
            found = _scan_end_or_fail(buffer, start, index, "nested too deep")
            problem, end = (None, found) if found is not None else ("unterminated value", -1)
        # A bare number is only whole when a delimiter follows it: "1." at the end of a chunk
        # decodes as 1. Objects, arrays and strings carry their own closing character.
        if end != -1 and (buffer.eof or (end < len(text) and _closed(text, start, end))):
            if end - start > limit:
                raise TooLarge(buffer.name, f"element {index}", limit)
            return end
        if len(text) - start > limit:
            raise TooLarge(buffer.name, f"element {index}", limit)
        if not buffer.more(limit + 1 - (len(text) - start)):
            raise InputError(
                f"{buffer.name} is not valid JSON at element {index}: {problem}; "
                "fix or re-export the file (is it truncated?)"
            )


def _scan_end_or_fail(buffer: _Buffer, start: int, index: int, problem: str | None) -> int | None:
    try:
        return _scan_end(buffer.text, start)
    except _RunTogether:
        raise InputError(
            f"{buffer.name} is not valid JSON at element {index} ({problem}), and where that "
            "element ends cannot be told from where the next one starts; fix the file"
        ) from None


def array_elements(
    fh: IO[bytes], name: str, limit: int = MAX_RECORD_BYTES
) -> Iterator[tuple[int, str]]:
    """Yield (index, raw text) for each element of the JSON array that `fh` holds; TooLarge
    for an element of more than `limit` characters."""
    buffer = _Buffer(fh, name)
    if buffer.skip_blank() != "[":
        raise InputError(
            f"{name} is not a JSON array (it does not start with '['), yet it was read as one: "
            "check --format, or leave it out to detect the format"
        )
    buffer.pos += 1
    index = 0
    if buffer.skip_blank() == "]":
        buffer.pos += 1
    else:
        while True:
            end = _element_end(buffer, index, limit)
            yield index, buffer.text[buffer.pos : end]
            buffer.pos = end
            index += 1
            after = buffer.skip_blank()
            buffer.pos += 1
            if after == "]":
                break
            if after != ",":
                found = repr(after) if after else "the end of the file"
                raise InputError(
                    f"{name} is not valid JSON after element {index - 1}: expected ',' or ']' but "
                    f"found {found}; fix or re-export the file (is it truncated?)"
                )
            buffer.skip_blank()
    if buffer.skip_blank():
        raise InputError(
            f"{name} has text after the closing ']' of its array; remove it or fix the file"
        )
