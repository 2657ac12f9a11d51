"""Collection-time planning: settings -> configs -> validated prompts -> the case list.

Every input problem surfaces here, before anything runs, as one collection error that
names the problem and the fix.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_steer.model.devices import device_type_without_torch
from pytest_steer.model.prompts import prompt_lengths
from pytest_steer.plan import preflight
from pytest_steer.plan.batches import running_rows, sequential_block_size, stream_indices
from pytest_steer.plan.cases import Case, SteeringConfig, build_cases, steering_configs
from pytest_steer.plan.choice import MIN_PART, ChoicePlan, auto_parameter, choice_grid, given_split, split_prompts
from pytest_steer.plan.data import DatasetError, PromptRow, Selection, load_rows, select
from pytest_steer.plan.method_spec import Sweep, method_sweep
from pytest_steer.plan.option_values import AUTO
from pytest_steer.plan.options import SteerSettings
from pytest_steer.plan.sharding import select_shard
from pytest_steer.plan.spec import RunSpec
from pytest_steer.steering import SteeringError, SteeringWarning
from pytest_steer.steering.method import SteeringMethod, shares_batches
from pytest_steer.steering.registry import bind_method_parameters, method_registry
from pytest_steer.store.hub import HubUnavailableError
from pytest_steer.store.responses import PROMPT_TOKENS, ResponseCache, prompt_tokens_key


@dataclass(frozen=True)
class Plan:
    configs: tuple[SteeringConfig, ...]
    cases: list[Case]
    batches: dict[str, list[list[str]]]  # group of configs ("baseline+pasta_alpha10") -> its batches, as case ids
    blocks: tuple[tuple[str, ...], ...] = ()  # --steer-sequential: the prompt keys of each block, in generation order
    block_size: int = 0  # --steer-sequential: prompts per block (the last may hold fewer)
    choice: ChoicePlan | None = None  # a run that chooses a strength (auto): its grid and its prompts' two parts

    def work_units(self) -> dict[str, str]:
        """Case id -> the work unit that runs it under xdist: its group of configs and batch."""
        return {
            case_id: f"{name}#{index}" for name, batches in self.batches.items() for index, batch in enumerate(batches) for case_id in batch
        }

    @functools.cached_property
    def block_of(self) -> dict[str, int]:
        """--steer-sequential: prompt key -> its block's index."""
        return {key: index for index, block in enumerate(self.blocks) for key in block}

    @functools.cached_property
    def by_id(self) -> dict[str, Case]:
        return {case.id: case for case in self.cases}

    def case_id_of(self, nodeid: str) -> str | None:
        """The case a test's node id names among its parameter ids, whatever else parametrizes the test.

        pytest joins the ids of every parametrization with "-" (``test_x[1-s004-baseline-t0]``),
        in an order it chooses, and a prompt key may hold "-" itself: every run of
        "-"-separated parts is looked up among the plan's case ids.
        """
        start = nodeid.find("[", nodeid.find("::"))
        if start < 0 or not nodeid.endswith("]"):
            return None
        parts = nodeid[start + 1 : -1].split("-")
        for length in range(len(parts), 2, -1):  # a case id has at least three parts: key, config, trial
            for first in range(len(parts) - length + 1):
                candidate = "-".join(parts[first : first + length])
                if candidate in self.by_id:
                    return candidate
        return None


def run_configs(settings: SteerSettings, methods: Mapping[str, type[SteeringMethod]]) -> tuple[SteeringConfig, ...]:
    """The baseline, PASTA per --steer-alpha and each --steer-method, checked against the registered methods."""
    for name, _ in settings.method:
        if name not in methods:
            raise ValueError(
                f"--steer-method {name!r} is not a known steering method; known: {', '.join(sorted(methods))} "
                "(register more with the pytest_steer_methods hook)"
            )
    grid = Sweep(f"{value:g}" for value in settings.grid)
    requested = [
        (name, bind_method_parameters(methods[name], name, params.items()))
        for name, swept in settings.method
        for params in method_sweep(tuple((key, grid if value == AUTO else value) for key, value in swept))
    ]
    alphas = settings.grid if AUTO in settings.alpha else settings.alpha
    return tuple(steering_configs(alphas, requested, heads=settings.heads, scale_position=settings.scale_position))


