"""Collection-time planning: settings -> configs -> validated prompts -> the case list.

Every input problem surfaces here, before anything runs, as one collection error that
names the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from pytest_steer.cases import Case, SteeringConfig, build_cases, steering_configs
from pytest_steer.data import DatasetError, Selection, load_rows, select
from pytest_steer.hub import HubUnavailableError
from pytest_steer.options import SteerSettings
from pytest_steer.sharding import select_shard
from pytest_steer.steering.method import SteeringMethod


@dataclass(frozen=True)
class Plan:
    configs: tuple[SteeringConfig, ...]
    cases: list[Case]


def run_configs(settings: SteerSettings, methods: Mapping[str, type[SteeringMethod]]) -> tuple[SteeringConfig, ...]:
    """The baseline, PASTA per --steer-alpha and each --steer-method, checked against the registered methods."""
    for name, _ in settings.method:
        if name not in methods:
            raise ValueError(
                f"--steer-method {name!r} is not a known steering method; known: {', '.join(sorted(methods))} "
                "(register more with the pytest_steer_methods hook)"
            )
    requested = [(name, dict(params)) for name, params in settings.method]
    return tuple(steering_configs(settings.alpha, requested, heads=settings.heads, scale_position=settings.scale_position))


def plan_cases(settings: SteerSettings, methods: Mapping[str, type[SteeringMethod]] | None = None) -> Plan:
    """The run's configs and cases; ``methods`` defaults to the built-in ones."""
    from pytest_steer.models import ModelLoadError, check_model_source
    from pytest_steer.steering import SteeringError
    from pytest_steer.steering.heads import parse_heads
    from pytest_steer.steering.registry import method_registry
    from pytest_steer.steering.stack import check_steering_stack

    try:
        configs = run_configs(settings, methods if methods is not None else method_registry())
        if settings.heads:
            parse_heads(settings.heads)  # syntax now; layer range once the model is known
        check_model_source(settings.model)
        rows = load_rows(settings.dataset, split=settings.dataset_split)
        selection = Selection(
            single_instruction=settings.single_instruction,
            instruction_ids=settings.instruction_ids,
            per_instruction=settings.per_instruction,
            sample_seed=settings.sample_seed,
            limit=settings.limit,
        )
        rows = select(rows, selection, origin=settings.dataset)
        if settings.shard is not None:
            rows = select_shard(rows, settings.shard)
        if any(config.method == "pasta" for config in configs):
            check_steering_stack(settings.attn_implementation)
        cases = build_cases(rows, configs, trials=settings.trials, seed=settings.seed, highlight=settings.highlight)
        return Plan(configs, cases)
    except (DatasetError, HubUnavailableError, ModelLoadError, SteeringError, ValueError) as exc:
        raise pytest.Collector.CollectError(f"pytest-steer: {exc}") from None
