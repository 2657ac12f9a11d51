"""Measurements kept beside the response cache for the next run: one JSON file per kind (a CPU's number format and
linear kernel, a model's throughput), one entry per key (the machine, the model and device it was measured on)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_steer.store.atomic import write_text


def read_kept(directory: Path | None, file_name: str, key: str) -> dict[str, Any] | None:
    """The entry kept for ``key``, or None (none kept, no directory, or an unreadable file: measured again)."""
    if directory is None:
        return None
    try:
        entry = json.loads((Path(directory) / file_name).read_text(encoding="utf-8"))[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if isinstance(entry, dict) else None


def keep(directory: Path, file_name: str, key: str, entry: dict[str, Any]) -> None:
    """Keep ``entry`` for ``key`` beside the other machines' entries (a file that cannot be read is written anew)."""
    path = Path(directory) / file_name
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        entries = entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(entries, indent=1, sort_keys=True))
    except OSError:
        pass  # an unwritable cache is reported by the response cache; what was measured still holds for this process