def run_choice(
    settings: SteerSettings, configs: Sequence[SteeringConfig], keys: Sequence[str], selection_keys: Sequence[str] = ()
) -> ChoicePlan | None:
    """What a run that chooses a strength plans: the grid's configs and the prompts' parts (None for a run that does not).

    ``keys`` are --steer-dataset's prompts; ``selection_keys`` --steer-selection-data's, when given."""
    chosen = auto_parameter(settings.alpha, settings.method)
    if chosen is None:
        if settings.selection_data is not None:
            raise ValueError("--steer-selection-data chooses an auto value, and this run chooses none: add --steer-alpha auto, or drop it")
        return None
    if settings.sequential:
        raise ValueError("auto is not yet chosen under --steer-sequential: drop one of them (the choice reads every selection prompt)")
    if settings.shard is not None:
        raise ValueError("auto chooses on the whole run's selection prompts, and --steer-shard splits them: run the choice unsharded")
    method, parameter = chosen
    grid = choice_grid(method, parameter, configs, settings.fail_if)
    least = max(MIN_PART, settings.min_prompts)
    if settings.selection_data is not None:
        split = given_split(selection_keys, keys, min_part=least)
    else:
        split = split_prompts(keys, settings.selection_share, settings.seed, min_part=least)
    return ChoicePlan(method, parameter, grid, split)


def plan_cases(
    settings: SteerSettings, methods: Mapping[str, type[SteeringMethod]] | None = None, *, cache_dir: Path | None = None
) -> Plan:
    """The run's configs and cases, after every check that needs no model weights.

    ``methods`` defaults to the built-in ones. Prompt lengths are read from the response
    cache under ``cache_dir`` when it holds them, so a fully cached run loads no tokenizer.
    """
    from pytest_steer.model.loading import ModelLoadError  # why: imports huggingface_hub; this module loads with the plugin

    methods = methods if methods is not None else method_registry()
    try:
        configs = run_configs(settings, methods)
        check_settings(settings, configs)
        with naming("--steer-dataset"):
            rows = load_rows(settings.dataset, split=settings.dataset_split)
            selection = Selection(
                single_instruction=settings.single_instruction,
                instruction_ids=settings.instruction_ids,
                per_instruction=settings.per_instruction,
                sample_seed=settings.sample_seed,
                limit=settings.limit,
            )
            rows = select(rows, selection, origin=settings.dataset)
        selection_rows: list[PromptRow] = []
        if settings.selection_data is not None:
            with naming("--steer-selection-data"):
                selection_rows = select(
                    load_rows(settings.selection_data, split=settings.dataset_split), selection, origin=settings.selection_data
                )
        with naming("--steer-alpha auto" if AUTO in settings.alpha else "--steer-method"):
            choice = run_choice(settings, configs, [row.key for row in rows], [row.key for row in selection_rows])
        rows = [*selection_rows, *rows]
        preflight.check_min_prompts(settings, len(rows))  # the whole run's prompts: a shard or a -k selection holds fewer
        if settings.shard is not None:
            with naming("--steer-shard"):
                rows = select_shard(rows, settings.shard)
        cache = ResponseCache(cache_dir) if cache_dir is not None else None
        prompt_tokens = check_model(settings, configs, methods, [row.prompt for row in rows], cache, rows=rows)
        for config in configs:
            if config.method == "pasta" and config.alpha == 1.0:
                note = f"{config.name} is the identity (log 1 = 0): its responses are the baseline's, read from the response cache"
                warnings.warn(SteeringWarning(note), stacklevel=1)
        with naming("--steer-highlight"):
            cases = build_cases(rows, configs, trials=settings.trials, seed=settings.seed, highlight=settings.highlight)
        lengths = {row.key: length for row, length in zip(rows, prompt_tokens)}
        blocks: tuple[tuple[str, ...], ...] = ()
        block_size = 0
        if choice is not None:
            cases, phases = choice_cases(cases, choice)
            return Plan(configs, cases, plan_batches(cases, lengths, settings, phases, methods), choice=choice)
        if settings.sequential:
            from pytest_steer.stats.eprocess import prompt_blocks  # why: imports numpy; this module loads with the plugin

            block_size = settings.sequential_block or sequential_block_size(batch_rows(settings), len(configs) * settings.trials)
            blocks = tuple(tuple(block) for block in prompt_blocks([row.key for row in rows], block_size, settings.seed))
            block_of = {key: index for index, block in enumerate(blocks) for key in block}
            cases = sorted(cases, key=lambda case: block_of[case.row.key])  # stable: config-major within a block
        return Plan(configs, cases, plan_batches(cases, lengths, settings, blocks, methods), blocks, block_size=block_size)
    except (DatasetError, HubUnavailableError, ModelLoadError, SteeringError, ValueError) as exc:
        raise pytest.Collector.CollectError(f"pytest-steer: {exc}") from None


