"""``auto`` during a run: the strength chosen on the selection prompts before any evaluation case of the grid.

The plan puts every selection case first (:func:`pytest_steer.plan.collection.choice_cases`), and no
generation batch mixes the two parts. When the first evaluation case of a candidate is about to
generate, the choice is made from the selection records with
:func:`pytest_steer.stats.choice.choose_strength`; the chosen candidate's evaluation cases generate,
the others are skipped, never generated. Under xdist each worker chooses for itself from every
worker's records, shared as ``--steer-sequential`` shares them (:mod:`pytest_steer.run.shared_records`),
and the controller chooses again from the records it received: the same records give the same choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_steer.plan.cases import BASELINE
from pytest_steer.plan.choice import ChoicePlan
from pytest_steer.plan.options import SteerSettings
from pytest_steer.run.gating import error_budget
from pytest_steer.stats.aggregate import aggregate
from pytest_steer.stats.choice import StrengthChoice, choose_strength
from pytest_steer.stats.gate_language import parse_gate
from pytest_steer.stats.levels import CONFIDENCE, one_sided_error


def needed_for_choice(choice: ChoicePlan, key: str, config: str) -> bool:
    """Whether the choice reads the case of prompt ``key`` under ``config``: a selection case."""
    return choice.split.part_of(key) == "selection" and (config == BASELINE or config in choice.candidates)


def choose(
    settings: SteerSettings, choice: ChoicePlan, records: Sequence[Mapping[str, Any]], *, unchosen: str | None = None
) -> StrengthChoice:
    """The strength the selection ``records`` choose; none, with ``unchosen`` as the reason, when the run cannot choose."""
    kept = [r for r in records if needed_for_choice(choice, str(r["key"]), str(r["config"]))]
    aggregates = aggregate(kept, seed=settings.seed, confidence=CONFIDENCE)
    candidates, chosen, config, reason = choose_strength(
        aggregates,
        choice.grid,
        [parse_gate(text) for text in settings.fail_if],
        following=settings.choose_by,
        max_errors=error_budget(settings.max_errors),
        min_prompts=settings.min_prompts,
    )
    if unchosen is not None:
        chosen, config, reason = None, None, unchosen
    return StrengthChoice(
        method=choice.method,
        parameter=choice.parameter,
        constraint=list(settings.fail_if),
        following=settings.choose_by,
        error=one_sided_error(CONFIDENCE),
        candidates=candidates,
        chosen=chosen,
        chosen_config=config,
        reason=reason,
        selection_prompts=list(choice.split.selection),
        evaluation_prompts=list(choice.split.evaluation),
    )


def skip_reason(choice: StrengthChoice, config: str) -> str | None:
    """Why a candidate's evaluation case is not generated, or None for the chosen one."""
    if config == choice.chosen_config:
        return None
    if choice.chosen_config is None:
        return f"not chosen: {choice.method} {choice.parameter}=auto chose none ({choice.reason})"
    return f"not chosen: {choice.method} {choice.parameter}=auto chose {choice.chosen:g} ({choice.chosen_config}) on the selection prompts"
