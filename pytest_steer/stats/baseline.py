"""Saved runs: what ``--steer-save`` writes and ``--steer-baseline`` compares against.

A baseline file keeps per-prompt values (not only means), so a later run is compared
paired per prompt. Comparing across models is the point of a baseline (a new
checkpoint against the last good one); comparing across datasets, generation,
steering settings or quality scorers is not, and is refused: at collection, before
anything is generated (:func:`pytest_steer.plan.preflight.check_baseline_file`), and again
when the run's results are compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_steer.stats.aggregate import ConfigAggregate
from pytest_steer.store.atomic import write_text

BASELINE_FORMAT = "pytest-steer-baseline/1"
MUST_MATCH = ("dataset", "generation", "steering", "quality")
# Other draws of the same distribution: pairing per prompt still applies.
MAY_DIFFER = ("seed", "trials", "n_prompts")


class BaselineError(ValueError):
    """The baseline file cannot be read or cannot be compared with this run."""


@dataclass(frozen=True)
class SavedRun:
    run: dict[str, Any]
    aggregates: list[ConfigAggregate]


def save_run(run: dict[str, Any], aggregates: list[ConfigAggregate], path: Path, choice: dict[str, Any] | None = None) -> Path:
    """The run's per-prompt aggregates; for a run that chose a value (auto), what it chose and from what."""
    data = {"format": BASELINE_FORMAT, "run": run, "configs": [a.to_dict(include_per_prompt=True) for a in aggregates]}
    if choice is not None:
        data["choice"] = {key: choice[key] for key in ("method", "parameter", "constraint", "chosen", "chosen_config", "reason")}
    return write_text(path, json.dumps(data, indent=1, allow_nan=False))  # never a half-written baseline


def load_run(path: Path) -> SavedRun:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such file; save a baseline there first") from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read it ({exc.strerror}); give a readable baseline file") from None
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, or nesting too deep to parse
        raise BaselineError(f"{path}: not JSON ({exc}); is it a saved baseline?") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"{path}: not a {BASELINE_FORMAT} file; save baselines with save_run")
    if not isinstance(data.get("run"), dict) or not isinstance(data.get("configs"), list):
        raise BaselineError(f"{path}: lacks its 'run' object or 'configs' list; save the baseline again")
    try:
        aggregates = [ConfigAggregate.from_dict(config) for config in data["configs"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BaselineError(f"{path}: malformed config entry ({exc!r}); save the baseline again") from None
    return SavedRun(run=data["run"], aggregates=aggregates)


@dataclass(frozen=True)
class Difference:
    """One setting of a run fingerprint that differs from the saved run's."""

    section: str  # dataset, generation, steering or quality
    key: str
    saved: Any
    current: Any
    blocking: bool  # True: the runs cannot be compared; False: worth a note


def differences(current: dict[str, Any], saved: dict[str, Any]) -> list[Difference]:
    """Every setting that differs between two run fingerprints, model aside."""
    found = []
    for section in MUST_MATCH:
        ours, theirs = current.get(section) or {}, saved.get(section) or {}
        for key in sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)):
            if section == "steering":  # configs are matched by name: one on only one side is simply not compared
                blocking = key in ours and key in theirs
            else:
                blocking = key not in MAY_DIFFER
            found.append(Difference(section, key, theirs.get(key), ours.get(key), blocking))
    return found


def mismatches(current: dict[str, Any], saved: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(notes, blocking differences) between two run fingerprints."""
    notes = []
    if _model_id(current) != _model_id(saved):
        notes.append(f"the baseline was produced by {_model_id(saved)}; this run uses {_model_id(current)}")
    blocking = []
    found = differences(current, saved)
    for section in MUST_MATCH:
        for hard, bucket in ((True, blocking), (False, notes)):
            chosen = [d for d in found if d.section == section and d.blocking is hard]
            if chosen:
                details = ", ".join(f"{d.key}: {d.saved!r} -> {d.current!r}" for d in chosen)
                bucket.append(f"{section} settings differ from the baseline ({details})")
    return notes, blocking


def _model_id(run: dict[str, Any]) -> str:
    model = run.get("model") or {}
    return f"{model.get('name')}@{model.get('revision', '?')} ({model.get('dtype', '?')})"