def choice_cases(cases: list[Case], choice: ChoicePlan) -> tuple[list[Case], tuple[tuple[str, ...], ...]]:
    """The cases of a run that chooses: the selection prompts under the baseline and the grid, first, then the
    evaluation prompts under every config; and the two parts, which no generation batch spans."""
    split = choice.split
    chooses = [
        case
        for case in cases
        if split.part_of(case.row.key) == "selection" and (not case.config.steered or case.config.name in choice.candidates)
    ]
    reports = [case for case in cases if split.part_of(case.row.key) == "evaluation"]
    return chooses + reports, (split.selection, split.evaluation)


class OptionError(ValueError):
    """A library error with the option it came from in front."""


@contextlib.contextmanager
def naming(option: str) -> Iterator[None]:
    """Put the option's name in front of the errors of library calls made for it."""
    from pytest_steer.model.loading import ModelLoadError  # why: imports huggingface_hub; this module loads with the plugin

    try:
        yield
    except (DatasetError, HubUnavailableError, ModelLoadError, SteeringError, ValueError) as exc:
        raise OptionError(preflight.with_option(option, str(exc))) from None


def check_settings(settings: SteerSettings, configs: tuple[SteeringConfig, ...]) -> None:
    """What the options alone decide: device, dtype, outputs, baseline file and its settings, gate selectors,
    quality checks under no quality scoring, reward model."""
    preflight.check_device(settings.device)
    preflight.check_dtype(settings.dtype, settings.device)
    if settings.report_dir is not None:
        preflight.check_writable_dir(settings.report_dir, "--steer-report-dir")
    for option, path in (("--steer-json", settings.json), ("--steer-summary-md", settings.summary_md), ("--steer-save", settings.save)):
        if path is not None:
            preflight.check_writable_file(path, option)
    if settings.baseline is not None:
        preflight.check_baseline_file(settings.baseline, RunSpec.from_settings(settings, configs))
    preflight.check_gate_selectors(settings.gate, configs)
    preflight.check_gate_selectors(settings.fail_if, configs, option="--steer-fail-if")
    preflight.check_quality_is_scored(settings)
    preflight.check_sequential(settings)
    preflight.check_reward_model_offline(settings.quality)


def check_model(
    settings: SteerSettings,
    configs: tuple[SteeringConfig, ...],
    methods: Mapping[str, type[SteeringMethod]],
    prompts: list[str],
    cache: ResponseCache | None = None,
    *,
    rows: Sequence[PromptRow] = (),
) -> list[int]:
    """What the model's config.json and tokenizer decide, without its weights: heads, architecture,
    context, and whether each method can steer the run's prompt ``rows``. Returns each prompt's length
    in tokens (in characters when the tokenizer is not at hand)."""
    # why: imports huggingface_hub; this module loads with the plugin
    from pytest_steer.model.loading import (
        EMBEDDED,
        check_model_source,
        embedded_checkpoint,
        read_model_config,
    )

    with naming("--steer-model"):
        check_model_source(settings.model)
        if settings.model == EMBEDDED:
            embedded_checkpoint()  # converted once per machine; its config and tokenizer are needed below
        config = read_model_config(settings.model)
    if settings.heads:
        preflight.check_heads(settings.heads, config)
    lengths = [len(prompt) for prompt in prompts]
    if config is not None:
        from_method_option = {c.name for c in configs[len(configs) - len(settings.method) :]}  # steering_configs puts them last
        for steered in (c for c in configs if c.method is not None):
            given = ",".join(f"{key}={value}" for key, value in steered.params)
            spec = f"{steered.method}{':' if given else ''}{given}"
            refused = None
            with naming(f"--steer-model {settings.model} under {steered.name}"):
                try:
                    made = methods[steered.method].create(steered.parameters, config)
                except (TypeError, ValueError) as exc:
                    if steered.name not in from_method_option or isinstance(exc, SteeringError):
                        raise
                    refused = f"{spec}: {exc}"  # a value the method itself refused
                else:
                    made.check_model_config(config)
            if refused is not None:
                raise OptionError(f"--steer-method {refused}")
            with naming(f"--steer-method {spec}"):
                made.check_prompts(rows)
        with naming("--steer-model"):
            lengths = prompt_token_lengths(settings.model, prompts, cache)
        preflight.check_context(config, settings.max_new_tokens, max(lengths, default=0))
    return lengths


