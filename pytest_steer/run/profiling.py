"""``python -m pytest_steer profile``: which heads PASTA should steer, by model profiling on held-out prompts.

The prompts are split (:func:`pytest_steer.plan.choice.split_prompts`): profiling reads the
selection part only, written to ``selection.jsonl`` in a seeded random order, and leaves
``evaluation.jsonl`` for the run that reports the chosen heads. Two stages, each a series of
steer runs over growing prefixes of the selection prompts (a block more per look):

1. **layers**: PASTA at the given alpha on every head of one layer, one candidate per layer;
2. **heads**: one head alone, for every head of the best ``layers`` layers of stage 1.

Every candidate of a look runs in one pytest run, as ``--steer-method pasta:alpha=A,heads=H``
configs beside the baseline (they share its batches), so the response cache keeps what a
look generated and the next look generates only its new block. After each look successive
elimination (:mod:`pytest_steer.stats.profile`) drops the candidates shown to be outside the
top; a stage ends when its prompts are used or no more than it keeps are left. The top ``k``
heads of stage 2 by estimated lift are the head set, written in ``--steer-heads``' JSON form.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_steer.plan.choice import seeded_order, split_prompts
from pytest_steer.plan.data import PromptRow, load_rows
from pytest_steer.stats.aggregate import aggregate
from pytest_steer.stats.levels import CONFIDENCE, one_sided_error
from pytest_steer.stats.profile import Lift, lifts, ranked, survivors
from pytest_steer.store.atomic import write_text

TEST_MODULE = "def test_profile(steer_case):\n    pass\n"


class ProfileError(RuntimeError):
    """A profiling run failed; the message says which and where its log is."""


@dataclass(frozen=True)
class ProfileSettings:
    out: Path
    alpha: float = 10.0
    top_k: int = 8  # heads in the chosen set
    layers: int = 3  # layers of stage 1 whose heads stage 2 profiles
    candidates: tuple[int, ...] | None = None  # the layers stage 1 profiles; None: every layer
    metric: str = "strict_instruction_accuracy"
    block: int = 8  # prompts per look
    share: float = 0.5  # of the prompts that profiling reads
    seed: int = 0
    dataset: str = "builtin"
    limit: int | None = None
    pytest_args: tuple[str, ...] = ()  # passed to every steer run: --steer-model, --steer-max-new-tokens, -n, ...


@dataclass
class Stage:
    name: str
    keep: int
    candidates: dict[str, str]  # config name -> its heads text
    looks: list[dict[str, Any]] = field(default_factory=list)
    lifts: dict[str, Lift] = field(default_factory=dict)
    dropped_at: dict[str, int] = field(default_factory=dict)  # config -> the look that dropped it

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "keep": self.keep,
            "looks": self.looks,
            "candidates": [
                {"heads": heads, **self.lifts[name].to_dict(), "dropped_at_look": self.dropped_at.get(name)}
                for name, heads in self.candidates.items()
            ],
        }


def profile_heads(settings: ProfileSettings, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Profile, write ``heads.json``, ``selection.jsonl`` and ``evaluation.jsonl`` under ``settings.out``; return
    results.json's ``profile`` section."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(settings.dataset)[: settings.limit]
    split = split_prompts([row.key for row in rows], settings.share, settings.seed)
    by_key = {row.key: row for row in rows}
    selection = [by_key[key] for key in seeded_order(split.selection, settings.seed)]
    _write_rows(out / "selection.jsonl", selection)
    _write_rows(out / "evaluation.jsonl", [by_key[key] for key in split.evaluation])
    write_text(out / "suite" / "test_profile.py", TEST_MODULE)
    num_layers, num_heads = _model_shape(settings.pytest_args)
    candidates = settings.candidates if settings.candidates is not None else tuple(range(num_layers))
    too_deep = [layer for layer in candidates if layer >= num_layers]
    if too_deep:
        raise ProfileError(f"--candidates names layer {too_deep[0]}, and the model has {num_layers} (0-{num_layers - 1})")

    layers = Stage("layers", settings.layers, {_config(settings.alpha, str(layer)): str(layer) for layer in candidates})
    _run_stage(settings, layers, len(selection), echo)
    best_layers = [int(layers.candidates[name]) for name in ranked(layers.lifts, _kept(layers))[: settings.layers]]
    heads_text = {(layer, head): json.dumps({str(layer): [head]}) for layer in best_layers for head in range(num_heads)}
    heads = Stage("heads", settings.top_k, {_config(settings.alpha, text): text for text in heads_text.values()})
    _run_stage(settings, heads, len(selection), echo)
    chosen_names = ranked(heads.lifts, _kept(heads))[: settings.top_k]
    chosen: dict[str, list[int]] = {}
    for name in chosen_names:
        (layer, head_list), *_ = json.loads(heads.candidates[name]).items()
        chosen.setdefault(layer, []).extend(head_list)
    chosen = {layer: sorted(chosen[layer]) for layer in sorted(chosen, key=int)}
    write_text(out / "heads.json", json.dumps(chosen) + "\n")
    return {
        "alpha": settings.alpha,
        "metric": settings.metric,
        "top_k": settings.top_k,
        "block_size": settings.block,
        "error": one_sided_error(CONFIDENCE),
        "num_layers": num_layers,
        "num_heads": num_heads,
        "stages": [layers.to_dict(), heads.to_dict()],
        "heads": chosen,
        "selection_prompts": [row.key for row in selection],
        "evaluation_prompts": list(split.evaluation),
    }


def _run_stage(settings: ProfileSettings, stage: Stage, prompts: int, echo: Callable[[str], None]) -> None:
    looks = math.ceil(prompts / settings.block)
    tail = one_sided_error(CONFIDENCE) / (looks * len(stage.candidates))
    live = list(stage.candidates)
    for look in range(1, looks + 1):
        used = min(look * settings.block, prompts)
        records = _steer_run(settings, f"{stage.name}-{look}", {name: stage.candidates[name] for name in live}, used)
        found = lifts(aggregate(records, seed=settings.seed, confidence=CONFIDENCE), live, settings.metric, tail)
        stage.lifts.update(found)
        kept = survivors(found, live, stage.keep)
        for name in set(live) - set(kept):
            stage.dropped_at[name] = look
        stage.looks.append({"look": look, "prompts": used, "candidates": len(live), "kept": len(kept)})
        echo(f"[steer] profile {stage.name}: look {look}/{looks} on {used} prompts: {len(live)} candidates, {len(kept)} kept")
        live = kept
        if len(live) <= stage.keep:
            break


def _kept(stage: Stage) -> list[str]:
    return [name for name in stage.candidates if name not in stage.dropped_at]


def _steer_run(settings: ProfileSettings, name: str, candidates: dict[str, str], prompts: int) -> list[dict[str, Any]]:
    """One steer run of the ``candidates`` (config name -> heads) on the first ``prompts`` selection prompts."""
    out = settings.out
    report = out / "runs" / name
    args = [sys.executable, "-m", "pytest", str(out / "suite" / "test_profile.py"), "-q", "-p", "no:cacheprovider"]
    args += ["--steer-dataset", str(out / "selection.jsonl"), "--steer-limit", str(prompts), "--steer-report-dir", str(report)]
    args += ["--steer-seed", str(settings.seed)]
    for heads in candidates.values():
        args += ["--steer-method", f"pasta:alpha={settings.alpha:g},heads={heads}"]
    given = settings.pytest_args
    if not any(arg.startswith(("--steer-cache-dir", "--steer-no-cache")) for arg in given):
        args += ["--steer-cache-dir", str(Path.cwd() / ".pytest_cache" / "d" / "steer-responses")]
    if not any(arg.startswith("--steer-quality") for arg in given):
        args += ["--steer-quality", "none"]  # the lift is in instruction following; quality is the next run's to check
    args += list(settings.pytest_args)
    report.mkdir(parents=True, exist_ok=True)
    log = report / "pytest.log"
    with log.open("w") as stream:
        code = subprocess.call(args, stdout=stream, stderr=subprocess.STDOUT)
    cases = report / "cases.jsonl"
    if code not in (0, 1) or not cases.exists():
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise ProfileError(f"the profiling run {name} exited with code {code}; its log: {log}\n{tail}")
    steering = json.loads((report / "results.json").read_text())["run"]["steering"]
    named = {entry["params"]["heads"]: config for config, entry in steering.items() if entry.get("method") == "pasta"}
    renamed = {named[heads]: config for config, heads in candidates.items() if heads in named}
    records = [json.loads(line) for line in cases.read_text().splitlines() if line.strip()]
    return [record | {"config": renamed.get(record["config"], record["config"])} for record in records]


def _config(alpha: float, heads: str) -> str:
    """The profile's own name of a candidate (the run names its config after all its parameters)."""
    return f"alpha{alpha:g}_heads_{heads}"


