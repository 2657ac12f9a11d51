"""Where a whole run's wall time goes: load, prefill, decode steps, sampling, checks, quality, report.

Runs the demo's work in this process (``pytest.main`` on the shipped suite: every built-in prompt × baseline,
PASTA alpha 10 and emphasis × 1 trial, no response cache) with timers around the functions that do each part:

- load: ``load_model`` (weights, dtype decision);
- prefill: the model's forwards over the prompts (more than one token per row);
- decode steps: the model's forwards of one token per row;
- sampling and bookkeeping: the rest of the decode loop (choosing each token, dropping rows that ended);
- generation set-up: the rest of ``Engine.generate`` (chat template, tokenizer, steering blocks, decoding text);
- checks: the IFEval strict and loose checks of every response;
- quality: the quality scorer (``--quality``);
- report: ``write_outputs`` (JSON, figures, HTML);
- the rest: interpreter, imports, collection and pytest's own work (the process's wall time minus the above).

    python benchmarks/bench_phases.py [--prompts 99] [--new-tokens 64] [--dtype float32] [--quality fluency] [PYTEST ARGS]

Arguments it does not know go to pytest (``--steer-sequential`` and the demo's checks, for instance).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()

import pytest  # noqa: E402
import torch  # noqa: E402
from tables import print_table  # noqa: E402  # benchmarks/tables.py, beside this script

from pytest_steer import plugin  # noqa: E402
from pytest_steer.engine import decoding, generation  # noqa: E402
from pytest_steer.model import loading  # noqa: E402
from pytest_steer.model.numerics import cpu_features  # noqa: E402
from pytest_steer.run import runner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECONDS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
SCORING = [False]  # the fluency score runs the model too: its forwards are counted in quality, not in prefill


def timed(phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[phase] += time.perf_counter() - start
            CALLS[phase] += 1

    return wrapper


class ForwardTimer:
    """Splits the model's forwards into prefills (several tokens a row) and decode steps (one)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.phase = ""

    def attach(self, model: torch.nn.Module) -> None:
        model.register_forward_pre_hook(self.before, with_kwargs=True)
        model.register_forward_hook(self.after, with_kwargs=True)

    def before(self, module: Any, args: tuple, kwargs: dict) -> None:
        if SCORING[0]:
            self.start = None
            return
        ids = kwargs.get("input_ids")
        self.phase = "prefill" if ids is not None and ids.shape[1] > 1 else "decode steps"
        self.start = time.perf_counter()

    def after(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if self.start is not None:
            SECONDS[self.phase] += time.perf_counter() - self.start
            CALLS[self.phase] += 1
            self.start = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=99)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quality", default="fluency")
    args, extra = parser.parse_known_args()

    forwards = ForwardTimer()
    load = loading.load_model

    def load_and_time(*a: Any, **k: Any) -> Any:
        loaded = timed("load", load)(*a, **k)
        forwards.attach(loaded.model)
        return loaded

    runner.load_model = load_and_time
    generation.decode = timed("decode loop", decoding.decode)
    generation.decode_stream = timed("decode loop", generation.decode_stream)
    generation.Engine.generate = timed("generate", generation.Engine.generate)
    runner.evaluate = timed("checks", runner.evaluate)
    plugin.write_outputs = timed("report", plugin.write_outputs)
    scorer = runner.CaseRunner.scorer
    runner.CaseRunner.scorer = property(lambda self: _timed_scorer(scorer.__get__(self)))

    report = Path(tempfile.mkdtemp(prefix="steer-phases-"))
    os.chdir(REPO)
    code = pytest.main([
        "suites/ifeval", "--steer-limit", str(args.prompts), "--steer-alpha", "10", "--steer-method", "emphasis",
        "--steer-max-new-tokens", str(args.new_tokens), "--steer-dtype", args.dtype, "--steer-quality", args.quality,
        "--steer-no-cache", "--steer-report-dir", str(report), "-q", "-p", "no:cacheprovider", *extra,
    ])  # fmt: skip
    wall = time.perf_counter() - PROCESS_START
    if code not in (0, 1):
        raise SystemExit(f"the run failed (exit {code})")

    model = SECONDS["prefill"] + SECONDS["decode steps"]
    parts = {
        "load": SECONDS["load"],
        "prefill": SECONDS["prefill"],
        "decode steps": SECONDS["decode steps"],
        "sampling and bookkeeping": SECONDS["decode loop"] - model,
        "generation set-up": SECONDS["generate"] - SECONDS["decode loop"],
        "checks": SECONDS["checks"],
        "quality": SECONDS["quality"],
        "report": SECONDS["report"],
    }
    parts["the rest (start, imports, collection, pytest)"] = wall - sum(parts.values())
    flags = ", ".join(cpu_features()) or "none of those looked for"
    print(f"\nCPU flags found: {flags}; torch threads {torch.get_num_threads()}")
    print(
        f"the demo's work: {args.prompts} prompts x 3 configs x {args.new_tokens} new tokens, {args.dtype}, quality {args.quality}"
        f"{' ' + ' '.join(extra) if extra else ''}; "
        f"{CALLS['prefill']} prefills, {CALLS['decode steps']} decode steps, {CALLS['checks']} checked responses"
    )
    rows = [("part", "seconds", "share")]
    rows += [(name, f"{seconds:.1f}", f"{seconds / wall:.0%}") for name, seconds in parts.items()]
    rows.append(("whole process", f"{wall:.1f}", "100%"))
    print_table(rows)


def _timed_scorer(scorer: Any) -> Any:
    if not getattr(scorer, "_phase_timed", False):
        score = timed("quality", scorer.score)

        def scoring(*a: Any, **k: Any) -> Any:
            SCORING[0] = True
            try:
                return score(*a, **k)
            finally:
                SCORING[0] = False

        scorer.score = scoring
        scorer._phase_timed = True
    return scorer


if __name__ == "__main__":
    main()
