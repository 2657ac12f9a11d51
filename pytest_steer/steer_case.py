"""What a steer test receives: one case with its response and verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_steer.plan.cases import Case
from pytest_steer.run.records import CaseRecord


class SteerCaseError(RuntimeError):
    """Generating or checking this case failed; it is an error, not a missed instruction."""


@dataclass(frozen=True)
class SteerCase:
    case: Case
    record: CaseRecord
    mode: str = "record"

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def config(self) -> str:
        return self.record.config

    @property
    def alpha(self) -> float | None:
        return self.record.alpha

    @property
    def prompt(self) -> str:
        return self.record.prompt

    @property
    def prepared_prompt(self) -> str:
        """The prompt as the model received it: after the steering method rewrote it, before the chat template."""
        return self.record.prompt if self.record.prepared_prompt is None else self.record.prepared_prompt

    @property
    def response(self) -> str:
        return self.record.response

    @property
    def instruction_id_list(self) -> list[str]:
        return self.record.instruction_id_list

    @property
    def kwargs(self) -> list[dict[str, Any]]:
        return [dict(k) for k in self.case.row.kwargs]

    @property
    def quality(self) -> float | None:
        return self.record.quality


def junit_properties(record: CaseRecord) -> list[tuple[str, str]]:
    """Compact ``steer.*`` properties for JUnit XML (the full record travels separately): strings, or JSON."""
    from pytest_steer.report.junit import properties as as_text

    properties: list[tuple[str, Any]] = [
        ("steer.key", record.key),
        ("steer.config", record.config),
        ("steer.trial", record.trial),
        ("steer.seed", record.seed),
    ]
    if record.error:
        return as_text(properties + [("steer.error", record.error)])
    properties += [
        ("steer.follow_all_strict", record.follow_all_strict),
        ("steer.follow_all_loose", record.follow_all_loose),
        ("steer.strict", record.strict),
        ("steer.loose", record.loose),
        ("steer.instructions", record.instruction_id_list),
        ("steer.response", record.response),
    ]
    if record.quality is not None:
        properties.append(("steer.quality", round(record.quality, 6)))
    return as_text(properties)
