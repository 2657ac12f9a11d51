"""pytest hooks of pytest-steer. The work lives in the modules these hooks call.

Flow: options -> (collection) prompts × configs × trials as parametrized ``steer_case``
items -> (each worker) one model, batched generation, checks -> records on test reports
-> (controller or plain run) aggregates, gates, report.

Nothing heavy is imported at module level: a run that collects no steer test imports
no torch and prints nothing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

from pytest_steer.options import SteerSettings, add_options, settings_from_config

if TYPE_CHECKING:
    from pytest_steer.cases import Case
    from pytest_steer.case import SteerCase
    from pytest_steer.results import RunResults
    from pytest_steer.runner import CaseRunner

pytest.register_assert_rewrite("pytest_steer.assertions")

CASE_FIXTURE = "steer_case"
SESSION_PLUGIN = "steer-session"
RECORD_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SteerSession(config, settings_from_config(config)), SESSION_PLUGIN)


def _session(config: pytest.Config) -> SteerSession:
    return config.pluginmanager.get_plugin(SESSION_PLUGIN)


def _worker_index(config: pytest.Config) -> int | None:
    worker = getattr(config, "workerinput", {}).get("workerid") or os.environ.get("PYTEST_XDIST_WORKER")
    return int(worker.removeprefix("gw")) if worker else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CASE_FIXTURE not in metafunc.fixturenames:
        return
    cases = _session(metafunc.config).plan()
    metafunc.parametrize(CASE_FIXTURE, cases, ids=[case.id for case in cases], indirect=True)


@pytest.fixture
def steer_case(request: pytest.FixtureRequest) -> SteerCase:
    """One prompt × config × trial: its response (generated in a batch), verdicts and record."""
    from pytest_steer.case import SteerCase, SteerCaseError, junit_properties

    session = _session(request.config)
    record = session.runner.record(request.param)
    request.node.stash[RECORD_KEY] = record.to_dict()
    request.node.user_properties.extend(junit_properties(record))
    if record.error:
        raise SteerCaseError(f"{record.case_id}: {record.error}")
    return SteerCase(request.param, record, mode=session.settings.case_mode)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    record = item.stash.get(RECORD_KEY, None)
    if record is not None and (report.when == "call" or (report.when == "setup" and report.failed)):
        report.steer_record = record  # travels to the xdist controller with the report
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, tuple[str, dict]] | None:
    record = getattr(report, "steer_record", None)
    if record and report.when == "call" and report.passed and not record["follow_all_strict"]:
        return "missed", "m", ("MISSED", {"yellow": True})
    return None


class SteerSession:
    """Per-process state: the case plan, the runner (workers) and the records (controller)."""

    def __init__(self, config: pytest.Config, settings: SteerSettings) -> None:
        self.config = config
        self.settings = settings
        self.records: list[dict] = []
        self._cases: list[Case] | None = None
        self._runner: CaseRunner | None = None
        self._results: RunResults | None = None
        self.written: list[Path] = []

    def plan(self) -> list[Case]:
        """Load and validate the prompts once; bad input fails collection with one clear message."""
        if self._cases is None:
            from pytest_steer.collection import plan_cases

            self._cases = plan_cases(self.settings)
        return self._cases

    @property
    def runner(self) -> CaseRunner:
        if self._runner is None:
            from pytest_steer.runner import CaseRunner

            self._runner = CaseRunner(
                self.settings, self.plan(), worker_index=_worker_index(self.config), progress=self._progress
            )
        return self._runner

    def _progress(self, message: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or hasattr(self.config, "workerinput"):
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"[steer] {message}")

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getoption("dist") != "load":  # an explicit --dist choice is the user's
            return None
        from pytest_steer.scheduling import SteerScheduling

        return SteerScheduling(config, log)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, "steer_record", None)
        if record is not None:
            self.records.append(record)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[Any]:
        result = yield
        if self.records and not hasattr(self.config, "workerinput"):
            self.results()
        return result

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.records and self.settings.json:
            from pytest_steer.report.json import write_results

            self.written.append(write_results(self.results(), self.settings.json))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        from pytest_steer.report.terminal import write_summary

        write_summary(terminalreporter, self.results())
        for path in self.written:
            terminalreporter.write_line(f"[steer] wrote {path}")

    def results(self) -> RunResults:
        """Aggregates of every record received so far (built once, after the test loop)."""
        if self._results is None:
            from pytest_steer.results import RunResults

            self._results = RunResults.build(self.settings, self.records)
        return self._results
