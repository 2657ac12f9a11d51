"""Fail fast, with a useful message, when a Hugging Face Hub id cannot be reached.

Without network, ``from_pretrained``/``load_dataset`` on a hub id can spend minutes in
retries before failing. Every hub access in the project goes through
:func:`require_hub` first: it looks in the local cache, honours ``HF_HUB_OFFLINE`` and
otherwise probes the endpoint with a short socket connect.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


class HubUnavailableError(RuntimeError):
    """A hub id was requested but neither the cache nor the network can provide it."""


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` (optionally ``org/name@revision``) that is not an existing local path."""
    if Path(name).expanduser().exists():
        return False
    parts = name.split("@", 1)[0].split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def split_revision(name: str) -> tuple[str, str | None]:
    """``org/name@rev`` -> (``org/name``, ``rev``)."""
    repo, _, revision = name.partition("@")
    return repo, revision or None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def hub_reachable() -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def require_hub(repo_id: str, *, what: str, alternatives: str) -> None:
    """Raise :class:`HubUnavailableError` unless downloading ``repo_id`` can work.

    Callers try ``local_files_only=True`` first; this is called only on a cache miss.
    """
    reason = None
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
    elif not hub_reachable():
        reason = "the Hugging Face Hub cannot be reached (no network?) and it is not in the local cache"
    if reason:
        raise HubUnavailableError(f"cannot load {what} {repo_id!r}: {reason}. Offline alternatives: {alternatives}.")
