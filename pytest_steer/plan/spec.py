"""The run spec: the one description of what a run's results depend on.

The response cache key, the run fingerprint in results.json, the comparison with a saved
baseline and the report header are all read off a :class:`RunSpec`; nothing else
describes a run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_steer.plan.cases import SteeringConfig
from pytest_steer.plan.data import BUILTIN, builtin_path
from pytest_steer.plan.options import SteerSettings

# pytest-steer and every package that takes part in a result: loading, numerics, tokenizing, data, checks
PACKAGES = (
    "pytest-steer",
    "pytest",
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "tokenizers",
    "numpy",
    "datasets",
    "nltk",
    "langdetect",
)


@dataclass(frozen=True)
class RunSpec:
    dataset: Mapping[str, Any]
    decoding: Mapping[str, Any]  # what each response's sampling depends on
    trials: int
    seed: int
    configs: tuple[SteeringConfig, ...]
    quality: Mapping[str, Any]
    shard: str | None = None  # "K/N" under --steer-shard: this run holds one shard of the prompts

    @classmethod
    def from_settings(cls, settings: SteerSettings, configs: tuple[SteeringConfig, ...]) -> RunSpec:
        return cls(
            dataset={
                "source": settings.dataset,
                "split": settings.dataset_split,
                "single_instruction": settings.single_instruction,
                "instruction_ids": list(settings.instruction_ids),
                "per_instruction": settings.per_instruction,
                "sample_seed": settings.sample_seed,
                "limit": settings.limit,
                "highlight": settings.highlight,
                "digest": dataset_digest(settings.dataset),
            },
            decoding={
                "max_new_tokens": settings.max_new_tokens,
                "greedy": settings.greedy,
                "temperature": settings.temperature,
                "top_p": settings.top_p,
            },
            trials=settings.trials,
            seed=settings.seed,
            configs=configs,
            quality=quality_spec(settings),
            shard=None if settings.shard is None else str(settings.shard),
        )

    def steering(self) -> dict[str, dict[str, Any]]:
        """Config name -> its method and parameters, the baseline included."""
        return {config.name: {"method": config.method, "params": config.parameters} for config in self.configs}

    def fingerprint(
        self, model: Mapping[str, Any] | None, n_prompts: int, rootdir: Path, provenance: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ``run`` section of results.json and of saved baselines; ``provenance`` from :func:`run_provenance`."""
        run = {
            "model": dict(model or {}),
            "dataset": {**self.dataset, "n_prompts": n_prompts},
            "generation": {**self.decoding, "trials": self.trials, "seed": self.seed},
            "steering": self.steering(),
            "quality": dict(self.quality),
            "versions": _versions(),
            "git_commit": _git_commit(rootdir),
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "shard": self.shard,
        }
        if provenance is not None:
            run["provenance"] = dict(provenance)
        return run


def run_provenance(args: Sequence[str], invocation_dir: Path, started: float, devices: Sequence[str]) -> dict[str, Any]:
    """How and where a run was made: pytest's arguments, when, for how long, on which devices, Python and platform."""
    return {
        "command": ["pytest", *args],
        "invocation_dir": str(invocation_dir),
        "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 3),
        "devices": sorted(set(devices)),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def dataset_digest(source: str) -> str | None:
    """``sha256:<hex>`` of a local dataset file (the built-in sample included); None for a hub dataset."""
    path = builtin_path() if source == BUILTIN else Path(source).expanduser()
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:  # a hub id, or a file gone since it was read
        return None
    return f"sha256:{digest.hexdigest()}"


def quality_spec(settings: SteerSettings) -> dict[str, Any]:
    """The scorer, and for a reward model which weights and how its head is read."""
    if settings.reward_model is None:
        return {"scorer": settings.quality}
    from pytest_steer.model.loading import source_revision  # why: imports huggingface_hub, which importing this module must not

    return {
        "scorer": settings.quality,
        "revision": source_revision(settings.reward_model),
        "transform": settings.reward_transform,
        "max_length": settings.reward_max_length,
    }


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_commit(root: Path) -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
