"""pytest hooks of pytest-steer. The work lives in the modules these hooks call.

Flow: options -> (collection) prompts × configs × trials as parametrized ``steer_case``
items -> (each worker) one model, batched generation, checks -> records on test reports
-> (controller or plain run) aggregates, gates, report.

Nothing heavy is imported at module level: a run that collects no steer test imports
no torch and prints nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_steer.options import SteerSettings, add_options, settings_from_config

if TYPE_CHECKING:
    from pytest_steer.cases import Case
    from pytest_steer.results import RunResults
    from pytest_steer.runner import CaseRunner
    from pytest_steer.steer_case import SteerCase

pytest.register_assert_rewrite("pytest_steer.assertions")

CASE_FIXTURE = "steer_case"
SESSION_PLUGIN = "steer-session"
HTML_PLUGIN = "steer-html"
RECORD_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SteerSession(config, settings_from_config(config)), SESSION_PLUGIN)
    if importlib.util.find_spec("pytest_html") is not None:
        from pytest_steer.report import html_plugin

        config.pluginmanager.register(html_plugin, HTML_PLUGIN)


def _session(config: pytest.Config) -> SteerSession:
    return config.pluginmanager.get_plugin(SESSION_PLUGIN)


def _worker_index(config: pytest.Config) -> int | None:
    worker = getattr(config, "workerinput", {}).get("workerid") or os.environ.get("PYTEST_XDIST_WORKER")
    return int(worker.removeprefix("gw")) if worker else None


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per visible GPU when the model goes to CUDA; xdist's default otherwise.

    xdist asks before ``pytest_configure``, so the device option is read directly.
    """
    device = config.getoption("steer_device") or config.getini("steer_device") or "auto"
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or not (device == "auto" or device.startswith("cuda")):
        return None  # the user's explicit choice, or no GPU work
    from pytest_steer.devices import visible_gpu_count

    return visible_gpu_count() or None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CASE_FIXTURE not in metafunc.fixturenames:
        return
    cases = _session(metafunc.config).plan()
    metafunc.parametrize(CASE_FIXTURE, cases, ids=[case.id for case in cases], indirect=True)


