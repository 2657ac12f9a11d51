"""Per-process state of a steer run: the plan, the runner (workers) and the records (controller).

The hooks in :mod:`pytest_steer.plugin` call into one :class:`SteerSession` per pytest
process. On an xdist worker it plans the cases and runs them; on the controller (or in a
plain run) it also receives every case record and builds the run's results once, after
the test loop.
"""

from __future__ import annotations

import gc
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_steer.options import SteerSettings
from pytest_steer.progress import Progress
from pytest_steer.report.outputs import Written

if TYPE_CHECKING:
    from pytest_steer.cases import Case, SteeringConfig
    from pytest_steer.collection import Plan
    from pytest_steer.results import RunResults
    from pytest_steer.runner import CaseRunner
    from pytest_steer.spec import RunSpec
    from pytest_steer.steering.method import SteeringMethod


class SteerSession:
    def __init__(self, config: pytest.Config, settings: SteerSettings) -> None:
        self.config = config
        self.settings = settings
        self.progress = Progress(config)
        self.records: list[dict[str, Any]] = []  # received on the controller, in report order
        self.expected: list[str] = []  # node ids of the collected cases (on the controller too)
        self.stopped: str | None = None  # why the run ended before every case ran (Ctrl-C, -x, a model that cannot load)
        self.written = Written()
        self.started = time.time()
        self._results: RunResults | None = None
        self._stack_checked = False

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def reports_here(self) -> bool:
        """Steer cases ran and this process reports them: a plain run or the xdist controller."""
        return bool(self.expected) and not self.is_worker and not self.config.option.collectonly

    @cached_property
    def methods(self) -> dict[str, type[SteeringMethod]]:
        from pytest_steer.steering.registry import method_registry

        return method_registry(self.config.hook.pytest_steer_methods())

    @cached_property
    def plan(self) -> Plan:
        """Load and validate the prompts once; bad input fails collection with one clear message."""
        from pytest_steer.collection import plan_cases

        return plan_cases(self.settings, self.methods, cache_dir=self.cache_dir)

    @property
    def cases(self) -> list[Case]:
        """The collected cases, once steering is known to work on this stack for the cases still to generate."""
        cases = self.plan.cases
        if not self._stack_checked:
            self._check_steering_stack()
            self._stack_checked = True
        return cases

    def _check_steering_stack(self) -> None:
        """Before any generation, when PASTA has cases to generate; a fully cached run skips it."""
        from pytest_steer.runner import RunnerUnavailable

        if self.runner.needs_generation("pasta"):
            try:
                self.runner.check_steering_stack()
            except RunnerUnavailable as exc:
                raise pytest.Collector.CollectError(f"pytest-steer: {exc}") from None

    def work_units(self) -> dict[str, str] | None:
        """Case id -> xdist work unit; None when this process cannot plan (collection then reports why)."""
        try:
            return self.plan.work_units()
        except Exception:  # the workers' collection fails with the same problem, and says it
            return None

    @cached_property
    def configs(self) -> tuple[SteeringConfig, ...]:
        """The run's configs, known without collecting (an xdist controller collects nothing)."""
        from pytest_steer.collection import run_configs

        return run_configs(self.settings, self.methods)

    @cached_property
    def spec(self) -> RunSpec:
        from pytest_steer.spec import RunSpec

        return RunSpec.from_settings(self.settings, self.configs)

    @cached_property
    def cache_dir(self) -> Path | None:
        from pytest_steer.cache import resolve_cache_dir

        s = self.settings
        return resolve_cache_dir(s.no_cache, s.cache_dir, s.rootdir, self.config)

    @cached_property
    def runner(self) -> CaseRunner:
        from pytest_steer.runner import CaseRunner

        worker = getattr(self.config, "workerinput", {}).get("workerid")
        return CaseRunner(
            self.settings,
            self.spec,
            self.plan,
            self.methods,
            worker_index=int(worker.removeprefix("gw")) if worker else None,
            progress=self.progress,
            cache_dir=self.cache_dir,
        )

    def settle(self) -> None:
        """After the test loop of a process that loaded a model, put the objects alive now out of the
        garbage collector's sight (``gc.freeze``): the imports of torch and transformers leave some
        360,000 long-lived objects, every full collection walks them all (0.2 s on a 2-core CPU),
        and pytest runs several as it exits."""
        if "runner" in vars(self) and self.runner.model_loaded:
            gc.freeze()

    def receive(self, record: dict[str, Any], nodeid: str) -> None:
        self.records.append({**record, "nodeid": nodeid})

    def results(self) -> RunResults:
        """Aggregates and verdicts of every record received (built once, after the test loop)."""
        if self._results is None:
            from pytest_steer.gating import decide
            from pytest_steer.records import lost_record
            from pytest_steer.results import RunResults

            reason = f"not run: {self.stopped}" if self.stopped else "the case never reported (its worker crashed)"
            reported = {record["nodeid"] for record in self.records}
            configs = {config.name: config for config in self.configs}
            lost = [lost_record(nodeid, configs, reason) for nodeid in self.expected if nodeid not in reported]
            records = self.records + lost
            model = next((r["model"] for r in records if r.get("model")), None) or {"name": self.settings.model}
            from pytest_steer.spec import run_provenance

            invocation = self.config.invocation_params
            devices = [r["device"] for r in records if r.get("device")]
            provenance = run_provenance(invocation.args, invocation.dir, self.started, devices)
            run = self.spec.fingerprint(model, len({r["key"] for r in records}), self.settings.rootdir, provenance)
            aggregated = RunResults.from_records(run, records, seed=self.settings.seed, n_lost=len(lost))
            verdicts = decide(aggregated.aggregates, run, self.settings)
            self._results = replace(aggregated, **verdicts.as_fields())
        return self._results
