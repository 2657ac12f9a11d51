"""A run that chooses what to ship splits its prompts: a selection part chooses, an evaluation part reports.

The split is by prompt key, seeded: each key's rank is a hash of (seed, key), the first
``round(share * n)`` keys by rank select and the rest evaluate. It depends on the keys and the
seed only, so every xdist worker and a rerun draw the same parts, and a prompt added to the
dataset moves at most one other prompt across the line.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_steer.plan.cases import SteeringConfig
from pytest_steer.plan.option_values import AUTO
from pytest_steer.stats.gate_language import parse_gate

MIN_PART = 2  # prompts in each part: a paired interval needs two


@dataclass(frozen=True)
class PromptSplit:
    selection: tuple[str, ...]
    evaluation: tuple[str, ...]

    def part_of(self, key: str) -> str | None:
        if key in self._selection_set:
            return "selection"
        return "evaluation" if key in self._evaluation_set else None

    @functools.cached_property
    def _selection_set(self) -> frozenset[str]:
        return frozenset(self.selection)

    @functools.cached_property
    def _evaluation_set(self) -> frozenset[str]:
        return frozenset(self.evaluation)


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"split\x1f{seed}\x1f{key}".encode(), digest_size=8).digest()


def seeded_order(keys: Sequence[str], seed: int) -> list[str]:
    """``keys`` in the split's seeded random order: the selection part is its first keys."""
    return sorted(keys, key=lambda key: _rank(seed, key))


def split_prompts(keys: Sequence[str], share: float, seed: int, *, min_part: int = MIN_PART) -> PromptSplit:
    """Split ``keys`` into selection (``share`` of them) and evaluation parts, each in the given order."""
    if not 0 < share < 1:
        raise ValueError(f"--steer-selection-share {share:g} must be between 0 and 1 (exclusive), e.g. 0.5")
    ranked = seeded_order(keys, seed)
    count = round(share * len(keys))
    chosen = set(ranked[:count])
    selection = tuple(key for key in keys if key in chosen)
    evaluation = tuple(key for key in keys if key not in chosen)
    _check_sizes(len(selection), len(evaluation), len(keys), share, min_part)
    return PromptSplit(selection, evaluation)


def given_split(selection: Sequence[str], evaluation: Sequence[str], *, min_part: int = MIN_PART) -> PromptSplit:
    """The parts of a run given a selection dataset of its own (``--steer-selection-data``)."""
    shared = sorted(set(selection) & set(evaluation))
    if shared:
        raise ValueError(
            f"the selection dataset and the evaluation dataset share prompt key(s) {', '.join(shared[:3])}: selection must "
            "never see the prompts that report the result; give the selection data other prompts (or other keys)"
        )
    _check_sizes(len(selection), len(evaluation), len(selection) + len(evaluation), None, min_part)
    return PromptSplit(tuple(selection), tuple(evaluation))


def _check_sizes(selection: int, evaluation: int, total: int, share: float | None, min_part: int) -> None:
    if selection >= min_part and evaluation >= min_part:
        return
    how = f"--steer-selection-share {share:g} of {total} prompts" if share is not None else "the two datasets"
    raise ValueError(
        f"{how} leaves {selection} selection and {evaluation} evaluation prompt(s); each part needs at least "
        f"{min_part}: use more prompts (--steer-limit, --steer-dataset) or another share"
    )


@dataclass(frozen=True)
class ChoicePlan:
    """A run that chooses a strength: the grid's configs (weakest first) and the prompts' two parts."""

    method: str
    parameter: str
    grid: tuple[tuple[float, str], ...]  # (value, config name)
    split: PromptSplit

    @functools.cached_property
    def candidates(self) -> frozenset[str]:
        return frozenset(config for _, config in self.grid)

    def decides(self, key: str, config: str) -> bool:
        """Whether the case of prompt ``key`` under ``config`` waits for the choice: a candidate's evaluation case."""
        return config in self.candidates and self.split.part_of(key) == "evaluation"


def auto_parameter(alpha: Sequence[object], methods: Sequence[tuple[str, Sequence[tuple[str, object]]]]) -> tuple[str, str] | None:
    """``(method, parameter)`` that a run chooses (``--steer-alpha auto``, ``--steer-method NAME:PARAM=auto``), or None."""
    chosen = [("pasta", "alpha")] if AUTO in alpha else []
    chosen += [(name, key) for name, params in methods for key, value in params if value == AUTO]
    if len(chosen) > 1:
        listed = ", ".join(f"{method}:{parameter}" for method, parameter in chosen)
        raise ValueError(f"a run chooses one strength, and {listed} are all auto: keep auto on one, give the others values")
    if chosen and AUTO in alpha and len(alpha) > 1:
        raise ValueError("--steer-alpha auto chooses among --steer-grid: give no other alpha with it (add it to --steer-grid)")
    return chosen[0] if chosen else None


def choice_grid(method: str, parameter: str, configs: Sequence[SteeringConfig], fail_ifs: Sequence[str]) -> tuple[tuple[float, str], ...]:
    """The candidates of the chosen ``method``'s ``parameter`` among the run's configs, weakest first, once the
    run is known to be able to choose: two values at least, and a constraint (a fail-if) on each."""
    grid = tuple(sorted((float(c.parameters[parameter]), c.name) for c in configs if c.method == method and parameter in c.parameters))
    if len(grid) < 2:
        raise ValueError(
            f"auto chooses {method}'s {parameter} from --steer-grid, which holds {len(grid)} value(s): give two or more, "
            "e.g. --steer-grid 2,5,10,15,20,30 (or give the one value instead of auto)"
        )
    for value, name in grid:
        alpha = value if method == "pasta" else None
        if not any(gate.selector.selects(name, alpha, baseline=False, delta=gate.delta) for gate in map(parse_gate, fail_ifs)):
            raise ValueError(
                f"auto chooses the strongest {parameter} shown to meet a constraint, and no --steer-fail-if constrains "
                f"{name}: add one, e.g. --steer-fail-if 'quality - baseline < -0.5' (quality may drop by at most 0.5) "
                "or --steer-fail-if 'strict_prompt_accuracy < 0.3' (see docs/choosing.md)"
            )
    return grid
