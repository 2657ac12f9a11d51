"""What pytest's selection (``-k``, ``-m``, ``--deselect``, ``--lf``) left of a run, and what it leaves undecided.

Only the selected cases are generated and aggregated. A config whose collected cases are
not all selected is measured on a subset that pytest chose (``--lf`` picks the failures),
so a gate, fail-if or saved-run comparison that reads such a config is not decided: it is
reported as skipped with the reason, never as passed or failed. A run that stopped early
(``-x``/``--maxfail``, an interrupt) is partial the same way, over the cases that ran.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_steer.plan.cases import BASELINE

if TYPE_CHECKING:
    from pytest_steer.plan.cases import Case, SteeringConfig
    from pytest_steer.stats.comparison import ComparisonResult
    from pytest_steer.stats.gate_language import Check
    from pytest_steer.stats.gates import GateResult

SELECTION_OPTIONS = "-k/-m/--deselect/--lf"


@dataclass(frozen=True)
class ConfigSelection:
    """How many of one config's collected cases and prompts pytest's selection kept."""

    name: str
    cases_selected: int
    cases_collected: int
    prompts_selected: int
    prompts_collected: int

    @property
    def partial(self) -> bool:
        return self.cases_selected < self.cases_collected

    def describe(self) -> str:
        if self.cases_selected == 0:
            return f"none of the {self.prompts_collected} prompts of {self.name}"
        if self.prompts_selected < self.prompts_collected:
            return f"{self.prompts_selected} of {self.prompts_collected} prompts of {self.name}"
        return f"{self.cases_selected} of {self.cases_collected} cases of {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases_selected": self.cases_selected,
            "cases_collected": self.cases_collected,
            "prompts_selected": self.prompts_selected,
            "prompts_collected": self.prompts_collected,
        }


@dataclass(frozen=True)
class UndecidedCheck:
    """A gate, fail-if or saved-run comparison that the selection left without a verdict."""

    kind: str  # "gate" (gates and fail-ifs) or "comparison" (with --steer-baseline)
    name: str  # the gate's label, or the compared metric
    config: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "config": self.config, "reason": self.reason}


@dataclass(frozen=True)
class RunSelection:
    configs: tuple[ConfigSelection, ...]
    undecided: tuple[UndecidedCheck, ...] = ()
    stopped: str | None = None  # why the run ended before its selected cases all ran; they are then the cases that ran

    @classmethod
    def of(cls, cases: Iterable[Case], selected: Collection[str], stopped: str | None = None) -> RunSelection:
        """Per config (in plan order), the selected share of the collected ``cases``; ``selected`` holds case ids
        (those that ran, with ``stopped``: why the others did not)."""
        collected: dict[str, list[Case]] = {}
        for case in cases:
            collected.setdefault(case.config.name, []).append(case)
        chosen = set(selected)
        configs = []
        for name, config_cases in collected.items():
            kept = [case for case in config_cases if case.id in chosen]
            configs.append(
                ConfigSelection(
                    name,
                    cases_selected=len(kept),
                    cases_collected=len(config_cases),
                    prompts_selected=len({case.row.key for case in kept}),
                    prompts_collected=len({case.row.key for case in config_cases}),
                )
            )
        return cls(tuple(configs), stopped=stopped)

    @property
    def partial(self) -> bool:
        return any(config.partial for config in self.configs)

    @property
    def cases_selected(self) -> int:
        return sum(config.cases_selected for config in self.configs)

    @property
    def cases_collected(self) -> int:
        return sum(config.cases_collected for config in self.configs)

    def partial_configs(self) -> dict[str, ConfigSelection]:
        return {config.name: config for config in self.configs if config.partial}

    def describe(self) -> str:
        """One line for the reports; empty for a full selection."""
        if not self.partial:
            return ""
        parts = "; ".join(config.describe() for config in self.partial_configs().values())
        who = f"partial selection: pytest's selection ({SELECTION_OPTIONS})"
        if self.stopped:
            who = f"partial run: the run ended early ({self.stopped}) and"
        text = f"{who} ran {self.cases_selected} of {self.cases_collected} cases ({parts}); the aggregates cover only those"
        if self.undecided:
            text += f", and {len(self.undecided)} check(s) are not decided"
        return text

    def decide(
        self,
        gates: Iterable[GateResult],
        comparisons: Iterable[ComparisonResult],
        *,
        configs: Sequence[SteeringConfig] = (),
        checks: Sequence[Check] = (),
        compared: Sequence[str] = (),
    ) -> tuple[list[GateResult], list[ComparisonResult], RunSelection]:
        """Keep the checks whose configs are fully selected; the others become undecided.

        ``checks`` are the gates and fail-ifs of the run and ``compared`` the metrics compared
        with a saved run: a config of ``configs`` that the selection left without any case has
        no result to judge, and is named undecided too.
        """
        partial = self.partial_configs()
        baseline = next((config.name for config in self.configs if config.name == BASELINE), None)
        kept_gates, kept_comparisons, undecided = [], [], list(self.undecided)
        for gate in gates:
            if gate.config is None and partial:  # selects only configs without a case: named below
                continue
            involved = [gate.config] if gate.config is not None else []
            if gate.config is not None and baseline is not None and gate.check.gate.delta:
                involved.append(baseline)
            reason = self._reason(involved, partial)
            if reason is None:
                kept_gates.append(gate)
            else:
                undecided.append(UndecidedCheck("gate", gate.label, gate.config, reason))
        for comparison in comparisons:
            reason = self._reason([comparison.config], partial)
            if reason is None:
                kept_comparisons.append(comparison)
            else:
                undecided.append(UndecidedCheck("comparison", comparison.metric, comparison.config, reason))
        unselected = [config for config in configs if config.name in partial and partial[config.name].cases_selected == 0]
        for check in checks:
            gate = check.gate
            for config in unselected:
                if gate.selector.selects(config.name, config.alpha, baseline=not config.steered, delta=gate.delta):
                    undecided.append(UndecidedCheck("gate", check.label, config.name, str(self._reason([config.name], partial))))
        for config in unselected:
            reason = str(self._reason([config.name], partial))
            undecided += [UndecidedCheck("comparison", metric, config.name, reason) for metric in compared]
        return kept_gates, kept_comparisons, RunSelection(self.configs, tuple(undecided), self.stopped)

    def _reason(self, involved: Iterable[str], partial: Mapping[str, ConfigSelection]) -> str | None:
        short = [partial[name].describe() for name in dict.fromkeys(involved) if name in partial]
        if not short:
            return None
        if self.stopped:
            return f"not decided: the run ended early ({self.stopped}) and ran {' and '.join(short)}; run all its cases to decide it"
        return f"not decided: pytest's selection ran {' and '.join(short)}; run without {SELECTION_OPTIONS} to decide it"

    def to_dict(self) -> dict[str, Any]:
        return {
            "partial": self.partial,
            "cases_selected": self.cases_selected,
            "cases_collected": self.cases_collected,
            "configs": {config.name: config.to_dict() for config in self.configs},
            "undecided": [check.to_dict() for check in self.undecided],
            "stopped": self.stopped,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSelection:
        configs = tuple(ConfigSelection(name, **{k: int(v) for k, v in entry.items()}) for name, entry in data["configs"].items())
        undecided = tuple(UndecidedCheck(c["kind"], c["name"], c.get("config"), c["reason"]) for c in data.get("undecided", []))
        return cls(configs, undecided, data.get("stopped"))
