"""pytest hooks of pytest-steer: wiring only. The work lives in the modules these hooks call.

Flow: options -> (collection) prompts × configs × trials as parametrized ``steer_case``
items -> (each worker) one model, batched generation, checks -> records on test reports
-> (controller or plain run) aggregates, verdicts, reports.

Nothing heavy is imported at module level: a run that collects no steer test imports
no torch and prints nothing.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_steer.plan.choice import auto_parameter
from pytest_steer.plan.options import add_options, settings_from_config
from pytest_steer.report.outputs import Written, write_outputs
from pytest_steer.run.session import LINEAR_KERNEL, NUMBER_FORMAT, SESSION_KEY, SteerSession, stop_reason

if TYPE_CHECKING:
    from pytest_steer.steer_case import SteerCase

pytest.register_assert_rewrite("pytest_steer.assertions")

CASE_FIXTURE = "steer_case"
WRITTEN_KEY = pytest.StashKey[Written]()  # what the run's outputs wrote, and which failed
RECORD_KEY = pytest.StashKey[Any]()  # the CaseRecord of an item, typed until it leaves the process
HTML_PLUGIN = "steer-html"
RECEIVER_PLUGIN = "steer-reports"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_steer import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


SHARED_RECORDS = "steer_shared_records"  # workerinput key: the directory of the records --steer-sequential and auto share
UNSENT_RECORDS = "steer_unsent_records"  # workeroutput key: records a worker generated but sent on no report (the run stopped)


def pytest_configure(config: pytest.Config) -> None:
    settings = settings_from_config(config)
    session = SteerSession(config, settings)
    config.stash[SESSION_KEY] = session
    if settings.sequential or auto_parameter(settings.alpha, settings.method) is not None:
        from pytest_steer.run.shared_records import shared_records

        session.shared = shared_records(config, SHARED_RECORDS, "--steer-sequential" if settings.sequential else "auto")
    config.pluginmanager.register(ReportReceiver(session), RECEIVER_PLUGIN)
    if importlib.util.find_spec("pytest_html") is not None:
        from pytest_steer.report import html_plugin

        config.pluginmanager.register(html_plugin, HTML_PLUGIN)


def steer_session(config: pytest.Config) -> SteerSession:
    return config.stash[SESSION_KEY]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    steer = steer_session(node.config)
    if steer.shared is not None:
        node.workerinput[SHARED_RECORDS] = str(steer.shared.directory)
    if steer.number_format is not None:  # one decision for every worker, whatever each would measure while the others load
        node.workerinput[NUMBER_FORMAT] = steer.number_format.to_json()
    node.workerinput[LINEAR_KERNEL] = steer.linear_kernel.to_json()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """A worker that goes down before its work is done halts the sequential looks, so that no other worker waits for it."""
    steer = steer_session(node.config)
    shared = steer.shared
    output = getattr(node, "workeroutput", None) or {}
    steer.from_workers.extend(output.get(UNSENT_RECORDS, ()))
    stopped = error or output.get("shouldfail") or output.get("shouldstop")
    if shared is not None and stopped:
        shared.halt(f"worker {node.gateway.id} went down: {stopped}")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per visible GPU when the model goes to CUDA; xdist's default otherwise.

    xdist asks before ``pytest_configure``, so the device option is read directly.
    """
    device = config.getoption("steer_device") or config.getini("steer_device") or "auto"
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or not (device == "auto" or device.startswith("cuda")):
        return None  # the user's explicit choice, or no GPU work
    from pytest_steer.model.devices import visible_gpu_count

    return visible_gpu_count() or None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "load":  # an explicit --dist choice is the user's
        return None
    from pytest_steer.run.scheduling import SteerScheduling

    return SteerScheduling(config, log, units=steer_session(config).work_units())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CASE_FIXTURE not in metafunc.fixturenames:
        return
    cases = steer_session(metafunc.config).cases
    metafunc.parametrize(CASE_FIXTURE, cases, ids=[case.id for case in cases], indirect=True)


