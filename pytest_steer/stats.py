"""Confidence intervals over prompts: seeded percentile bootstrap of ratio estimators.

The prompt is the statistical unit. Every estimator here is a ratio of sums over prompts,
``sum(numerators) / sum(denominators)``: with unit denominators it is a plain mean of
per-prompt values (prompt-level accuracy, quality), with instruction counts as
denominators it is the micro-averaged instruction-level accuracy. A bootstrap resample
draws prompts with replacement and recomputes the whole ratio, so prompts with many
instructions weigh as much in the resampling as they do in the estimate.

Results depend on the order of the input arrays only through the seeded resample
indices; callers pass arrays in sorted prompt-key order so that the same prompts give
the same interval however the run was split across processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval over ``n_prompts`` prompts."""

    mean: float
    ci_low: float
    ci_high: float
    n_prompts: int

    @classmethod
    def empty(cls) -> Interval:
        """The interval of an estimate over no prompt: undefined everywhere."""
        return cls(math.nan, math.nan, math.nan, 0)

    @property
    def is_defined(self) -> bool:
        return not any(math.isnan(v) for v in (self.mean, self.ci_low, self.ci_high))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; undefined values become ``None`` (JSON has no NaN)."""
        return {
            "mean": _json_float(self.mean),
            "ci_low": _json_float(self.ci_low),
            "ci_high": _json_float(self.ci_high),
            "n_prompts": self.n_prompts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        return cls(
            mean=_nan_if_none(data["mean"]),
            ci_low=_nan_if_none(data["ci_low"]),
            ci_high=_nan_if_none(data["ci_high"]),
            n_prompts=int(data["n_prompts"]),
        )


def bootstrap_ratio(
    numerators: ArrayLike,
    denominators: ArrayLike | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Estimate ``sum(numerators) / sum(denominators)`` with a percentile bootstrap CI.

    One entry per prompt. Without denominators every prompt counts 1 and the estimate
    is the mean of the numerators. One prompt gives a zero-width interval at the
    estimate; no prompt gives an undefined (NaN) interval with ``n_prompts == 0``.
    """
    _check_settings(confidence, n_resamples)
    num, den = _as_ratio_arrays(numerators, denominators, "numerators", "denominators")
    n = num.size
    if n == 0:
        return Interval.empty()
    mean = _ratio(num, den)
    if n == 1:
        return Interval(mean, mean, mean, 1)
    idx = _resample_indices(n, n_resamples, seed)
    low, high = _percentiles(_resampled_ratios(num, den, idx), confidence)
    return Interval(mean, low, high, n)


def paired_difference(
    num_a: ArrayLike,
    den_a: ArrayLike | None,
    num_b: ArrayLike,
    den_b: ArrayLike | None,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Estimate ``ratio(a) - ratio(b)`` over the same prompts, resampling prompts jointly.

    Entry ``i`` of every array belongs to the same prompt; each resample draws one set
    of prompts and recomputes both ratios on it, so prompt difficulty cancels out of
    the difference. Identical inputs give exactly 0 with a zero-width interval.
    """
    _check_settings(confidence, n_resamples)
    na, da = _as_ratio_arrays(num_a, den_a, "num_a", "den_a")
    nb, db = _as_ratio_arrays(num_b, den_b, "num_b", "den_b")
    if na.size != nb.size:
        raise ValueError(
            f"paired arrays differ in length ({na.size} vs {nb.size}); "
            "pass both sides over the same prompts in the same order"
        )
    n = na.size
    if n == 0:
        return Interval.empty()
    mean = _ratio(na, da) - _ratio(nb, db)
    if n == 1:
        return Interval(mean, mean, mean, 1)
    idx = _resample_indices(n, n_resamples, seed)
    diffs = _resampled_ratios(na, da, idx) - _resampled_ratios(nb, db, idx)
    low, high = _percentiles(diffs, confidence)
    return Interval(mean, low, high, n)


def _check_settings(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples!r}")


def _as_ratio_arrays(
    numerators: ArrayLike, denominators: ArrayLike | None, num_name: str, den_name: str
) -> tuple[np.ndarray, np.ndarray | None]:
    num = np.asarray(numerators, dtype=np.float64)
    if num.ndim != 1:
        raise ValueError(f"{num_name} must be one value per prompt (1-D), got shape {num.shape}")
    if not np.all(np.isfinite(num)):
        raise ValueError(f"{num_name} contain NaN or infinite values; drop those prompts first")
    if denominators is None:
        return num, None
    den = np.asarray(denominators, dtype=np.float64)
    if den.shape != num.shape:
        raise ValueError(
            f"{den_name} must match {num_name} one per prompt, got shapes {den.shape} and {num.shape}"
        )
    if not np.all(np.isfinite(den)) or np.any(den <= 0):
        raise ValueError(f"{den_name} must be positive and finite for every prompt")
    return num, den


def _ratio(num: np.ndarray, den: np.ndarray | None) -> float:
    return float(num.sum() / (num.size if den is None else den.sum()))


def _resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Row ``r`` holds the prompt indices drawn for resample ``r``."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _resampled_ratios(num: np.ndarray, den: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    totals = num[idx].sum(axis=1)
    return totals / (idx.shape[1] if den is None else den[idx].sum(axis=1))


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