@pytest.fixture
def steer_case(request: pytest.FixtureRequest) -> SteerCase:
    """One prompt × config × trial: its response (generated in a batch), verdicts and record."""
    from pytest_steer.steer_case import SteerCase, SteerCaseError, junit_properties

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
    if hasattr(item.config, "workerinput"):
        progress = _session(item.config).take_worker_progress()
        if progress:
            report.steer_progress = progress
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
        self.expected: list[str] = []  # node ids of the collected cases (on the controller too)
        self.notes: list[str] = []
        self._worker_progress: list[str] = []
        self._interrupted_line: Path | str | None = None

    @property
    def reports_here(self) -> bool:
        """Steer cases ran and this process reports them: a plain run or the xdist controller."""
        return bool(self.expected) and not hasattr(self.config, "workerinput") and not self.config.option.collectonly

    def plan(self) -> list[Case]:
        """Load and validate the prompts once; bad input fails collection with one clear message."""
        if self._cases is None:
            from pytest_steer.collection import plan_cases

            self._cases = plan_cases(self.settings)
        return self._cases

    @property
    def runner(self) -> CaseRunner:
        if self._runner is None:
            from pytest_steer.cache import resolve_cache_dir
            from pytest_steer.runner import CaseRunner

            s = self.settings
            self._runner = CaseRunner(
                s,
                self.plan(),
                worker_index=_worker_index(self.config),
                progress=self._progress,
                cache_dir=resolve_cache_dir(s.no_cache, s.cache_dir, s.rootdir, self.config),
            )
        return self._runner

    def _progress(self, message: str) -> None:
        worker = getattr(self.config, "workerinput", None)
        if worker is not None:  # workers have no terminal: the message rides on the next test report
            self._worker_progress.append(f"{worker['workerid']}: {message}")
        else:
            self._write_progress(message)

    def take_worker_progress(self) -> list[str]:
        messages, self._worker_progress = self._worker_progress, []
        return messages

    def _write_progress(self, message: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if self._interrupted_line is None:
                self._interrupted_line = reporter.currentfspath  # status letters being written, if any
            if reporter.currentfspath is None and self.config.get_terminal_writer().width_of_current_line:
                reporter.line("")  # xdist's letters have no file prefix that would end their line
            reporter.write_line(f"[steer] {message}")

    def _resume_interrupted_line(self) -> None:
        """Rewrite the prefix of the line that progress messages broke, before its next letter."""
        interrupted, self._interrupted_line = self._interrupted_line, None
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if interrupted is None or reporter is None:
            return
        # pytest keeps a file path (-q) or a whole location line (-v) as the current prefix.
        reporter.write(interrupted if isinstance(interrupted, str) else f"{os.path.relpath(interrupted, reporter.startpath)} ")
        reporter.currentfspath = interrupted

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getoption("dist") != "load":  # an explicit --dist choice is the user's
            return None
        from pytest_steer.scheduling import SteerScheduling

        return SteerScheduling(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        from pytest_steer.cases import CASE_NODEID

        if not self.expected:  # every worker collects the same cases
            self.expected = [nodeid for nodeid in ids if CASE_NODEID.match(nodeid)]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.expected = [item.nodeid for item in session.items if CASE_FIXTURE in getattr(item, "fixturenames", ())]

    @pytest.hookimpl(tryfirst=True)  # before the terminal writes this report's letter
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for message in getattr(report, "steer_progress", ()):
            self._write_progress(message)
        self._resume_interrupted_line()
        record = getattr(report, "steer_record", None)
        if record is not None:
            self.records.append({**record, "nodeid": report.nodeid})

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[Any]:
        """After the cases (on the controller, or in a plain run): gates become test outcomes."""
        result = yield
        if self.reports_here:
            self._decide(session)
        return result

    def _decide(self, session: pytest.Session) -> None:
        from pytest_steer.baseline import save_run
        from pytest_steer.gating import decide

        results = self.results()
        decisions = decide(results, self.settings)
        self.notes.extend(decisions.notes)
        # Count the verdicts as collected so the progress percentage stays truthful.
        session.testscollected += len(results.gates) + len(results.comparisons) + len(decisions.errors)
        for gate in results.gates:
            self._report_outcome(f"steer-gates::{gate.config or 'no config'}::{gate.gate}", gate.passed, gate.message, gate.to_dict())
        for comparison in results.comparisons:
            nodeid = f"steer-baseline::{comparison.config}::{comparison.metric}"
            self._report_outcome(nodeid, comparison.passed, comparison.message, comparison.to_dict())
        for error in decisions.errors:
            self._report_outcome("steer-baseline::comparison", False, error, {})
        if self.settings.save:
            self.written.append(save_run(results.run, results.aggregates, self.settings.save))

    def _report_outcome(self, nodeid: str, passed: bool, message: str, details: dict[str, Any]) -> None:
        """A verdict that is not a collected test, reported like one: terminal, exit code, JUnit and HTML agree."""
        hook = self.config.hook
        location = (nodeid.split("::")[0], None, nodeid.split("::", 1)[1])
        properties = [
            (f"steer.{name}", value if isinstance(value, (str, int, float, bool)) else str(value)) for name, value in details.items()
        ]
        phases = (
            ("setup", "passed", None, []),
            ("call", "passed" if passed else "failed", None if passed else message, []),
            ("teardown", "passed", None, properties),  # JUnit writes properties from the teardown report
        )
        hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        for when, outcome, longrepr, user_properties in phases:
            report = pytest.TestReport(nodeid, location, {}, outcome, longrepr, when, user_properties=user_properties)
            hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.reports_here:  # workers leave reports to the controller
            return
        from pytest_steer.report.files import REPORT_HTML, default_report_dir, write_report

        results = self.results()
        report_dir = self.settings.report_dir or default_report_dir(self.config)
        self.written.extend(write_report(results, report_dir))
        if self.settings.json:
            from pytest_steer.report.json import write_results

            self.written.append(write_results(results, self.settings.json, include_cases=True))
        if self.settings.summary_md:
            from pytest_steer.report.markdown import write_markdown

            self.written.append(write_markdown(results, self.settings.summary_md, report=Path(report_dir) / REPORT_HTML))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.reports_here:
            return
        for note in self.notes:
            terminalreporter.write_line(f"[steer] note: {note}", yellow=True)
        from pytest_steer.report.terminal import write_summary, written_lines

        write_summary(terminalreporter, self.results())
        for line in written_lines(self.written):
            terminalreporter.write_line(line)

    def results(self) -> RunResults:
        """Aggregates of every record received so far (built once, after the test loop)."""
        if self._results is None:
            from pytest_steer.records import lost_record
            from pytest_steer.results import RunResults

            reported = {record["nodeid"] for record in self.records}
            lost = [lost_record(nodeid) for nodeid in self.expected if nodeid not in reported]
            self._results = RunResults.build(self.settings, self.records + lost)
            self._results.n_lost = len(lost)
        return self._results
