"""Collection-time planning: settings -> validated prompts -> the case list.

Every input problem surfaces here, before anything runs, as one collection error that
names the problem and the fix.
"""

from __future__ import annotations

import pytest

from pytest_steer.cases import Case, build_cases, steering_configs
from pytest_steer.data import DatasetError, Selection, load_rows, select
from pytest_steer.hub import HubUnavailableError
from pytest_steer.options import SteerSettings
from pytest_steer.sharding import select_shard


def plan_cases(settings: SteerSettings) -> list[Case]:
    from pytest_steer.models import ModelLoadError, check_model_source
    from pytest_steer.steering import SteeringError
    from pytest_steer.steering.heads import parse_heads
    from pytest_steer.steering.stack import check_steering_stack

    try:
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
        configs = steering_configs(settings.alpha)
        if any(config.steered for config in configs):
            check_steering_stack(settings.attn_implementation)
        return build_cases(rows, configs, trials=settings.trials, seed=settings.seed, highlight=settings.highlight)
    except (DatasetError, HubUnavailableError, ModelLoadError, SteeringError, ValueError) as exc:
        raise pytest.Collector.CollectError(f"pytest-steer: {exc}") from None
