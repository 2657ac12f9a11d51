"""The case records xdist workers share through a directory, so that each worker's ``--steer-sequential``
looks (:mod:`pytest_steer.run.looks`) and auto's choice (:mod:`pytest_steer.run.choosing`) read every worker's records."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_steer.run.looks import LooksHalted
from pytest_steer.run.records import record_case_id
from pytest_steer.store.atomic import write_text


class SharedRecords:
    """Case records that xdist workers share through a directory, for their looks.

    Each batch's records go into a file of their own, written whole (a rename). The
    controller leaves a ``halted`` file when the run can no longer give every case a
    record: a worker crashed or stopped, or the run stops early.
    """

    HALTED = "halted"
    POLL_SECONDS = 0.05

    def __init__(self, directory: str | Path, writer: str = "controller") -> None:
        self.directory = Path(directory)
        self.writer = writer
        self._written: set[str] = set()
        self._read: dict[str, list[dict[str, Any]]] = {}  # file name -> its records
        self._read_ids: set[str] = set()

    def share(self, records: Mapping[str, Any]) -> None:
        """Write the records (case id -> CaseRecord, which only grows) not shared yet."""
        if len(records) == len(self._written):
            return
        new = [record.to_dict() for key, record in records.items() if key not in self._written]
        self._written.update(records)
        # named by the count shared so far, which every write raises: one file per batch, never overwritten
        write_text(self.directory / f"{self.writer}-{len(self._written):07d}.json", json.dumps(new))

    def halt(self, reason: str) -> None:
        """No further look can wait for every record: each worker's next look gives up, with ``reason``."""
        if self.halted() is None:
            write_text(self.directory / self.HALTED, reason)

    def halted(self) -> str | None:
        """Why the looks were halted, or None."""
        path = self.directory / self.HALTED
        return path.read_text() if path.exists() else None

    def wait_for(self, case_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Every shared record, once those of ``case_ids`` are all in; raises LooksHalted if they never will be."""
        wanted = set(case_ids)
        while True:
            for path in sorted(self.directory.glob("*.json")):
                if path.name not in self._read:
                    self._read[path.name] = batch = json.loads(path.read_text())
                    self._read_ids.update(record_case_id(r) for r in batch)
            if wanted <= self._read_ids:
                return [record for batch in self._read.values() for record in batch]
            halted = self.halted()
            if halted is not None:
                raise LooksHalted(halted)
            time.sleep(self.POLL_SECONDS)


def shared_records(config: pytest.Config, key: str, needed_by: str) -> SharedRecords | None:
    """The records this process shares for its looks (``needed_by``: the option that looks): on an xdist worker,
    the directory the controller passed as ``workerinput[key]``; on the controller, a new one; None in a plain run."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return SharedRecords(workerinput[key], writer=workerinput["workerid"])
    if config.getoption("dist", "no") == "no":
        return None
    replay = (
        ", or run the fixed design and replay it with python -m pytest_steer merge OUT RUN --sequential"
        if needed_by == "--steer-sequential"
        else ""
    )
    if config.getoption("dist") != "load":
        raise pytest.UsageError(
            f"{needed_by} hands out the {'blocks' if replay else 'cases'} in order under --dist load (the default of -n), not --dist "
            f"{config.getoption('dist')}: drop --dist{replay}"
        )
    remote = [spec for spec in config.getoption("tx", None) or [] if "popen" not in spec]
    if remote:
        raise pytest.UsageError(
            f"{needed_by} under xdist shares records through a local directory, and {remote[0]!r} is no local worker: run with -n N{replay}"
        )
    config.option.loadscopereorder = False  # units go out in block order (--loadscope-no-reorder)
    directory = tempfile.mkdtemp(prefix="steer-shared-")
    config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))
    return SharedRecords(directory)
