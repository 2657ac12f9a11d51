"""Runs cases on one worker: loads the model once, generates in batches, checks and records.

A case's response is produced together with the other cases of its generation batch the
first time any of them is needed. Batches are planned from the full case list of a
config, which every worker collects identically, so a batch (and therefore every
response) is the same in a serial run and under xdist. Only the cases pytest selected
(``-k``, ``--lf``, ...) are generated: a response depends on its own prompt, seed and
settings, not on the other rows of its batch. Responses already in the response cache
(:mod:`pytest_steer.store.responses`) are read back; only a batch's misses are generated. Several
tests may request one case: its record is made once per worker and shared.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_steer.engine.requests import ENGINE_VERSION, Generation, GenerationRequest, GenerationSettings
from pytest_steer.ifeval import evaluate
from pytest_steer.model.devices import device_type_without_torch
from pytest_steer.model.kernels import LinearKernel
from pytest_steer.model.loading import LoadedModel, ModelFingerprint, load_model, model_fingerprint, read_model_config, resolve_device
from pytest_steer.model.numerics import FormatChoice, choose_format
from pytest_steer.plan.batches import running_rows
from pytest_steer.plan.cases import Case, SteeringConfig
from pytest_steer.plan.collection import Plan
from pytest_steer.plan.estimate import Throughput, read_throughput, record_throughput
from pytest_steer.plan.options import SteerSettings
from pytest_steer.plan.spec import RunSpec
from pytest_steer.run.records import CaseRecord
from pytest_steer.steering import PASTA, SteeringError
from pytest_steer.steering.identity import method_identity
from pytest_steer.steering.method import RunContext, SteeringMethod
from pytest_steer.steering.pasta.stack import check_steering_stack
from pytest_steer.store.responses import GENERATION, QUALITY, ResponseCache, generation_key, quality_key

if TYPE_CHECKING:
    from pytest_steer.engine.generation import Engine
    from pytest_steer.engine.quality import QualityScorer

Progress = Callable[..., None]  # (message or None, cases=..., generated=...): see pytest_steer.run.progress


def _silent(message: str | None, **counts: int) -> None:
    pass


class RunnerUnavailable(RuntimeError):
    """The model (or the stack under it) cannot be used on this worker: no case can run."""


def runner_for(settings: SteerSettings, plan: Plan, **options: Any) -> CaseRunner:
    """A runner of a plan with the built-in methods, outside a pytest session (benchmarks, tests)."""
    from pytest_steer.steering.registry import method_registry

    return CaseRunner(settings, RunSpec.from_settings(settings, plan.configs), plan, method_registry(), **options)


class CaseRunner:
    def __init__(
        self,
        settings: SteerSettings,
        spec: RunSpec,
        plan: Plan,
        methods: Mapping[str, type[SteeringMethod]],
        *,
        worker_index: int | None = None,
        progress: Progress | None = None,
        cache_dir: Path | None = None,
        number_format: FormatChoice | None = None,
        linear_kernel: LinearKernel | None = None,
    ) -> None:
        self.settings = settings
        self._number_format = number_format  # what --steer-dtype auto resolved to for this run, decided by the session
        self.linear_kernel = linear_kernel  # how a CPU's linear layers multiply, decided by the session; None: measured at load
        self.spec = spec
        self.methods = methods
        self._steering: dict[str, SteeringMethod | None] = {}
        self._unsteered: dict[str, dict[str, str]] = {}  # config name -> prompt key -> why its method leaves it unsteered
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self._from_cache: dict[str, int] = {}
        self._cache_warned = False
        self.worker_index = worker_index
        self.progress = progress or _silent
        self._cases = plan.cases
        self._selected: set[str] | None = None  # None: every case of the plan
        by_id = {case.id: case for case in plan.cases}
        # group of configs that share batches -> its batches (pytest_steer.plan.collection.plan_batches)
        self._batches = {group: [[by_id[i] for i in batch] for batch in batches] for group, batches in plan.batches.items()}
        self._group_of_case = {case.id: group for group, batches in self._batches.items() for batch in batches for case in batch}
        self._batch_of_case = {case.id: batch for batches in self._batches.values() for batch in batches for case in batch}
        self._cases_by_group: dict[str, list[Case]] = {}
        for case in plan.cases:
            self._cases_by_group.setdefault(self._group_of_case[case.id], []).append(case)
        self.measured = {"tokens": 0, "cases": 0, "seconds": 0.0}  # generation work, for the next run's estimate
        self._records: dict[str, CaseRecord] = {}
        self._loaded: LoadedModel | None = None
        self._load_failure: Exception | None = None
        self._engine: Engine | None = None
        self._scorer: QualityScorer | None = None
        self._scorer_failure: Exception | None = None

    @property
    def loaded(self) -> LoadedModel:
        """Loaded on first use, once per worker; a failure is remembered, not retried per case."""
        if self._load_failure is not None:
            raise self._load_failure
        if self._loaded is None:
            start = time.perf_counter()
            s = self.settings
            try:
                packed = self.linear_kernel.packed if self.linear_kernel is not None else None
                self._loaded = load_model(
                    s.model, device=s.device, dtype=self.dtype, attn_implementation=s.attn_implementation, worker_index=self.worker_index,
                    packed_linears=packed,
                )  # fmt: skip
            except Exception as exc:
                self._load_failure = RunnerUnavailable(f"--steer-model {s.model}: the model failed to load: {type(exc).__name__}: {exc}")
                raise self._load_failure from exc
            fp = self._loaded.fingerprint
            elapsed = time.perf_counter() - start
            chosen = "" if self.format_choice is None else f"; dtype auto: {self.format_choice.reason}"
            if self.linear_kernel is not None and self._loaded.device.type == "cpu":
                chosen += f"; linear: {self.linear_kernel.described(self._loaded.packed_layers)}"
            self.progress(f"loaded {fp.name} ({fp.dtype}, {fp.attn_implementation}{chosen}) on {self._loaded.device} in {elapsed:.1f} s")
        return self._loaded

    @property
    def model_loaded(self) -> bool:
        return self._loaded is not None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from pytest_steer.engine.generation import Engine  # why: imports torch, which reading cached responses must not

            self._engine = Engine(self.loaded, GenerationSettings(**self.spec.decoding), compile_mode=self.settings.compile)
        return self._engine

    @functools.cached_property
    def device_name(self) -> str:
        """The device this worker generates on, as torch names it (``cpu``, ``cuda:1``); torch is asked only where a
        GPU may be, so that a run served from the response cache can go without it."""
        s = self.settings
        return device_type_without_torch(s.device) or str(resolve_device(s.device, self.worker_index))

    @property
    def device_type(self) -> str:
        return self.device_name.partition(":")[0]

    @functools.cached_property
    def format_choice(self) -> FormatChoice | None:
        """What ``--steer-dtype auto`` resolved to on this device and why (kept beside the response cache); None when set."""
        if self.settings.dtype != "auto":
            return None
        if self._number_format is not None:
            return self._number_format
        return choose_format(self.device_type, self.cache.directory if self.cache is not None else None)

    @property
    def dtype(self) -> str:
        return self.settings.dtype if self.format_choice is None else self.format_choice.dtype

    @functools.cached_property
    def fingerprint(self) -> ModelFingerprint:
        """Of the weights this worker answers with, read from files: a fully cached run loads none."""
        s = self.settings
        return model_fingerprint(s.model, device_type=self.device_type, dtype=self.dtype, attn_implementation=s.attn_implementation)

    @functools.cached_property
    def model_config(self) -> Any:
        """The model's config.json, for making steering methods without loading weights."""
        return read_model_config(self.settings.model) or self.loaded.model.config

    @property
    def scorer(self) -> QualityScorer:
        """Created on first use, once per worker; a failure to create it is remembered, not retried."""
        if self._scorer_failure is not None:
            raise self._scorer_failure
        if self._scorer is None:
            start = time.perf_counter()
            from pytest_steer.engine.quality import create_scorer  # why: imports torch, which reading cached scores must not

            try:
                self._scorer = create_scorer(self.settings, self.loaded)
            except Exception as exc:
                self._scorer_failure = exc
                raise
            self.progress(f"quality: {self._scorer.description}, ready in {time.perf_counter() - start:.1f} s")
        return self._scorer

    def steering(self, config: SteeringConfig) -> SteeringMethod | None:
        """The config's method, made once for this model; None for the unsteered baseline."""
        if config.name not in self._steering:
            method = None if config.method is None else self.methods[config.method].create(config.parameters, self.model_config)
            if method is not None:
                method.bind_run(self._run_context())
            self._steering[config.name] = method
        return self._steering[config.name]

    def select(self, case_ids: set[str]) -> None:
        """Generate only these cases (pytest's selection); batches stay as planned from every case."""
        self._selected = set(case_ids)
        self._cases_by_group = {}
        for case in self._cases:
            if case.id in self._selected:
                self._cases_by_group.setdefault(self._group_of_case[case.id], []).append(case)

    def is_selected(self, case: Case) -> bool:
        return self._selected is None or case.id in self._selected

    def count_cached(self, cases: list[Case]) -> int | None:
        """How many of ``cases`` have their response in the response cache; None without a cache."""
        if self.cache is None:
            return None
        return sum(self._cached_generation(self._generation_key(case, self.steering(case.config))) is not None for case in cases)

    def throughput(self) -> Throughput | None:
        """The throughput an earlier run measured on this model and device; None when none did."""
        return read_throughput(self.cache.directory if self.cache is not None else None, self.fingerprint.to_dict(), self.device_type)

    def store_throughput(self) -> None:
        """Keep what this process measured beside the response cache, for the next run's estimate."""
        if self.cache is not None and self.measured["cases"]:
            m = self.measured
            record_throughput(
                self.cache.directory,
                self.fingerprint.to_dict(),
                self.device_type,
                tokens=int(m["tokens"]),
                cases=int(m["cases"]),
                max_new_tokens=self.settings.max_new_tokens,
                seconds=m["seconds"],
            )

    def _prompts(self) -> list[Any]:
        """The run's prompt rows, the same on every worker."""
        return list({case.row.key: case.row for case in self._cases}.values())

    def _run_context(self) -> RunContext:
        """The run's prompts (the same on every worker) and this worker's model, for methods that learn from them."""
        return RunContext(
            prompts=self._prompts(),
            model_key={**self.fingerprint.to_dict(), **self._environment()},
            cache_dir=None if self.cache is None else self.cache.directory,
            load_model=lambda: (self.loaded.model, self.loaded.tokenizer),
        )

    def needs_generation(self, method: str) -> bool:
        """Whether any case under ``method`` has no response in the cache yet (always, without a cache)."""
        cases = [case for case in self._cases if case.config.method == method and self.is_selected(case)]
        if self.cache is None or not cases:
            return bool(cases)
        return any(self._cached_generation(self._generation_key(case, self.steering(case.config))) is None for case in cases)

    def check_steering_stack(self) -> None:
        """Raise RunnerUnavailable unless PASTA works on the installed stack (probed once per process)."""
        try:
            check_steering_stack(self.settings.attn_implementation)
        except SteeringError as exc:
            raise RunnerUnavailable(str(exc)) from None

    @property
    def records(self) -> Mapping[str, CaseRecord]:
        """Case id -> record of every case this runner has made so far."""
        return self._records

    def record(self, case: Case, wanted: Callable[[Case], bool] | None = None) -> CaseRecord:
        """The case's record, its batch generated with it the first time: the batch's selected cases not recorded yet
        that are ``wanted`` (None: all; a sequential run leaves out the configs its looks stopped)."""
        if case.id not in self._records:
            batch = self._batch_of_case.get(case.id)
            if batch is None:
                raise KeyError(f"case {case.id} is not in the collected plan")
            mates = [c for c in batch if c.id != case.id and self.is_selected(c) and c.id not in self._records]
            self._run_batch([case, *(c for c in mates if wanted is None or wanted(c))])
        return self._records[case.id]

    def _plan(self, group: str) -> list[list[Case]]:
        """The group's batches that hold a selected case."""
        return [batch for batch in self._batches[group] if any(self.is_selected(case) for case in batch)]

    def _batch_number(self, group: str, batch: list[Case]) -> str:
        plan = self._plan(group)
        index = next((i for i, planned in enumerate(plan) if any(case.id == batch[0].id for case in planned)), 0)
        return f"{group}: batch {index + 1}/{len(plan)}"

    def _run_batch(self, batch: list[Case]) -> None:
        group = self._group_of_case[batch[0].id]
        start = time.perf_counter()
        try:
            keys, generations, cached = self._generations(batch)
        except RunnerUnavailable:  # no batch can run: the caller stops the run
            raise
        except Exception as exc:  # one failed batch must not lose the rest of the run
            for case in batch:
                self._records[case.id] = CaseRecord.failed_case(case, f"generation failed: {type(exc).__name__}: {exc}")
            self.progress(f"{self._batch_number(group, batch)} failed: {exc}", cases=len(batch))
            return
        elapsed = time.perf_counter() - start
        scoring_start = time.perf_counter()
        try:  # after generation, outside any steering: fluency reads the unsteered model
            qualities = self._qualities(batch, keys, generations)
        except Exception as exc:  # as for generation: these cases become errors, the run goes on
            for case, generation in zip(batch, generations):
                message = f"quality scoring failed: {type(exc).__name__}: {exc}"
                self._records[case.id] = CaseRecord.failed_case(case, message, response=generation.text)
            self.progress(f"{self._batch_number(group, batch)} quality scoring failed: {exc}", cases=len(batch))
            return
        scoring = time.perf_counter() - scoring_start
        for case, generation, quality, hit in zip(batch, generations, qualities, cached):
            missing = list(generation.missing_spans)
            self._records[case.id] = self._check(
                case, generation.text, generation.n_new_tokens, missing, quality, cached=hit, prepared=generation.prompt
            )
        self._report_progress(group, batch, generations, cached, elapsed, scoring)

    def _report_progress(
        self, group: str, batch: list[Case], generations: list[Generation], cached: list[bool], elapsed: float, scoring: float
    ) -> None:
        cases = self._cases_by_group.get(group, [])
        done = sum(case.id in self._records for case in cases)
        hits = sum(cached)
        self._from_cache[group] = self._from_cache.get(group, 0) + hits
        if hits < len(batch):
            tokens = sum(g.n_new_tokens for g, hit in zip(generations, cached) if not hit)
            self.measured["tokens"] += tokens
            self.measured["cases"] += len(batch) - hits
            self.measured["seconds"] += elapsed + scoring
            from_cache = f" ({hits} from cache)" if hits else ""
            self.progress(
                f"{self._batch_number(group, batch)}, {done}/{len(cases)} cases{from_cache}, "
                f"{tokens / elapsed:.0f} tokens/s, quality {scoring:.1f} s",
                cases=len(batch),
                generated=len(batch) - hits,
            )
        else:
            self.progress(None, cases=len(batch))
        if done == len(cases) and self._from_cache[group]:
            self.progress(f"{group}: {self._from_cache[group]} cases from cache")
        if self.cache is not None and self.cache.write_errors and not self._cache_warned:
            self._cache_warned = True
            self.progress(f"response cache not written ({self.cache.write_errors[0]}); choose a writable --steer-cache-dir")

    def _generations(self, batch: list[Case]) -> tuple[list[str | None], list[Generation], list[bool]]:
        """The batch's responses, its cache keys, and which responses came from the cache.

        Only the misses are generated, together as a smaller batch: a response depends on
        its own prompt, seed, config and settings, not on the other rows of its batch.
        """
        steering = [self.steering(case.config) for case in batch]
        keys = [self._generation_key(case, s) for case, s in zip(batch, steering)] if self.cache is not None else [None] * len(batch)
        found = [self._cached_generation(key) for key in keys]
        # a response keyed alike twice (a method at its identity beside the baseline) is generated once, then read as cached
        first_of_key: dict[str, int] = {}
        misses, repeats = [], []
        for i, generation in enumerate(found):
            if generation is None:
                key = keys[i]
                if key is not None and key in first_of_key:
                    repeats.append(i)
                    continue
                if key is not None:
                    first_of_key[key] = i
                misses.append(i)
        if misses:
            requests = [GenerationRequest(batch[i].row.prompt, batch[i].seed, batch[i].highlights, steering[i]) for i in misses]
            for i, generation in zip(misses, self._generate(requests)):
                found[i] = generation
                if self.cache is not None:
                    payload = {
                        "text": generation.text,
                        "n_new_tokens": generation.n_new_tokens,
                        "missing_spans": list(generation.missing_spans),
                        "prompt": generation.prompt,
                    }
                    self.cache.put(GENERATION, keys[i], payload)
        for i in repeats:
            found[i] = replace(found[first_of_key[keys[i]]], unsteered=None)  # type: ignore[arg-type]
        missed = set(misses)
        return keys, [g for g in found if g is not None], [i not in missed for i in range(len(batch))]

    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """The planned stream, a batch's rows running at once (on a GPU, as many as a third of its free memory holds)."""
        if any(isinstance(request.steering, PASTA) for request in requests):  # checked at collection too when PASTA had cases
            self.check_steering_stack()
        from pytest_steer.engine.generation import memory_batch_limit  # why: as in engine

        slots = running_rows(self.device_type, self.settings.batch_size)
        if self.settings.batch_size is None and self.device_type == "cuda":
            lengths = self.engine.prompt_lengths([request.prompt for request in requests])
            slots = memory_batch_limit(self.loaded, max(lengths), self.settings.max_new_tokens)
        return self.engine.generate(requests, slots=slots)

    def _cached_generation(self, key: str | None) -> Generation | None:
        entry = self.cache.get(GENERATION, key) if self.cache is not None and key is not None else None
        if entry is None:
            return None
        missing = tuple(entry["missing_spans"])
        return Generation(text=entry["text"], n_new_tokens=entry["n_new_tokens"], missing_spans=missing, prompt=entry["prompt"])

    def _qualities(self, batch: list[Case], keys: list[str | None], generations: list[Generation]) -> list[float | None]:
        """Quality scores of the batch's responses: cached ones as stored, the others scored together."""
        quality_keys = [quality_key(key, self.spec.quality) if key is not None else None for key in keys]
        scores: list[float | None] = [None] * len(batch)
        misses = []
        for i, key in enumerate(quality_keys):
            entry = self.cache.get(QUALITY, key) if self.cache is not None and key is not None else None
            if entry is None:
                misses.append(i)
            else:
                scores[i] = entry["quality"]
        if misses:
            prompts, responses = [batch[i].row.prompt for i in misses], [generations[i].text for i in misses]
            fresh = self.scorer.score(prompts, responses, [generations[i].unsteered for i in misses])
            for i, score in zip(misses, fresh):
                scores[i] = None if score is None else float(score)
                key = quality_keys[i]
                if self.cache is not None and key is not None:
                    self.cache.put(QUALITY, key, {"quality": scores[i]})
        return scores

    def _generation_key(self, case: Case, steering: SteeringMethod | None) -> str:
        """What a response depends on (the run spec's decoding, the method as made for this model); see pytest_steer.store.responses."""
        steering_key = None  # the baseline, and methods that change nothing, share the baseline's responses
        if steering is not None and not steering.is_identity:
            steering_key = {
                "method": steering.name,
                "params": steering.params(),
                "code": method_identity(type(steering)),
                "highlights": list(case.highlights),
            }
        return generation_key(
            model=self.fingerprint.to_dict(),
            environment=self._environment(),
            prompt=case.row.prompt,
            steering=steering_key,
            generation=dict(self.spec.decoding),
            seed=case.seed,
        )

    def _environment(self) -> dict[str, Any]:
        """What changes the numerics without changing any setting: device kind, engine, libraries."""
        compiled = {} if self.settings.compile is None else {"compile": self.settings.compile}  # fused kernels round otherwise
        return {"device": self.device_type, "engine": ENGINE_VERSION, **_library_versions(), **compiled}

    def _check(
        self,
        case: Case,
        response: str,
        n_new_tokens: int,
        missing: list[str],
        quality: float | None,
        *,
        cached: bool = False,
        prepared: str | None = None,
    ) -> CaseRecord:
        row = case.row
        if case.config.name not in self._unsteered:
            steering = self.steering(case.config)
            self._unsteered[case.config.name] = {} if steering is None else steering.unsteered(self._prompts())
        try:
            verdict = evaluate(row.prompt, response, list(row.instruction_id_list), [dict(k) for k in row.kwargs])
        except Exception as exc:
            return CaseRecord.failed_case(case, f"checking failed: {type(exc).__name__}: {exc}", response=response)
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
            quality=quality,
            n_new_tokens=n_new_tokens,
            missing_spans=missing,
            cached=cached,
            model=self.fingerprint.to_dict(),
            method=case.config.method,
            prepared_prompt=prepared,
            highlights=list(case.highlights),
            device=self.device_name,
            unsteered=self._unsteered[case.config.name].get(row.key),
        )


@functools.cache
def _library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("torch", "transformers")}
