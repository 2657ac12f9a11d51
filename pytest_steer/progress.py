"""Progress lines of long work (model load, batches), readable in every terminal mode.

On a plain run the lines go straight to the terminal. An xdist worker has no terminal:
its lines ride on its next test report and the controller prints them with the worker's
id (``[steer] gw1: ...``). Only the terminal reporter's public API is used, so pytest's
verbosity, ``-rA`` or ``--tb`` options and xdist's own output are never disturbed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

PREFIX = "[steer]"


class Progress:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        worker = getattr(config, "workerinput", None)
        self.worker_id: str | None = worker["workerid"] if worker is not None else None
        self._pending: list[str] = []
        self._broke_line = False

    def __call__(self, message: str) -> None:
        if self.worker_id is not None:
            self._pending.append(f"{self.worker_id}: {message}")
        else:
            self.write(message)

    def take_pending(self) -> list[str]:
        """A worker's lines not yet sent to the controller."""
        pending, self._pending = self._pending, []
        return pending

    def write(self, message: str) -> None:
        reporter: Any = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.ensure_newline()  # ends a line of status letters that has a file prefix
            if self.config.get_terminal_writer().width_of_current_line:
                reporter.line("")  # xdist's status letters have no prefix for ensure_newline to see
            reporter.write_line(f"{PREFIX} {message}")
        self._broke_line = True

    def resume_status_line(self, report: pytest.TestReport) -> None:
        """Before the next status letter of a plain run, start a fresh line with its file prefix.

        Verbose output and xdist's controller write their own prefixes; only the letters of
        ``-q`` and the default verbosity would otherwise continue on a line without one.
        """
        if not self._broke_line or report.when == "setup" and report.passed:
            return
        self._broke_line = False
        reporter: Any = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and reporter.verbosity <= 0 and not self.config.pluginmanager.hasplugin("dsession"):
            reporter.write_fspath_result(report.nodeid, "")