def prompt_token_lengths(model: str, prompts: list[str], cache: ResponseCache | None) -> list[int]:
    """Each prompt's length in tokens after the chat template; the tokenizer is loaded only for lengths not cached."""
    # why: imports huggingface_hub; this module loads with the plugin
    from pytest_steer.model.loading import (
        load_tokenizer,
        tokenizer_revision,
    )

    revision = tokenizer_revision(model) if cache is not None else None  # None: lengths are not cached
    keys = [prompt_tokens_key({"model": model, "revision": revision}, prompt) for prompt in prompts] if revision else []
    found = [cache.get(PROMPT_TOKENS, key) for key in keys] if cache is not None else []
    lengths = {i: entry["tokens"] for i, entry in enumerate(found) if entry is not None}
    missing = [i for i in range(len(prompts)) if i not in lengths]
    if missing:
        for i, length in zip(missing, prompt_lengths(load_tokenizer(model), [prompts[i] for i in missing])):
            lengths[i] = length
            if cache is not None and keys:
                cache.put(PROMPT_TOKENS, keys[i], {"tokens": length})
    return [lengths[i] for i in range(len(prompts))]


def batch_rows(settings: SteerSettings) -> int:
    """Rows of a planned generation batch: ``--steer-batch-size``, else the device's planned size."""
    return running_rows(device_type(settings.device), settings.batch_size)


def device_type(spec: str) -> str:
    """The type of device ``--steer-device spec`` resolves to here; torch is asked only where a GPU may be."""
    from pytest_steer.model.loading import resolve_device  # why: imports huggingface_hub; this module loads with the plugin

    return device_type_without_torch(spec) or resolve_device(spec).type


def plan_batches(
    cases: list[Case],
    lengths: Mapping[str, int],
    settings: SteerSettings,
    blocks: tuple[tuple[str, ...], ...] = (),
    methods: Mapping[str, type[SteeringMethod]] | None = None,
) -> dict[str, list[list[str]]]:
    """The run's generation batches, by group of configs that share them, as case ids: a pure function of the case
    list, so every xdist worker and the controller plan the same batches without a model.

    The configs whose rows can share a batch (the baseline, prompt methods, and methods with ``steer_together``:
    :func:`pytest_steer.steering.method.shares_batches`) are one group, named after its configs, and their cases
    fill batches together, so a batch is full whatever the number of configs; any other config keeps batches of
    its own. Within a group, cases of similar prompt length share a stream of up to ``STREAM_BATCHES`` batches'
    rows, of which the engine keeps a batch running. With sequential ``blocks``, no batch
    spans two blocks (a block's rows of every config run together), so generation can stop after any block; the
    rows of a config the looks stopped leave its batches (``CaseRunner.record``).
    """
    methods = methods if methods is not None else method_registry()
    size = batch_rows(settings)
    block_of = {key: index for index, block in enumerate(blocks) for key in block}
    configs = list(dict.fromkeys(case.config for case in cases))
    shared = {c.name for c in configs if c.method is None or (c.method in methods and shares_batches(methods[c.method]))}
    shared_group = "+".join(config.name for config in configs if config.name in shared)
    groups: dict[str, dict[int, list[Case]]] = {}
    for case in cases:
        group = shared_group if case.config.name in shared else case.config.name
        groups.setdefault(group, {}).setdefault(block_of.get(case.row.key, 0), []).append(case)
    return {
        name: [
            [group[i].id for i in batch]
            for _, group in sorted(by_block.items())
            for batch in stream_indices([lengths[c.row.key] for c in group], size)
        ]
        for name, by_block in groups.items()
    }
