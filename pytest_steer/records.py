"""The record of one case: what travels from a worker to the controller and into reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class CaseRecord:
    key: str
    config: str
    alpha: float | None
    trial: int
    seed: int
    prompt: str
    response: str
    instruction_id_list: list[str]
    strict: list[bool]
    loose: list[bool]
    follow_all_strict: bool
    follow_all_loose: bool
    quality: float | None
    n_new_tokens: int
    missing_spans: list[str]
    cached: bool
    error: str | None = None
    model: dict[str, str] | None = None  # the ModelFingerprint of the weights that answered
    method: str | None = None  # the config's steering method; None for the unsteered baseline
    prepared_prompt: str | None = None  # the prompt after the method's prepare (before the chat template); None if unknown
    highlights: list[str] = field(default_factory=list)  # the spans the case asked steering to emphasize
    device: str | None = None  # the torch device of the process that ran the case

    @classmethod
    def failed(
        cls,
        *,
        key: str,
        config: str,
        alpha: float | None,
        trial: int,
        error: str,
        seed: int = 0,
        prompt: str = "",
        instruction_id_list: list[str] | None = None,
        response: str = "",
        method: str | None = None,
    ) -> CaseRecord:
        """A case without verdicts: an error, counted apart and never as a miss."""
        return cls(
            key=key,
            config=config,
            alpha=alpha,
            trial=trial,
            seed=seed,
            prompt=prompt,
            response=response,
            instruction_id_list=list(instruction_id_list or []),
            strict=[],
            loose=[],
            follow_all_strict=False,
            follow_all_loose=False,
            quality=None,
            n_new_tokens=0,
            missing_spans=[],
            cached=False,
            error=error,
            method=method,
        )

    @property
    def ran_unsteered(self) -> bool:
        return ran_unsteered(self.to_dict())

    @property
    def case_id(self) -> str:
        from pytest_steer.cases import case_id

        return case_id(self.key, self.config, self.trial)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseRecord:
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = required - set(data)
        if missing:
            raise ValueError(f"case record is missing {sorted(missing)}; was it written by another version of pytest-steer?")
        return cls(**{name: data[name] for name in names if name in data})


def ran_unsteered(record: Mapping[str, Any]) -> bool:
    """A steered case whose steering found none of its highlights in the prompt, so it ran as the baseline does."""
    highlights = record.get("highlights") or []
    missing = set(record.get("missing_spans") or [])
    return bool(record.get("method")) and not record.get("error") and bool(highlights) and all(h in missing for h in highlights)

