"""The case plan: prompts × steering configs × trials, with their seeds and test ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_steer.data import PromptRow, highlights

BASELINE = "baseline"
# node id of a case: path::test_name[<key>-<config>-t<trial>]
CASE_NODEID = re.compile(r"^(?P<function>.+)\[(?P<key>.+)-(?P<config>baseline|alpha[0-9.e+-]+)-t(?P<trial>\d+)\]$")


@dataclass(frozen=True)
class SteeringConfig:
    """The unsteered baseline (``alpha is None``) or PASTA at one strength."""

    name: str
    alpha: float | None

    @classmethod
    def pasta(cls, alpha: float) -> SteeringConfig:
        return cls(f"alpha{alpha:g}", alpha)

    @property
    def steered(self) -> bool:
        return self.alpha is not None


@dataclass(frozen=True)
class Case:
    row: PromptRow
    config: SteeringConfig
    trial: int
    seed: int
    highlights: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.row.key}-{self.config.name}-t{self.trial}"


def config_alpha(name: str) -> float | None:
    return None if name == BASELINE else float(name.removeprefix("alpha"))


def steering_configs(alphas: Sequence[float]) -> list[SteeringConfig]:
    return [SteeringConfig(BASELINE, None)] + [SteeringConfig.pasta(alpha) for alpha in sorted(alphas)]


def case_seed(base_seed: int, key: str, trial: int) -> int:
    """Seed of one sampled response.

    It depends on the prompt and trial only, never on the alpha, the worker or the
    execution order: the same command gives the same responses serially and under
    xdist, and all configs see common random numbers.
    """
    digest = hashlib.blake2b(f"{base_seed}\x1f{key}\x1f{trial}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # torch seeds are signed 64-bit


def build_cases(
    rows: Sequence[PromptRow], configs: Sequence[SteeringConfig], *, trials: int, seed: int, highlight: str
) -> list[Case]:
    """Config-major order, so each config's cases are contiguous for batching and scheduling."""
    spans = {row.key: highlights(row, highlight) for row in rows}
    return [
        Case(row, config, trial, case_seed(seed, row.key, trial), spans[row.key])
        for config in configs
        for row in rows
        for trial in range(trials)
    ]
