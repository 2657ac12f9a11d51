"""JSON Lines files, read one object per line, with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonLinesError(ValueError):
    """A line that is not one JSON object."""


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; OSError if the file cannot be read."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problem = f"not UTF-8 text (byte {error.start + 1} of the line)"
                raise JsonLinesError(f"{path}:{number}: {problem}; each line must be one JSON object") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                problem = f"not valid JSON ({error.msg} at column {error.colno})"
                raise JsonLinesError(f"{path}:{number}: {problem}; each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise JsonLinesError(f"{path}:{number}: a JSON {type(row).__name__}, not an object; each line must be one JSON object")
            yield number, row
