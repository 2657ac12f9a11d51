"""Steering vectors given as files: a vector file, a JSONL file of contrast pairs, and a vector's digest."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from pytest_steer.store.jsonl import JsonLinesError, read_json_lines

VECTOR_SUFFIXES = (".safetensors", ".npy", ".pt", ".pth")


def read_vector(path: Path) -> torch.Tensor:
    """The one vector a ``.safetensors``, ``.npy`` or weights-only ``.pt`` file holds, as float32."""
    files = ", ".join(VECTOR_SUFFIXES)
    if path.is_dir():
        raise ValueError(f"actadd vector {path} is a directory; give the path of the vector file itself (a {files} file)")
    if path.suffix not in VECTOR_SUFFIXES:
        raise ValueError(f"actadd vector {path}: unsupported file type {path.suffix!r}; use one of {files}")
    if not path.is_file():
        raise ValueError(f"actadd vector {path} does not exist; give the path of a {files} file")
    try:
        if path.suffix == ".safetensors":
            loaded: Any = load_file(str(path))
        elif path.suffix == ".npy":
            loaded = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # each reader raises its own types; the file is unusable either way
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):  # torch advises weights_only=False: never
            raise ValueError(
                f"actadd vector {path} holds pickled objects besides tensors, which are not loaded (loading them could run "
                "code); save the vector with safetensors (safetensors.torch.save_file({'vector': v}, PATH)) or as a plain "
                "tensor (torch.save(v, PATH)), which loads with weights_only=True"
            ) from None
        raise ValueError(f"actadd vector {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    if isinstance(loaded, Mapping):
        tensors = [value for value in loaded.values() if isinstance(value, torch.Tensor)]
        if len(tensors) != 1 or len(loaded) != 1:
            raise ValueError(f"actadd vector {path} holds {len(loaded)} entries ({', '.join(map(str, loaded))}); save exactly one vector")
        loaded = tensors[0]
    if not isinstance(loaded, torch.Tensor):
        raise ValueError(f"actadd vector {path} holds a {type(loaded).__name__}, not a tensor; save exactly one vector")
    return checked_vector(loaded, f"vector {path}")


def checked_vector(values: torch.Tensor, what: str) -> torch.Tensor:
    """``values`` as one float32 vector on the CPU (a (1, hidden) row is taken as its vector); ValueError otherwise."""
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(f"actadd {what} has shape {tuple(values.shape)}; it must hold one vector (hidden size,)")
    if not values.is_floating_point() or not bool(torch.isfinite(values).all()):
        raise ValueError(f"actadd {what} must hold finite floating-point values")
    return values.detach().float().cpu()


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """The (positive, negative) texts of a JSONL file of ``{"positive": ..., "negative": ...}`` objects."""
    pairs = []
    try:
        for number, row in read_json_lines(path):
            texts = row.get("positive"), row.get("negative")
            if not all(isinstance(text, str) and text.strip() for text in texts):
                raise ValueError(f"{path}:{number}: each line needs non-empty 'positive' and 'negative' strings")
            pairs.append((str(texts[0]), str(texts[1])))
    except JsonLinesError as exc:
        raise ValueError(f"actadd pairs: {exc}") from None
    except OSError as exc:
        raise ValueError(f"actadd pairs {path} cannot be read: {exc}") from None
    if not pairs:
        raise ValueError(f"actadd pairs {path} holds no pairs; give one JSON object per line")
    return pairs


def vector_digest(vector: torch.Tensor) -> str:
    """A short digest of a vector's float32 values."""
    return hashlib.sha256(vector.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