def _write_rows(path: Path, rows: Sequence[PromptRow]) -> None:
    lines = [
        json.dumps(
            {
                "key": row.key,
                "prompt": row.prompt,
                "instructions": list(row.instructions),
                "instruction_id_list": list(row.instruction_id_list),
                "kwargs": list(row.kwargs),
            }
        )
        for row in rows
    ]
    write_text(path, "\n".join(lines) + "\n")


def _model_shape(pytest_args: Sequence[str]) -> tuple[int, int]:
    """Layers and heads per layer of the model the runs use (``--steer-model``, default the embedded one)."""
    # why: imports torch and transformers; the other commands of python -m pytest_steer need neither
    from pytest_steer.model.config import HEAD_COUNT, LAYER_COUNT, config_size
    from pytest_steer.model.loading import EMBEDDED, embedded_checkpoint, read_model_config

    model = EMBEDDED
    for index, arg in enumerate(pytest_args):
        if arg == "--steer-model" and index + 1 < len(pytest_args):
            model = pytest_args[index + 1]
        elif arg.startswith("--steer-model="):
            model = arg.split("=", 1)[1]
    if model == EMBEDDED:
        embedded_checkpoint()
    config = read_model_config(model)
    layers, heads = config_size(config, LAYER_COUNT), config_size(config, HEAD_COUNT)
    if layers is None or heads is None:
        raise ProfileError(f"cannot read the layer and head counts of {model} from its config.json")
    return layers, heads
