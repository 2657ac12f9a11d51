"""The run spec: the one description of what a run's results depend on.

The response cache key, the run fingerprint in results.json, the comparison with a saved
baseline and the report header are all read off a :class:`RunSpec`; nothing else
describes a run.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_steer.cases import SteeringConfig
from pytest_steer.options import SteerSettings

PACKAGES = ("pytest-steer", "pytest", "torch", "transformers", "datasets", "nltk", "langdetect", "numpy")


@dataclass(frozen=True)
class RunSpec:
    dataset: Mapping[str, Any]
    decoding: Mapping[str, Any]  # what each response's sampling depends on
    trials: int
    seed: int
    configs: tuple[SteeringConfig, ...]
    quality: Mapping[str, Any]

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
        )

    def steering(self) -> dict[str, dict[str, Any]]:
        """Config name -> its method and parameters, the baseline included."""
        return {config.name: {"method": config.method, "params": config.parameters} for config in self.configs}

    def fingerprint(self, model: Mapping[str, Any] | None, n_prompts: int, rootdir: Path) -> dict[str, Any]:
        """The ``run`` section of results.json and of saved baselines."""
        return {
            "model": dict(model or {}),
            "dataset": {**self.dataset, "n_prompts": n_prompts},
            "generation": {**self.decoding, "trials": self.trials, "seed": self.seed},
            "steering": self.steering(),
            "quality": dict(self.quality),
            "versions": _versions(),
            "git_commit": _git_commit(rootdir),
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }


def quality_spec(settings: SteerSettings) -> dict[str, Any]:
    """The scorer, and for a reward model which weights and how its head is read."""
    if settings.reward_model is None:
        return {"scorer": settings.quality}
    from pytest_steer.models import source_revision

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