@pytest.fixture
def steer_case(request: pytest.FixtureRequest) -> SteerCase:
    """One prompt × config × trial: its response (generated in a batch), verdicts and record."""
    from pytest_steer.run.runner import RunnerUnavailable
    from pytest_steer.steer_case import SteerCase, SteerCaseError, junit_properties
    from pytest_steer.steering import SteeringWarning, describe_missing

    session = steer_session(request.config)
    skipped = session.skip_reason(request.param)
    if skipped is not None:
        pytest.skip(skipped)
    try:
        record = session.record(request.param)
    except RunnerUnavailable as exc:  # nothing can run: one error, and the run stops here
        request.session.shouldstop = f"pytest-steer: {exc}"
        record = None
    if record is None:  # failed outside the except block, so that the report shows no exception chain
        pytest.fail(str(request.session.shouldstop), pytrace=False)
    request.node.stash[RECORD_KEY] = record
    if record.missing_spans:
        warnings.warn(SteeringWarning(f"{record.key}: {describe_missing(record.missing_spans)}"), stacklevel=1)
    request.node.user_properties.extend(junit_properties(record))
    if record.error:
        raise SteerCaseError(f"{record.case_id}: {record.error}")
    return SteerCase(request.param, record, mode=session.settings.case_mode)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    record = item.stash.get(RECORD_KEY, None)
    if record is not None and (report.when == "call" or (report.when == "setup" and report.failed)):
        session = steer_session(item.config)
        if report.when == "call" and report.passed and session.settings.case_mode == "strict" and not record.follow_all_strict:
            from pytest_steer.assertions import missed_instructions

            case = item.callspec.params[CASE_FIXTURE]  # type: ignore[attr-defined]
            report.outcome = "failed"  # strict mode: a missed instruction fails the case, whatever the test asserted
            report.longrepr = missed_instructions(record, case.row.kwargs)
        worker = getattr(item.config, "workerinput", {}).get("workerid")
        report.steer_record = record.to_dict() | {"worker": worker}  # travels to the xdist controller with the report
        session.sent.add(record.case_id)
    if hasattr(item.config, "workerinput"):
        progress = steer_session(item.config).progress.take_pending()
        if progress:
            report.steer_progress = progress
        if report.when == "teardown" and CASE_FIXTURE in getattr(item, "fixturenames", ()):
            report.steer_case = True  # tells the controller, which sees only node ids, that this test is a steer case
    return report


MISSED = "missed"


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, tuple[str, dict]] | None:
    record = getattr(report, "steer_record", None)
    if record and report.when == "call" and report.passed and not record["follow_all_strict"]:
        return MISSED, "m", ("MISSED", {"yellow": True})
    return None


