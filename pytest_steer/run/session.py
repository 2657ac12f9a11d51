"""Per-process state of a steer run: the plan, the runner (workers) and the records (controller).

The hooks in :mod:`pytest_steer.plugin` call into one :class:`SteerSession` per pytest
process. On an xdist worker it plans the cases and runs them; on the controller (or in a
plain run) it also receives every case record and builds the run's results once, after
the test loop.
"""

from __future__ import annotations

import functools
import gc
import re
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_steer.model.kernels import LinearKernel, choose_kernel
from pytest_steer.model.numerics import FormatChoice, choose_format
from pytest_steer.plan.cases import Case, SteeringConfig, may_name_a_case
from pytest_steer.plan.collection import Plan, device_type, plan_cases, run_configs
from pytest_steer.plan.estimate import RunPlan
from pytest_steer.plan.options import SteerSettings
from pytest_steer.plan.spec import RunSpec, run_provenance
from pytest_steer.run.progress import Progress
from pytest_steer.run.records import CaseRecord
from pytest_steer.run.reported import ReportedRecord, lost_records, one_per_case, unreported
from pytest_steer.run.selection import SELECTION_OPTIONS, RunSelection
from pytest_steer.stats.gate_language import parse_checks
from pytest_steer.stats.levels import CONFIDENCE
from pytest_steer.steering.method import SteeringMethod
from pytest_steer.steering.registry import method_registry
from pytest_steer.store.responses import resolve_cache_dir

if TYPE_CHECKING:
    from pytest_steer.run.looks import SequentialStop, Wanted
    from pytest_steer.run.results import RunResults
    from pytest_steer.run.runner import CaseRunner
    from pytest_steer.run.shared_records import SharedRecords
    from pytest_steer.stats.aggregate import ConfigAggregate
    from pytest_steer.stats.choice import StrengthChoice
    from pytest_steer.stats.sequential import SequentialOutcome


def stop_reason(text: str) -> str:
    """pytest's reason for ending a run early, said of the option behind it."""
    failures = re.fullmatch(r"stopping after (\d+) failures", text)
    if failures is None:
        return text
    count = int(failures[1])
    return f"stopped after {count} failure{'s' if count != 1 else ''} by -x/--maxfail"


SESSION_KEY = pytest.StashKey["SteerSession"]()  # config.stash[SESSION_KEY]: the process's session
NUMBER_FORMAT = "steer_number_format"  # workerinput key: what --steer-dtype auto resolved to on the controller
LINEAR_KERNEL = "steer_linear_kernel"  # workerinput key: how the controller found linear layers multiply fastest


