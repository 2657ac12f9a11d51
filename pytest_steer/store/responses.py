"""On-disk cache of generated responses, so that rerunning an unchanged suite generates nothing.

What is stored:

- ``generation`` entries: a response's text, its number of new tokens and the highlight
  spans PASTA could not locate. The key (:func:`generation_key`) holds everything the
  response depends on: model fingerprint, device type, library versions, engine version,
  prompt, steering (alpha, resolved heads, scale position, highlight spans), generation
  settings and the case seed. Changing any of them misses only the affected cases. A
  steering method is keyed by its ``params()`` and by what names its code
  (:func:`pytest_steer.steering.identity.method_identity`: a built-in's version, the source
  files of a user's method).
- ``quality`` entries: the quality score of one cached response under one scorer
  (:func:`quality_key`; for a reward model, the revision of its weights too). Fluency is
  a forward pass of the model and a reward model may be large, so scores are kept too;
  instruction checks are cheap and always recomputed.
- ``prompt_tokens`` entries: a prompt's length in tokens after the chat template, under
  one tokenizer (:func:`prompt_tokens_key`), so that a run whose responses are all cached
  plans its batches without loading the tokenizer.

Layout: ``<dir>/<namespace>/<first two hex digits>/<sha256 of the key>.json``. Each file is
written whole (:mod:`pytest_steer.store.atomic`), so readers never see half a file. Each file repeats its key hash and carries a SHA-256
checksum of its payload; a file that does not parse, names another key, fails its
checksum or holds fields of the wrong type is a miss, and the regenerated entry
replaces it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_steer.store.atomic import write_bytes

CACHE_FORMAT = 1
GENERATION = "generation"
QUALITY = "quality"
PROMPT_TOKENS = "prompt_tokens"
CACHE_DIR_NAME = "steer-responses"

# The fields of each namespace's payload and their types (a type tuple allows several).
_PAYLOAD_FIELDS: dict[str, dict[str, Any]] = {
    GENERATION: {"text": str, "n_new_tokens": int, "missing_spans": list, "prompt": str},
    QUALITY: {"quality": (float, int, type(None))},
    PROMPT_TOKENS: {"tokens": int},
}


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: Any) -> str:
    """SHA-256 hex digest of a JSON-serializable value, independent of dict order."""
    return hashlib.sha256(_canonical(value)).hexdigest()


def generation_key(
    *,
    model: Mapping[str, Any],
    environment: Mapping[str, Any],
    prompt: str,
    steering: Mapping[str, Any] | None,
    generation: Mapping[str, Any],
    seed: int,
) -> str:
    """Key of one response. ``steering`` is None for the unsteered model; ``environment``
    holds what changes numerics without changing the settings (device type, versions)."""
    return digest(
        {
            "format": CACHE_FORMAT,
            "model": dict(model),
            "environment": dict(environment),
            "prompt": prompt,
            "steering": None if steering is None else dict(steering),
            "generation": dict(generation),
            "seed": seed,
        }
    )


def quality_key(generation: str, scorer: Mapping[str, Any]) -> str:
    """Key of the quality score of the response cached under ``generation``."""
    return digest({"format": CACHE_FORMAT, "generation": generation, "scorer": dict(scorer)})


def prompt_tokens_key(tokenizer: Mapping[str, Any], prompt: str) -> str:
    """Key of a prompt's templated length under the tokenizer named by ``tokenizer`` (source and revision)."""
    return digest({"format": CACHE_FORMAT, "tokenizer": dict(tokenizer), "prompt": prompt})


class ResponseCache:
    """Entries under one directory; reads never raise, failed writes are counted, not raised."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.rejected = 0  # entries found but not trusted (corrupt, partial, foreign)
        self.write_errors: list[str] = []

    def path(self, namespace: str, key: str) -> Path:
        return self.directory / namespace / key[:2] / f"{key}.json"

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        """The payload stored under ``key``, or None when absent or not trustworthy."""
        path = self.path(namespace, key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            payload = _verified_payload(raw, namespace, key)
        except (ValueError, RecursionError):  # whatever a file holds, it is a miss and gets regenerated
            payload = None
        if payload is None:
            self.rejected += 1
        return payload

    def put(self, namespace: str, key: str, payload: Mapping[str, Any]) -> None:
        """Store ``payload`` atomically; on failure (read-only or full disk) the run goes on."""
        payload = dict(payload)
        if _bad_fields(namespace, payload):
            raise ValueError(f"cache payload for {namespace} has wrong fields: {_bad_fields(namespace, payload)}")
        entry = {"format": CACHE_FORMAT, "key": key, "payload": payload, "checksum": digest(payload)}
        path = self.path(namespace, key)
        try:
            write_bytes(path, _canonical(entry))
        except OSError as exc:
            self.write_errors.append(f"{path}: {exc}")


def _bad_fields(namespace: str, payload: Mapping[str, Any]) -> list[str]:
    expected = _PAYLOAD_FIELDS[namespace]
    bad = sorted(set(payload) ^ set(expected))
    bad += [
        name
        for name, kind in expected.items()
        if name in payload and (not isinstance(payload[name], kind) or isinstance(payload[name], bool))
    ]
    return bad


def _verified_payload(raw: bytes, namespace: str, key: str) -> dict[str, Any] | None:
    """The entry's payload if it is trustworthy, else None; may raise ValueError (bad JSON or
    text, e.g. a lone surrogate that cannot be re-encoded) or RecursionError (deep nesting)."""
    entry = json.loads(raw)
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
        return None
    payload = entry.get("payload")
    if not isinstance(payload, dict) or entry.get("checksum") != digest(payload) or _bad_fields(namespace, payload):
        return None
    if namespace == GENERATION and not all(isinstance(span, str) for span in payload["missing_spans"]):
        return None
    return payload


def resolve_cache_dir(no_cache: bool, cache_dir: Path | None, rootdir: Path, config: Any = None) -> Path | None:
    """Where responses are cached: None when disabled, else ``cache_dir``, else inside
    pytest's cache directory (``.pytest_cache/d/steer-responses`` when the cache
    provider is off)."""
    if no_cache:
        return None
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    pytest_cache = getattr(config, "cache", None)
    if pytest_cache is not None:
        return Path(pytest_cache.mkdir(CACHE_DIR_NAME))
    return Path(rootdir) / ".pytest_cache" / "d" / CACHE_DIR_NAME
