"""Progress lines of long work (model load, batches), readable in every terminal mode.

On a plain run the lines go straight to the terminal. An xdist worker has no terminal:
its lines ride on its next test report and the controller prints them with the worker's
id (``[steer] gw1: ...``). A batch's line ends with the run's overall count (cases done
of those selected) and, once something was generated, an ETA from the rate so far.
Only the terminal reporter's public API is used, so pytest's
verbosity, ``-rA`` or ``--tb`` options and xdist's own output are never disturbed.

A plain run's lines come while a test sets up, after pytest began that test's line (the
file name its status letters follow, or under ``-v`` the test's id). They go under that
line, and pytest goes on after them (the letters, the outcome word) as it does after
live logs, without writing the file name or test id again.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from pytest_steer.plan.estimate import format_duration

PREFIX = "[steer]"


class Progress:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        worker = getattr(config, "workerinput", None)
        self.worker_id: str | None = worker["workerid"] if worker is not None else None
        self._pending: list[dict[str, Any]] = []
        self.total: int | None = None  # selected cases of the whole run, once known
        self.to_generate: int | None = None  # of which the response cache did not hold a response
        self.done = 0
        self.generated = 0
        self._started: float | None = None

    def start(self, total: int, to_generate: int | None) -> None:
        """The run's size, for the overall count and the ETA of each progress line."""
        self.total, self.to_generate = total, to_generate
        self._started = time.monotonic()

    def __call__(self, message: str | None, *, cases: int = 0, generated: int = 0) -> None:
        """A line of progress (None: counts only) with the cases a batch finished, ``generated`` of them anew."""
        if self.worker_id is not None:
            text = None if message is None else f"{self.worker_id}: {message}"
            self._pending.append({"message": text, "cases": cases, "generated": generated})
        else:
            self.receive({"message": message, "cases": cases, "generated": generated})

    def take_pending(self) -> list[dict[str, Any]]:
        """A worker's lines not yet sent to the controller."""
        pending, self._pending = self._pending, []
        return pending

    def receive(self, entry: dict[str, Any]) -> None:
        """A line of this process or of a worker: counted, and written with the run's overall count."""
        self.done += int(entry.get("cases", 0))
        self.generated += int(entry.get("generated", 0))
        if entry.get("message") is not None:
            self.write(entry["message"] + (self._overall() if entry.get("cases") else ""))

    def _overall(self) -> str:
        if not self.total:
            return ""
        text = f"; run {min(self.done, self.total)}/{self.total} cases"
        if self._started is None or self.to_generate is None or not self.generated:
            return text
        remaining = max(0, self.to_generate - self.generated)
        eta = (time.monotonic() - self._started) / self.generated * remaining
        return text + f", ETA {format_duration(eta)}"

    def write(self, message: str) -> None:
        reporter: Any = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if self.config.pluginmanager.hasplugin("dsession"):
                reporter.ensure_newline()  # xdist's controller starts each of its lines afresh
            if self.config.get_terminal_writer().width_of_current_line:
                # ends the line by hand: ensure_newline would also make pytest write its start again
                reporter.line("")
            reporter.line(f"{PREFIX} {message}")
