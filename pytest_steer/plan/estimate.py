"""What a run will cost, said before it starts: the plan line, the throughput earlier runs measured, the ETA.

Each run that generates stores its measured throughput beside the response cache
(``throughput.json``), per model revision, device kind, dtype and attention kernel; the
next run's plan reads it to estimate its time. Without a measurement the plan says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_steer.store.kept import keep, read_kept

THROUGHPUT_FILE = "throughput.json"


@dataclass(frozen=True)
class Throughput:
    """Measured on one model, device kind and dtype."""

    tokens_per_s: float  # new tokens per second of batch work, quality scoring included
    fill: float  # the mean share of max new tokens a response used (responses end early)
    device: str
    dtype: str

    def seconds(self, generations: int, max_new_tokens: int) -> float:
        return generations * max_new_tokens * self.fill / self.tokens_per_s


def throughput_key(model: Mapping[str, Any], device: str) -> str:
    """The weights, the device kind and the numerics a throughput was measured on."""
    return f"{model.get('name')}@{model.get('revision')} {device} {model.get('dtype')} {model.get('attn_implementation')}"


def read_throughput(directory: Path | None, model: Mapping[str, Any], device: str) -> Throughput | None:
    entry = read_kept(directory, THROUGHPUT_FILE, throughput_key(model, device))
    if entry is None:  # none measured yet: no estimate
        return None
    try:
        tokens_per_s, fill = float(entry["tokens_per_s"]), float(entry["fill"])
    except (ValueError, KeyError, TypeError):  # an entry that is not ours: no estimate
        return None
    if not (tokens_per_s > 0 and 0 < fill <= 1):
        return None
    return Throughput(tokens_per_s, fill, device, str(model.get("dtype")))


def record_throughput(
    directory: Path, model: Mapping[str, Any], device: str, *, tokens: int, cases: int, max_new_tokens: int, seconds: float
) -> None:
    """Store a run's measurement (the last one wins); a cache that cannot be written costs only the estimate."""
    if tokens <= 0 or cases <= 0 or seconds <= 0:
        return
    entry = {"tokens_per_s": tokens / seconds, "fill": min(1.0, tokens / (cases * max_new_tokens))}
    keep(directory, THROUGHPUT_FILE, throughput_key(model, device), entry)


@dataclass(frozen=True)
class RunPlan:
    """What a run will do: its cases, what the response cache holds, the tokens to generate and the time."""

    prompts: int
    configs: int
    trials: int
    collected: int  # cases of the plan
    selected: int  # cases pytest's selection kept
    cached: int | None  # selected cases whose response is in the response cache; None without a cache
    max_new_tokens: int
    throughput: Throughput | None
    workers: int = 1
    unchosen: int = 0  # cases of the strengths auto will not choose: they wait for the choice, then are skipped

    @property
    def to_generate(self) -> int:
        return max(0, self.selected - (self.cached or 0) - self.unchosen)

    def estimate(self) -> float | None:
        if self.throughput is None:
            return None
        return self.throughput.seconds(self.to_generate, self.max_new_tokens) / max(1, self.workers)

    def line(self) -> str:
        counts = [_count(self.prompts, "prompt"), _count(self.configs, "config"), _count(self.trials, "trial")]
        text = f"plan: {' × '.join(counts)} = {self.collected} cases"
        if self.selected < self.collected:
            text += f", {self.selected} selected"
        if self.unchosen:
            text += f" ({self.unchosen} of them wait for auto's choice and will not run)"
        cache = "no response cache" if self.cached is None else f"{self.cached} in the response cache"
        budget = self.to_generate * self.max_new_tokens
        text += f"; {self.to_generate} to generate ({cache}) × up to {self.max_new_tokens} new tokens = {budget:,} tokens at most"
        if not self.to_generate:
            return text + "; nothing to generate"
        seconds = self.estimate()
        if seconds is None:
            return text + "; no estimate yet (a run of this model on this device measures its throughput)"
        tp = self.throughput
        assert tp is not None
        workers = f" on {self.workers} workers" if self.workers > 1 else ""
        measured = f"{tp.tokens_per_s:.0f} tokens/s on {tp.device} {tp.dtype}, responses {tp.fill:.0%} of max length"
        return text + f"; estimate about {format_duration(seconds)}{workers} (earlier run: {measured})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