class SteerSession:
    def __init__(self, config: pytest.Config, settings: SteerSettings) -> None:
        self.config = config
        self.settings = settings
        self.progress = Progress(config)
        self.records: list[ReportedRecord] = []  # received on the controller, in report order
        self.selected: dict[str, str] = {}  # node id -> case id of every selected steer test (on the controller too)
        self.stopped: str | None = None  # why the run ended before every case ran (Ctrl-C, -x, a model that cannot load)
        self.sent: set[str] = set()  # case ids whose records left this process on a test report
        self.from_workers: list[dict[str, Any]] = []  # records the xdist workers generated but sent on no report
        self.started = time.time()
        self._results: RunResults | None = None
        self._stack_checked = False
        self.shared: SharedRecords | None = None  # --steer-sequential under xdist: the records every worker looks at

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def reports_here(self) -> bool:
        """Steer cases ran and this process reports them: a plain run or the xdist controller."""
        return bool(self.selected) and not self.is_worker and not self.config.option.collectonly

    def select(self, selected: dict[str, str]) -> None:
        """The steer tests pytest's selection kept (node id -> case id); a process that runs them generates only those."""
        self.selected = selected
        if selected and not self.config.option.collectonly and not self.is_controller:
            self.runner.select(set(selected.values()))

    @property
    def is_controller(self) -> bool:
        return self.config.pluginmanager.hasplugin("dsession")

    @property
    def selection(self) -> RunSelection:
        return RunSelection.of(self.plan.cases, set(self.selected.values()))

    def run_plan(self, workers: int = 1) -> RunPlan:
        """What the selected cases will cost; the progress lines count against it from now on."""
        chosen = set(self.selected.values())
        cases = [case for case in self.plan.cases if case.id in chosen]
        choice = self.plan.choice
        waiting = [case for case in cases if choice is not None and choice.decides(case.row.key, case.config.name)]
        plan = RunPlan(
            prompts=len({case.row.key for case in self.plan.cases}),
            configs=len(self.plan.configs),
            trials=self.settings.trials,
            collected=len(self.plan.cases),
            selected=len(cases),
            cached=self.runner.count_cached(cases),
            max_new_tokens=self.settings.max_new_tokens,
            throughput=self.runner.throughput(),
            workers=workers,
            unchosen=len(waiting) - len(waiting) // len(choice.grid) if choice is not None else 0,
        )
        self.progress.start(plan.selected, plan.to_generate)
        return plan

    @cached_property
    def methods(self) -> dict[str, type[SteeringMethod]]:
        return method_registry(self.config.hook.pytest_steer_methods())

    @cached_property
    def plan(self) -> Plan:
        """Load and validate the prompts once; bad input fails collection with one clear message."""
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
        from pytest_steer.run.runner import RunnerUnavailable  # why: imports the IFEval checkers (nltk); this module loads with the plugin

        if self.runner.needs_generation("pasta"):
            try:
                self.runner.check_steering_stack()
            except RunnerUnavailable as exc:
                raise pytest.Collector.CollectError(f"pytest-steer: {exc}") from None

    def work_units(self) -> Callable[[str], str | None]:
        """Node id -> its xdist work unit (None for a test that is no steer case). The plan is made at the
        first node id that may name a case, so a run without steer tests never makes one; a process that
        cannot plan gives every test a unit of its own (the workers' collection reports why)."""

        @functools.cache
        def planned() -> tuple[Plan, dict[str, str]] | None:
            try:
                return self.plan, self.plan.work_units()
            except Exception:
                return None

        def unit_of(nodeid: str) -> str | None:
            found = planned() if may_name_a_case(nodeid) else None
            return None if found is None else found[1].get(found[0].case_id_of(nodeid) or "")

        return unit_of

    def case_ids(self, nodeids: list[str]) -> dict[str, str]:
        """Node id -> case id of the tests among ``nodeids`` that name a case (what a controller learns of a
        worker's collection). A test that only looks like one is dropped when its report comes (:meth:`not_a_case`)."""
        candidates = [nodeid for nodeid in nodeids if may_name_a_case(nodeid)]
        if not candidates:
            return {}
        try:
            plan = self.plan
        except Exception:  # the workers' collection reports the problem
            return {}
        found = {nodeid: plan.case_id_of(nodeid) for nodeid in candidates}
        return {nodeid: case for nodeid, case in found.items() if case is not None}

    def not_a_case(self, nodeid: str) -> None:
        """A worker ran ``nodeid`` as a test that requests no steer case: its id only looked like one."""
        self.selected.pop(nodeid, None)

    @cached_property
    def configs(self) -> tuple[SteeringConfig, ...]:
        """The run's configs, known without collecting (an xdist controller collects nothing)."""
        return run_configs(self.settings, self.methods)

    @cached_property
    def spec(self) -> RunSpec:
        return RunSpec.from_settings(self.settings, self.configs)

    @cached_property
    def cache_dir(self) -> Path | None:
        s = self.settings
        return resolve_cache_dir(s.no_cache, s.cache_dir, s.rootdir, self.config)

    @cached_property
    def number_format(self) -> FormatChoice | None:
        """What ``--steer-dtype auto`` stands for in this run (None when a dtype is given): on a worker, the
        controller's decision; elsewhere measured here (kept beside the response cache)."""
        if self.settings.dtype != "auto":
            return None
        given = getattr(self.config, "workerinput", {}).get(NUMBER_FORMAT)
        if given is not None:
            return FormatChoice.from_json(given)
        s = self.settings
        kept_in = resolve_cache_dir(False, s.cache_dir, s.rootdir, self.config)  # under --steer-no-cache too: runs agree
        return choose_format(device_type(s.device), kept_in)

    @cached_property
    def linear_kernel(self) -> LinearKernel:
        """How a CPU's linear layers multiply in this run (:mod:`pytest_steer.model.kernels`): on a worker, the
        controller's decision; elsewhere ``--steer-linear``, or measured here (kept beside the response cache). Plain
        under ``--steer-compile``, whose compiler lays out the weights itself."""
        s = self.settings
        given = getattr(self.config, "workerinput", {}).get(LINEAR_KERNEL)
        if given is not None:
            return LinearKernel.from_json(given)
        dtype = s.dtype if self.number_format is None else self.number_format.dtype
        if s.compile is not None:
            return LinearKernel(dtype, False, note="--steer-compile lays out the weights itself")
        if s.linear != "auto":
            return LinearKernel(dtype, s.linear == "packed", note=f"--steer-linear {s.linear}")
        kept_in = resolve_cache_dir(False, s.cache_dir, s.rootdir, self.config)  # under --steer-no-cache too, as the number format
        return choose_kernel(device_type(s.device), dtype, kept_in)

    @cached_property
    def runner(self) -> CaseRunner:
        from pytest_steer.run.runner import CaseRunner  # why: as in RunnerUnavailable above

        worker = getattr(self.config, "workerinput", {}).get("workerid")
        return CaseRunner(
            self.settings,
            self.spec,
            self.plan,
            self.methods,
            worker_index=int(worker.removeprefix("gw")) if worker else None,
            progress=self.progress,
            cache_dir=self.cache_dir,
            number_format=self.number_format,
            linear_kernel=self.linear_kernel,
        )

    def settle(self) -> None:
        """After the test loop of a process that ran cases: keep what it measured and, where torch was imported, put
        the objects alive now out of the garbage collector's sight (``gc.freeze``): the import of torch (and
        transformers, when a model loaded) leaves hundreds of thousands of long-lived objects, every full collection
        walks them all (0.2 s on a 2-core CPU), and pytest runs several as it exits. A rerun served from the response
        cache imports neither and has nothing to spare."""
        if "runner" in vars(self):
            self.runner.store_throughput()
            if "torch" in sys.modules:
                gc.freeze()

    def receive(self, record: Mapping[str, Any], nodeid: str) -> None:
        """A record as a test report carries it (a dict, from an xdist worker too)."""
        self.records.append(ReportedRecord.received(record, nodeid))

    def unsent(self) -> list[dict[str, Any]]:
        """Records this process generated for selected cases that no test report carried (the run stopped first)."""
        if "runner" not in vars(self):
            return []
        chosen, worker = set(self.selected.values()), getattr(self.config, "workerinput", {}).get("workerid")
        unsent = [record for key, record in self.runner.records.items() if key in chosen and key not in self.sent]
        return [record.to_dict() | {"worker": worker} for record in unsent]

    def _receive_unreported(self) -> int:
        """Keep the records that were generated but never reported: this process's, the workers' that finished, and those
        shared for --steer-sequential's looks (of a worker that went down too). Returns how many."""
        nodeids: dict[str, str] = {}
        for nodeid, case in self.selected.items():
            nodeids.setdefault(case, nodeid)
        shared = self.shared.wait_for(()) if self.shared is not None and self.is_controller else []
        kept = unreported([*self.unsent(), *self.from_workers, *shared], self.records, nodeids)
        self.records += kept
        return len(kept)

    def results(self) -> RunResults:
        """Aggregates and verdicts of every record received (built once, after the test loop)."""
        if self._results is None:
            # why: imports numpy; this module loads with the plugin
            from pytest_steer.run.gating import decide
            from pytest_steer.run.results import RunResults
            from pytest_steer.stats.comparison import parse_compare_fail

            n_unreported = self._receive_unreported()
            reported = one_per_case(self.records)
            not_run = self._not_run({record.case_id for record in reported})
            stopped = self.stopped if not_run else None  # a stopped run that ran every case is complete
            lost = [] if stopped else self._lost_records(not_run)  # a stop leaves cases out, as a selection does
            records = [record.to_dict() for record in [*reported, *lost]]
            model = next((r["model"] for r in records if r.get("model")), None) or {"name": self.settings.model}
            invocation = self.config.invocation_params
            devices = [r["device"] for r in records if r.get("device")]
            provenance = run_provenance(invocation.args, invocation.dir, self.started, devices)
            run = self.spec.fingerprint(model, len({r["key"] for r in records}), self.settings.rootdir, provenance)
            choice = self.chosen.to_dict() if self.plan.choice is not None else None
            aggregated = RunResults.from_records(
                run, records, seed=self.settings.seed, n_lost=len(lost), min_prompts=self.settings.min_prompts, choice=choice
            )
            outcome = self._sequential_outcome(aggregated.aggregates, records) if self.sequential is not None else None
            verdicts = decide(aggregated.aggregates, run, self.settings, gates=outcome.results if outcome else None)
            ran = self.selection if stopped is None else self._ran(not_run, stopped)
            gates, comparisons, selection = ran.decide(
                verdicts.gates,
                verdicts.comparisons,
                configs=self.configs,
                checks=parse_checks(self.settings.gate, self.settings.fail_if),
                compared=list(parse_compare_fail(self.settings.compare_fail)) if self.settings.baseline is not None else [],
            )
            verdicts.gates, verdicts.comparisons = gates, comparisons
            if n_unreported:
                why = f" ({self.stopped})" if self.stopped else ""  # else a test errored before it took its case
                verdicts.notes.append(f"{n_unreported} generated case(s) were reported by no test{why}; this report keeps their records")
            if self.settings.sequential and self.sequential is None:
                verdicts.notes.append(
                    f"--steer-sequential took no look: pytest's selection ({SELECTION_OPTIONS}) ran part of the cases, so every "
                    "selected case ran; checks on configs it ran in full are decided by the fixed design, the others not at all"
                )
            if choice is not None and choice["chosen"] is None:
                verdicts.notes.append(
                    f"auto chose no {choice['method']} {choice['parameter']}: {choice['reason']}; only the baseline ran on the "
                    "evaluation prompts, so a check on the steered configs selects none and fails: nothing is certified to ship"
                )
            if all(not config.steered for config in self.configs):
                verdicts.notes.append(
                    "only the unsteered baseline ran: add steered configs with --steer-alpha (PASTA, e.g. --steer-alpha 10) "
                    "or --steer-method (e.g. --steer-method emphasis)"
                )
            sequential = outcome.to_dict() if outcome else None
            self._results = replace(aggregated, selection=selection, sequential=sequential, **verdicts.as_fields())
        return self._results

    @cached_property
    def sequential(self) -> SequentialStop | None:
        """``--steer-sequential``: where generation stops; None for a fixed run, and for a partial selection, which
        stops nowhere: every selected case runs, and its checks on partly selected configs are not decided."""
        if not self.settings.sequential or self.selection.partial:
            return None
        from pytest_steer.run.looks import SequentialStop  # why: imports numpy; this module loads with the plugin

        return SequentialStop(self.settings, self.plan.blocks, self.plan.block_size, self._max_instructions)

    @property
    def _max_instructions(self) -> int:
        """The largest instruction count of the run's prompts: known before generation, as a sequential test needs."""
        return max((len(case.row.instruction_id_list) for case in self.plan.cases), default=1)

    def skip_reason(self, case: Case) -> str | None:
        """Why a case is not generated (a sequential run decided before its block, auto chose another value), or None."""
        choice = self.plan.choice
        if choice is not None and choice.decides(case.row.key, case.config.name):
            from pytest_steer.run.choosing import skip_reason  # why: imports numpy; this module loads with the plugin

            return skip_reason(self.chosen, case.config.name)
        if self.sequential is None:
            return None
        return self.sequential.skip_reason(case.row.key, case.config.name, self._records_wanted)

    @cached_property
    def chosen(self) -> StrengthChoice:
        """What auto chose, from every selection record (on an xdist worker, once every worker has shared them)."""
        from pytest_steer.run.choosing import choose, needed_for_choice  # why: imports numpy; this module loads with the plugin
        from pytest_steer.run.looks import LooksHalted

        choice = self.plan.choice
        unchosen = None
        if self.selection.partial:
            unchosen = f"pytest's selection ({SELECTION_OPTIONS}) ran part of the cases, and the choice needs every selection case"
        try:
            records = self._records_wanted(lambda key, config: needed_for_choice(choice, key, config)) if unchosen is None else []
        except LooksHalted as exc:
            records, unchosen = [], f"the selection records never all came: {exc}"
        return choose(self.settings, choice, records, unchosen=unchosen)

    def record(self, case: Case) -> CaseRecord:
        """The case's record (its batch generated as needed), shared with the other workers' looks."""
        record = self.runner.record(case, wanted=lambda mate: self.skip_reason(mate) is None)
        if self.shared is not None:
            self.shared.share(self.runner.records)
        return record

    def _records_wanted(self, wanted: Wanted) -> list[dict[str, Any]]:
        """The records of the cases a look needs: on an xdist worker, once every worker has shared them."""
        if self.shared is None or self.is_controller:
            return [record.to_dict() for record in one_per_case(self.records)]
        cases = [self.plan.by_id[case] for case in self.selected.values()]
        return self.shared.wait_for(case.id for case in cases if wanted(case.row.key, case.config.name))

    def _sequential_outcome(self, aggregates: list[ConfigAggregate], records: list[dict[str, Any]]) -> SequentialOutcome:
        """The checks decided as the live run looked at them, over the prompts it generated."""
        # why: imports numpy; this module loads with the plugin
        from pytest_steer.run.gating import error_budget
        from pytest_steer.run.looks import sequential_settings
        from pytest_steer.stats.sequential import aggregates_over, decide_sequentially

        s = self.settings
        return decide_sequentially(
            aggregates,
            aggregates_over(records, seed=s.seed, confidence=CONFIDENCE),
            s.gate,
            s.fail_if,
            sequential_settings(s, self.plan.block_size),
            max_errors=error_budget(s.max_errors),
            min_prompts=s.min_prompts,
            correction=s.gate_correction,
            budget=[key for block in self.plan.blocks for key in block],
            max_instructions=self._max_instructions,
        )

    def _not_run(self, reported: set[str]) -> dict[str, str]:
        """Case id -> node id of the selected cases without a record that the run needed."""
        if self.sequential is not None:  # an xdist controller has taken no look yet; the workers' may have halted early
            self.sequential.look_through(self._records_wanted)
        missing: dict[str, str] = {}
        for nodeid, case_key in self.selected.items():
            case = self.plan.by_id[case_key]
            if case_key in reported or case_key in missing:
                continue
            if self.sequential is not None and self.sequential.never_generated(case.row.key, case.config.name):
                continue  # never generated: the sequential run had decided every check before its block
            if self.plan.choice is not None and self.skip_reason(case) is not None:
                continue  # never generated: auto chose another value
            missing[case_key] = nodeid
        return missing

    def _ran(self, not_run: Collection[str], stopped: str) -> RunSelection:
        """The selection of a run that stopped early: the selected cases less those it did not run."""
        return RunSelection.of(self.plan.cases, set(self.selected.values()) - set(not_run), stopped=stopped)

    def _lost_records(self, not_run: Mapping[str, str]) -> list[ReportedRecord]:
        """Records of the selected cases that no test reported: errors, never misses."""
        halted = self.shared.halted() if self.shared is not None else None
        if halted is not None:  # the workers skipped the cases after their last look: those the run needed are lost
            return lost_records(not_run, self.plan.by_id, f"lost: not run: the sequential looks halted ({halted})")
        return lost_records(not_run, self.plan.by_id, "lost: the case never reported (its worker crashed)")
