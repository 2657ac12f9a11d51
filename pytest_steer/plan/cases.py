"""The case plan: prompts × steering configs × trials, with their seeds and test ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from pytest_steer.plan.data import PromptRow, highlights
from pytest_steer.steering.parameters import FilePath

BASELINE = "baseline"
_CONFIG_NAME = r"[A-Za-z0-9_.]+"
_STEM_LENGTH = 32  # of a file parameter's stem in a config name
# what a case id leaves in a node id's parameters: ...-<config>-t<trial>, then "-" or "]" (config names never hold "-")
_CASE_ID_TAIL = re.compile(rf"-{_CONFIG_NAME}-t\d+[-\]]")


def may_name_a_case(nodeid: str) -> bool:
    """Whether a node id's parameters could hold a case id: a test that needs no plan, for runs with no steer test."""
    return _CASE_ID_TAIL.search(nodeid) is not None


def case_id(key: str, config: str, trial: int) -> str:
    """The one spelling of a case's id, e.g. ``s004-pasta_alpha10-t2``."""
    return f"{key}-{config}-t{trial}"


@dataclass(frozen=True)
class SteeringConfig:
    """The unsteered baseline (``method is None``) or one steering method with its parameters."""

    name: str
    method: str | None
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, method: str, params: Mapping[str, Any], *, named_by: Sequence[str] | None = None) -> SteeringConfig:
        """A config named after its method and the parameters in ``named_by`` (default: all of them).

        A :class:`~pytest_steer.steering.parameters.FilePath` value is named by the file's stem and a
        short digest of the path as given (``vector=runs/a/direction.safetensors`` gives
        ``_vectordirection_`` and six hex digits): short, and two files with one stem stay apart. A text value
        ending in ``.json`` (a head set's file) is named the same way.
        """
        shown = params if named_by is None else {name: params[name] for name in named_by if name in params}
        suffix = "".join(f"_{name}{_name_part(value)}" for name, value in shown.items())
        return cls(method + suffix, method, tuple(params.items()))

    @property
    def steered(self) -> bool:
        return self.method is not None

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def alpha(self) -> float | None:
        """PASTA's strength; None for every other config."""
        return self.parameters.get("alpha") if self.method == "pasta" else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "params": self.parameters}


def _name_part(value: Any) -> str:
    if isinstance(value, FilePath) or (isinstance(value, str) and value.endswith(".json")):  # a file (a heads.json)
        stem = re.sub(r"[^A-Za-z0-9_.]+", "_", PurePath(value).stem).strip("_.")[:_STEM_LENGTH]
        return f"{stem or 'file'}_{hashlib.sha256(value.encode()).hexdigest()[:6]}"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    # "-" reads as minus, ":" as a JSON head set's layer-to-heads ('{"12": [3]}' gives 12h3)
    return re.sub(r"[^A-Za-z0-9_.]", "", text.replace("-", "m").replace(":", "h"))


@dataclass(frozen=True)
class Case:
    row: PromptRow
    config: SteeringConfig
    trial: int
    seed: int
    highlights: tuple[str, ...]

    @property
    def id(self) -> str:
        return case_id(self.row.key, self.config.name, self.trial)


def steering_configs(
    alphas: Sequence[float],
    methods: Sequence[tuple[str, Mapping[str, Any]]] = (),
    *,
    heads: str | None = None,
    scale_position: str = "include",
) -> list[SteeringConfig]:
    """The baseline, PASTA at each alpha (ascending), then each ``(method, params)`` in order."""
    configs = [SteeringConfig(BASELINE, None)]
    for alpha in sorted(alphas):
        configs.append(SteeringConfig.of("pasta", {"alpha": alpha, "heads": heads, "scale_position": scale_position}, named_by=["alpha"]))
    for method, params in methods:
        configs.append(SteeringConfig.of(method, params))
    names = [config.name for config in configs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"configs {', '.join(repeated)} are asked for twice; give each method and alpha once")
    return configs


def case_seed(base_seed: int, key: str, trial: int) -> int:
    """Seed of one sampled response.

    It depends on the prompt and trial only, never on the alpha, the worker or the
    execution order: the same command gives the same responses serially and under
    xdist, and all configs see common random numbers.
    """
    digest = hashlib.blake2b(f"{base_seed}\x1f{key}\x1f{trial}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # torch seeds are signed 64-bit


def build_cases(rows: Sequence[PromptRow], configs: Sequence[SteeringConfig], *, trials: int, seed: int, highlight: str) -> list[Case]:
    """Config-major order, so each config's cases are contiguous for batching and scheduling."""
    spans = {row.key: highlights(row, highlight) for row in rows}
    return [
        Case(row, config, trial, case_seed(seed, row.key, trial), spans[row.key])
        for config in configs
        for row in rows
        for trial in range(trials)
    ]
