"""Everything a run produced, in one object that every report renders from."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_steer.aggregate import ConfigAggregate, aggregate, deltas_vs_baseline
from pytest_steer.gates import ComparisonResult, GateResult
from pytest_steer.options import SteerSettings
from pytest_steer.stats import Interval

SCHEMA_VERSION = 1
PACKAGES = ("pytest-steer", "pytest", "torch", "transformers", "datasets", "nltk", "langdetect", "numpy")


@dataclass
class RunResults:
    run: dict[str, Any]
    records: list[dict[str, Any]]
    aggregates: list[ConfigAggregate]
    deltas: dict[str, dict[str, Interval]] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    comparisons: list[ComparisonResult] = field(default_factory=list)
    n_lost: int = 0  # cases collected but never reported (e.g. their worker crashed)

    @property
    def n_cached(self) -> int:
        """Cases whose response was read from the response cache instead of generated."""
        return sum(bool(record.get("cached")) for record in self.records)

    @classmethod
    def build(cls, settings: SteerSettings, records: Sequence[dict[str, Any]]) -> RunResults:
        return cls.from_records(run_fingerprint(settings, records), records, seed=settings.seed)

    @classmethod
    def from_records(cls, run: dict[str, Any], records: Sequence[dict[str, Any]], *, seed: int) -> RunResults:
        """Aggregate records under a given run fingerprint, e.g. one read back from ``results.json``."""
        ordered = sorted(records, key=lambda r: (r["config"], r["key"], r["trial"]))
        aggregates = aggregate(ordered, seed=seed)
        return cls(run=run, records=ordered, aggregates=aggregates, deltas=deltas_vs_baseline(aggregates))


def run_fingerprint(settings: SteerSettings, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a result depends on: model, data, generation and steering settings, versions."""
    model = next((r["model"] for r in records if r.get("model")), None)
    return {
        "model": model or {"name": settings.model},
        "dataset": {
            "source": settings.dataset,
            "split": settings.dataset_split,
            "single_instruction": settings.single_instruction,
            "instruction_ids": list(settings.instruction_ids),
            "per_instruction": settings.per_instruction,
            "sample_seed": settings.sample_seed,
            "limit": settings.limit,
            "highlight": settings.highlight,
            "n_prompts": len({r["key"] for r in records}),
        },
        "generation": {
            "max_new_tokens": settings.max_new_tokens,
            "greedy": settings.greedy,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "trials": settings.trials,
            "seed": settings.seed,
        },
        "steering": {
            "method": "pasta",
            "alphas": list(settings.alpha),
            "heads": settings.heads or "default",
            "scale_position": settings.scale_position,
        },
        "quality": _quality_fingerprint(settings),
        "versions": _versions(),
        "git_commit": _git_commit(settings.rootdir),
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _quality_fingerprint(settings: SteerSettings) -> dict[str, Any]:
    """The scorer, and for a reward model what shapes its scores."""
    if settings.reward_model is None:
        return {"spec": settings.quality}
    return {
        "spec": settings.quality,
        "reward_model": settings.reward_model,
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
