"""On-disk cache of vectors computed from a model (actadd's pair means and instruction differences).

Layout: ``<dir>/actadd-vectors/<first two hex digits of the key>/<key>.safetensors``, one
``values`` array of float32 rows per entry. Each file names its format and key and carries a
SHA-256 checksum of its values; it is written whole (:mod:`pytest_steer.store.atomic`), and an
entry is read back only when it names its key, matches its checksum and holds finite values of
the expected shape.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from pytest_steer.store.atomic import write_bytes

VECTOR_CACHE = "actadd-vectors"
VECTOR_CACHE_FORMAT = "1"


def vector_cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / VECTOR_CACHE / key[:2] / f"{key}.safetensors"


def read_vectors(path: Path, key: str, rows: int) -> tuple[np.ndarray | None, str | None]:
    """(the values stored under ``key``, None), or (None, what is wrong with the entry); (None, None) when there is none."""
    if not path.is_file():
        return None, None
    try:
        with safe_open(str(path), framework="np") as stored:
            metadata = stored.metadata() or {}
            values = stored.get_tensor("values")
    except Exception as exc:  # partial or foreign: computed again and rewritten
        return None, f"cannot be read ({type(exc).__name__}: {exc})"
    if metadata.get("format") != VECTOR_CACHE_FORMAT or metadata.get("key") != key:
        return None, "does not name this entry's key (overwritten, or written by another version)"
    if values.dtype != np.float32 or values.ndim != 2 or values.shape[0] != rows:
        return None, f"holds {values.dtype} values of shape {tuple(values.shape)}, not {rows} float32 vectors"
    if metadata.get("checksum") != _checksum(values):
        return None, "does not match its checksum"
    if not bool(np.isfinite(values).all()):
        return None, "holds non-finite values"
    return values, None


def write_vectors(path: Path, key: str, values: np.ndarray) -> None:
    """Store float32 ``values`` under ``key``; a cache that cannot be written costs a recomputation, not the run."""
    values = np.ascontiguousarray(values)
    metadata = {"format": VECTOR_CACHE_FORMAT, "key": key, "checksum": _checksum(values)}
    try:
        write_bytes(path, save({"values": values}, metadata=metadata))
    except OSError:
        pass


def _checksum(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
