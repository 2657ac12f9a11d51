"""The records a reporting process holds: one per case, under the test that requested it.

Most arrive on test reports (from the xdist workers, as dicts); the rest are those no report
carried because the run stopped first (kept when they were generated, errors when they were not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_steer.plan.cases import Case
from pytest_steer.run.records import CaseRecord, record_case_id


@dataclass(frozen=True)
class ReportedRecord:
    """A case record, the test that reported it, and the xdist worker that ran it."""

    record: CaseRecord
    nodeid: str
    worker: str | None = None  # None in a plain run
    names_worker: bool = False  # records shared for the sequential looks, and lost ones, name no worker

    @classmethod
    def received(cls, data: Mapping[str, Any], nodeid: str) -> ReportedRecord:
        """A record in the dict form it travels in, validated (``RecordError``) once, here."""
        return cls(CaseRecord.from_dict(data), nodeid, data.get("worker"), "worker" in data)

    @property
    def case_id(self) -> str:
        return self.record.case_id

    def to_dict(self) -> dict[str, Any]:
        """The record as cases.jsonl holds it: its fields, the worker when named, and the node id."""
        worker = {"worker": self.worker} if self.names_worker else {}
        return self.record.to_dict() | worker | {"nodeid": self.nodeid}


def one_per_case(records: Iterable[ReportedRecord]) -> list[ReportedRecord]:
    """The first record of each case, however many tests requested it (each test's report carries the same record)."""
    by_case: dict[str, ReportedRecord] = {}
    for record in records:
        by_case.setdefault(record.case_id, record)
    return list(by_case.values())


def unreported(
    candidates: Iterable[Mapping[str, Any]], reported: Iterable[ReportedRecord], nodeids: Mapping[str, str]
) -> list[ReportedRecord]:
    """The ``candidates`` (generated records, as dicts) of the cases in ``nodeids`` (case id -> node id) that
    no record in ``reported`` holds, each case once."""
    seen = {record.case_id for record in reported}
    kept = []
    for data in candidates:
        key = record_case_id(data)
        if key in nodeids and key not in seen:
            seen.add(key)
            kept.append(ReportedRecord.received(data, nodeids[key]))
    return kept


def lost_records(not_run: Mapping[str, str], cases: Mapping[str, Case], reason: str) -> list[ReportedRecord]:
    """Error records of the cases in ``not_run`` (case id -> node id), which no test reported: errors, never misses."""
    lost = []
    for case_key, nodeid in not_run.items():
        lost.append(ReportedRecord(CaseRecord.failed_case(cases[case_key], reason), nodeid))
    return lost