def selected_cases(items: list[pytest.Item]) -> dict[str, str]:
    """Node id -> case id of the steer tests among the selected ``items``."""
    return {
        item.nodeid: item.callspec.params[CASE_FIXTURE].id  # type: ignore[attr-defined]
        for item in items
        if CASE_FIXTURE in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")
    }


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    session = steer_session(node.config)
    if session.selected:  # every worker collects and selects the same tests
        return
    session.select(session.case_ids(ids))
    reporter = node.config.pluginmanager.get_plugin("terminalreporter")
    if session.selected and reporter is not None:
        workers = node.config.getoption("numprocesses", None)
        reporter.write_line(f"[steer] {session.run_plan(workers if isinstance(workers, int) else 1).line()}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--steer-sequential``: every test of a block's cases runs before the next block's (other tests first)."""
    steer = steer_session(config)
    if not steer.settings.sequential or not selected_cases(items):
        return  # no steer case collected: nothing to order, and a plan that failed has failed collection already
    plan = steer.plan

    def block(item: pytest.Item) -> int:
        case = plan.case_id_of(item.nodeid)
        return -1 if case is None else plan.block_of[plan.by_id[case].row.key]

    items.sort(key=block)


def pytest_collection_finish(session: pytest.Session) -> None:
    steer_session(session.config).select(selected_cases(session.items))


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """The plan line: what the run will do and cost, also under --collect-only."""
    steer = steer_session(config)
    steer.select(selected_cases(items))  # terminal reporter may ask before pytest_collection_finish ran here
    if not steer.selected or steer.is_worker:
        return []
    return [f"[steer] {steer.run_plan().line()}"]


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[Any]:
    """After the cases (on the controller, or in a plain run): the verdicts become test outcomes."""
    steer = steer_session(session.config)
    try:
        result = yield
    finally:
        if session.shouldstop or session.shouldfail:
            steer.stopped = stop_reason(str(session.shouldstop or session.shouldfail))
    if steer.reports_here:
        from pytest_steer.outcomes import count_verdicts, report_verdicts

        results = steer.results()
        session.testscollected += count_verdicts(results)  # counted before they report: the percentage ends at 100%
        report_verdicts(session.config, results)
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    steer = steer_session(session.config)
    steer.settle()
    if steer.is_worker:  # the records no report carried go to the controller with the worker's output
        session.config.workeroutput[UNSENT_RECORDS] = steer.unsent()  # type: ignore[attr-defined]
    if not steer.reports_here:  # workers leave reports to the controller
        return
    written = write_outputs(steer.results(), steer.settings, steer.settings.report_dir, config=session.config)
    session.config.stash[WRITTEN_KEY] = written
    if written.failures and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # an output the user asked for is missing


def pytest_terminal_summary(terminalreporter: Any) -> None:
    steer = steer_session(terminalreporter.config)
    if not steer.reports_here:
        return
    from pytest_steer.report.terminal import write_summary, written_lines

    results = steer.results()
    written = terminalreporter.config.stash.get(WRITTEN_KEY, Written())
    for note in results.notes:
        terminalreporter.write_line(f"[steer] note: {note}", yellow=True)
    write_summary(terminalreporter, results)
    for line in written_lines(written.paths):
        terminalreporter.write_line(line)
    full_report = written.partial_apart
    if full_report is not None:
        note = f"[steer] a partial run writes its report apart: the full run's report in {full_report} is left as it was"
        terminalreporter.write_line(note, yellow=True)
    for failure in written.failures:
        terminalreporter.write_line(f"[steer] {failure}", red=True)


class ReportReceiver:
    """The hooks that carry no config: reports arriving (from workers under xdist) and interrupts."""

    def __init__(self, session: SteerSession) -> None:
        self.session = session
        self.failures = 0

    @pytest.hookimpl(tryfirst=True)  # before the terminal writes this report's letter
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for entry in getattr(report, "steer_progress", ()):
            self.session.progress.receive(entry)
        record = getattr(report, "steer_record", None)
        if record is not None:
            self.session.receive(record, report.nodeid)
        if report.when == "teardown" and self.session.is_controller and not getattr(report, "steer_case", False):
            self.session.not_a_case(report.nodeid)
        if report.failed and self.session.shared is not None and self.session.is_controller:
            self.failures += 1
            maxfail = self.session.config.option.maxfail
            if maxfail and self.failures >= maxfail:  # xdist stops the run: no worker may wait for more records
                self.session.shared.halt(f"stopping after {self.failures} failures")

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # around the terminal's own: its short summary is written by now
    def pytest_terminal_summary(self, terminalreporter: Any) -> Iterator[None]:
        result = yield
        if terminalreporter.stats.get(MISSED):
            from pytest_steer.report.terminal import write_missed_summary

            write_missed_summary(terminalreporter, MISSED)
        return result

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """Ctrl-C, pytest.exit and xdist's own stops (-x under xdist) pass here."""
        self.session.stopped = self.session.stopped or stop_reason(str(excinfo.value) or "interrupted")
