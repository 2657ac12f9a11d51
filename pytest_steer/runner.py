"""Runs cases on one worker: loads the model once, generates in batches, checks and records.

A case's response is produced together with the other cases of its generation batch the
first time any of them is needed. Batches are planned from the full case list of a
config, which every worker collects identically, so a batch (and therefore every
response) is the same in a serial run and under xdist.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from pytest_steer.cases import Case, SteeringConfig
from pytest_steer.generation import Engine, GenerationRequest, GenerationSettings, auto_batch_size, plan_batches
from pytest_steer.ifeval import evaluate
from pytest_steer.models import LoadedModel, load_model
from pytest_steer.options import SteerSettings
from pytest_steer.records import CaseRecord
from pytest_steer.steering import PASTA, default_head_layers, parse_heads

Progress = Callable[[str], None]


def generation_settings(settings: SteerSettings) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=settings.max_new_tokens, greedy=settings.greedy, temperature=settings.temperature, top_p=settings.top_p
    )


class CaseRunner:
    def __init__(self, settings: SteerSettings, cases: Sequence[Case], *, worker_index: int | None = None, progress: Progress | None = None) -> None:
        self.settings = settings
        self.worker_index = worker_index
        self.progress = progress or (lambda message: None)
        self._cases_by_config: dict[str, list[Case]] = {}
        for case in cases:
            self._cases_by_config.setdefault(case.config.name, []).append(case)
        self._records: dict[str, CaseRecord] = {}
        self._batches: dict[str, list[list[Case]]] = {}
        self._loaded: LoadedModel | None = None
        self._engine: Engine | None = None

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            start = time.perf_counter()
            s = self.settings
            self._loaded = load_model(
                s.model, device=s.device, dtype=s.dtype, attn_implementation=s.attn_implementation, worker_index=self.worker_index
            )
            fp = self._loaded.fingerprint
            self.progress(f"loaded {fp.name} ({fp.dtype}, {fp.attn_implementation}) on {self._loaded.device} in {time.perf_counter() - start:.1f} s")
        return self._loaded

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.loaded, generation_settings(self.settings))
        return self._engine

    def steering(self, config: SteeringConfig) -> PASTA | None:
        if not config.steered:
            return None
        num_layers = self.loaded.model.config.num_hidden_layers
        heads = parse_heads(self.settings.heads, num_layers) if self.settings.heads else default_head_layers(num_layers)
        return PASTA(head_config=heads, alpha=config.alpha, scale_position=self.settings.scale_position)

    def record(self, case: Case) -> CaseRecord:
        if case.id not in self._records:
            self._run_batch(self._batch_of(case))
        return self._records[case.id]

    def _plan(self, config_name: str) -> list[list[Case]]:
        if config_name not in self._batches:
            cases = self._cases_by_config[config_name]
            lengths = self.engine.prompt_lengths([case.row.prompt for case in cases])
            size = self.settings.batch_size or auto_batch_size(self.loaded, max(lengths), self.settings.max_new_tokens)
            self._batches[config_name] = [[cases[i] for i in batch] for batch in plan_batches(lengths, size)]
        return self._batches[config_name]

    def _batch_of(self, case: Case) -> list[Case]:
        for batch in self._plan(case.config.name):
            if any(member.id == case.id for member in batch):
                return batch
        raise KeyError(f"case {case.id} is not in the collected plan")

    def _run_batch(self, batch: list[Case]) -> None:
        config = batch[0].config
        plan = self._plan(config.name)
        start = time.perf_counter()
        requests = [GenerationRequest(case.row.prompt, case.seed, case.highlights) for case in batch]
        try:
            generations = self.engine.generate(requests, self.steering(config))
        except Exception as exc:  # one failed batch must not lose the rest of the run
            for case in batch:
                self._records[case.id] = _error_record(case, f"generation failed: {type(exc).__name__}: {exc}")
            self.progress(f"{config.name}: batch {plan.index(batch) + 1}/{len(plan)} failed: {exc}")
            return
        for case, generation in zip(batch, generations):
            self._records[case.id] = self._check(case, generation.text, generation.n_new_tokens, list(generation.missing_spans))
        done = sum(len(b) for b in plan[: plan.index(batch) + 1])
        total = sum(len(b) for b in plan)
        tokens = sum(g.n_new_tokens for g in generations)
        elapsed = time.perf_counter() - start
        self.progress(f"{config.name}: batch {plan.index(batch) + 1}/{len(plan)}, {done}/{total} cases, {tokens / elapsed:.0f} tokens/s")

    def _check(self, case: Case, response: str, n_new_tokens: int, missing: list[str]) -> CaseRecord:
        row = case.row
        try:
            verdict = evaluate(row.prompt, response, list(row.instruction_id_list), [dict(k) for k in row.kwargs])
        except Exception as exc:
            return _error_record(case, f"checking failed: {type(exc).__name__}: {exc}", response=response)
        return CaseRecord(
            key=row.key,
            config=case.config.name,
            alpha=case.config.alpha,
            trial=case.trial,
            seed=case.seed,
            prompt=row.prompt,
            response=response,
            instruction_id_list=list(row.instruction_id_list),
            strict=list(verdict.strict),
            loose=list(verdict.loose),
            follow_all_strict=verdict.follow_all_strict,
            follow_all_loose=verdict.follow_all_loose,
            quality=None,
            n_new_tokens=n_new_tokens,
            missing_spans=missing,
            cached=False,
            model=self.loaded.fingerprint.to_dict(),
        )


def _error_record(case: Case, error: str, response: str = "") -> CaseRecord:
    return CaseRecord(
        key=case.row.key,
        config=case.config.name,
        alpha=case.config.alpha,
        trial=case.trial,
        seed=case.seed,
        prompt=case.row.prompt,
        response=response,
        instruction_id_list=list(case.row.instruction_id_list),
        strict=[],
        loose=[],
        follow_all_strict=False,
        follow_all_loose=False,
        quality=None,
        n_new_tokens=0,
        missing_spans=[],
        cached=False,
        error=error,
    )
