"""Confidence intervals over prompts: seeded, expanded percentile bootstrap of ratio estimators.

The prompt is the statistical unit. Every estimator here is a ratio of sums over prompts,
``sum(numerators) / sum(denominators)``: with unit denominators it is a plain mean of
per-prompt values (prompt-level accuracy, quality), with instruction counts as
denominators it is the micro-averaged instruction-level accuracy. A bootstrap resample
draws prompts with replacement and recomputes the whole ratio, so prompts with many
instructions weigh as much in the resampling as they do in the estimate.

The interval is the *expanded* percentile interval (Hesterberg, 2015): the percentiles
of the bootstrap distribution are taken at a tail ``Φ(sqrt(n/(n-1)) · t_{n-1}(tail))``
instead of ``tail``, which corrects the plain percentile interval's narrowness with few
prompts (its ``(n-1)/n`` variance bias and the normal-vs-t gap) and tends to it as ``n``
grows. The same mapping turns the fraction of resamples beyond a threshold into a
one-sided p-value (:meth:`Bootstrap.p_value`), so a bound clears a threshold exactly
when that p-value is below the bound's tail.

Results depend on the order of the input arrays only through the seeded resample
indices; callers pass arrays in sorted prompt-key order so that the same prompts give
the same interval however the run was split across processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from pytest_steer.stats.levels import CONFIDENCE, one_sided_error

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


@dataclass(frozen=True)
class Bootstrap:
    """An estimate over ``n_prompts`` prompts with its bootstrap replicates, for intervals and tests."""

    estimate: float
    replicates: np.ndarray  # one recomputed estimate per resample; empty below two prompts
    n_prompts: int

    def tails(self, tail: float) -> tuple[float, float]:
        """The lower and upper one-sided bounds, each with error ``tail``."""
        if self.n_prompts == 0:
            return math.nan, math.nan
        if self.n_prompts == 1:
            return self.estimate, self.estimate
        expanded = expanded_tail(tail, self.n_prompts)
        low, high = np.quantile(self.replicates, [expanded, 1.0 - expanded])
        return float(low), float(high)

    def interval(self, confidence: float) -> Interval:
        """The two-sided interval at ``confidence``: each bound errs ``(1 - confidence) / 2``."""
        _check_confidence(confidence)
        if self.n_prompts == 0:
            return Interval.empty()
        low, high = self.tails(one_sided_error(confidence))
        return Interval(self.estimate, low, high, self.n_prompts)

    def p_value(self, threshold: float, *, above: bool, strict: bool) -> float:
        """One-sided p-value of "the true value is above (or below) ``threshold``".

        The smallest tail at which the lower bound (``above``) or upper bound clears the
        threshold; ``strict`` makes landing exactly on it count against the claim (``>``, ``<``).
        """
        if self.n_prompts == 0:
            return math.nan
        if self.n_prompts == 1:
            shown = self.estimate > threshold if above else self.estimate < threshold
            return 0.0 if shown or (not strict and self.estimate == threshold) else 1.0
        reps = self.replicates
        if above:
            against = np.mean(reps <= threshold) if strict else np.mean(reps < threshold)
        else:
            against = np.mean(reps >= threshold) if strict else np.mean(reps > threshold)
        return unexpanded_tail(float(against), self.n_prompts)


def bootstrap(
    numerators: ArrayLike,
    denominators: ArrayLike | None = None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Bootstrap:
    """Replicates of ``sum(numerators) / sum(denominators)``, one entry per prompt."""
    _check_resamples(n_resamples)
    num, den = _as_ratio_arrays(numerators, denominators, "numerators", "denominators")
    if num.size == 0:
        return Bootstrap(math.nan, np.empty(0), 0)
    mean = _ratio(num, den)
    if num.size == 1:
        return Bootstrap(mean, np.empty(0), 1)
    replicates = _replicates(num.size, n_resamples, seed, lambda idx: _resampled_ratios(num, den, idx))
    return Bootstrap(mean, replicates, num.size)


def paired_bootstrap(
    num_a: ArrayLike,
    den_a: ArrayLike | None,
    num_b: ArrayLike,
    den_b: ArrayLike | None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Bootstrap:
    """Replicates of ``ratio(a) - ratio(b)`` over the same prompts, resampling prompts jointly.

    Entry ``i`` of every array belongs to the same prompt; each resample draws one set
    of prompts and recomputes both ratios on it, so prompt difficulty cancels out of
    the difference. Identical inputs give exactly 0 in every replicate.
    """
    _check_resamples(n_resamples)
    na, da = _as_ratio_arrays(num_a, den_a, "num_a", "den_a")
    nb, db = _as_ratio_arrays(num_b, den_b, "num_b", "den_b")
    if na.size != nb.size:
        raise ValueError(
            f"paired arrays differ in length ({na.size} vs {nb.size}); pass both sides over the same prompts in the same order"
        )
    if na.size == 0:
        return Bootstrap(math.nan, np.empty(0), 0)
    mean = _ratio(na, da) - _ratio(nb, db)
    if na.size == 1:
        return Bootstrap(mean, np.empty(0), 1)
    replicates = _replicates(na.size, n_resamples, seed, lambda idx: _resampled_ratios(na, da, idx) - _resampled_ratios(nb, db, idx))
    return Bootstrap(mean, replicates, na.size)


def bootstrap_ratio(
    numerators: ArrayLike,
    denominators: ArrayLike | None = None,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Estimate ``sum(numerators) / sum(denominators)`` with its expanded percentile CI.

    One entry per prompt. Without denominators every prompt counts 1 and the estimate
    is the mean of the numerators. One prompt gives a zero-width interval at the
    estimate; no prompt gives an undefined (NaN) interval with ``n_prompts == 0``.
    """
    return bootstrap(numerators, denominators, n_resamples=n_resamples, seed=seed).interval(confidence)


def paired_difference(
    num_a: ArrayLike,
    den_a: ArrayLike | None,
    num_b: ArrayLike,
    den_b: ArrayLike | None,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Estimate ``ratio(a) - ratio(b)`` over the same prompts (:func:`paired_bootstrap`) with its CI."""
    paired = paired_bootstrap(num_a, den_a, num_b, den_b, n_resamples=n_resamples, seed=seed)
    return paired.interval(confidence)


def expanded_tail(tail: float, n: int) -> float:
    """The percentile tail the expanded interval uses for a nominal one-sided ``tail`` at ``n`` prompts."""
    return _NORMAL.cdf(math.sqrt(n / (n - 1)) * student_t_quantile(tail, n - 1))


def unexpanded_tail(expanded: float, n: int) -> float:
    """Inverse of :func:`expanded_tail`: the nominal tail whose percentile is ``expanded``."""
    if expanded <= 0.0:
        return 0.0
    if expanded >= 1.0:
        return 1.0
    return student_t_cdf(_NORMAL.inv_cdf(expanded) / math.sqrt(n / (n - 1)), n - 1)


def student_t_cdf(x: float, df: int) -> float:
    """CDF of Student's t with an integer number of degrees of freedom (exact finite series)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df!r}")
    theta = math.atan(abs(x) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    # P(|T| <= |x|), Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df).
    if df % 2:
        term, total = 1.0, 0.0
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        central = 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    else:
        term, total = 1.0, 0.0
        for k in range(1, df // 2 + 1):
            total += term
            term *= cos2 * (2 * k - 1) / (2 * k)
        central = math.sin(theta) * total
    return 0.5 + math.copysign(0.5 * central, x)


def student_t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t (bisection on :func:`student_t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p!r}")
    low, high = -1.0, 1.0
    while student_t_cdf(low, df) > p:
        low *= 2.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, abs(middle)):
            break
    return (low + high) / 2.0


_NORMAL = NormalDist()
_DRAWS_PER_CHUNK = 2_000_000  # prompt indices held at once while resampling


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _check_resamples(n_resamples: int) -> None:
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
        raise ValueError(f"{den_name} must match {num_name} one per prompt, got shapes {den.shape} and {num.shape}")
    if not np.all(np.isfinite(den)) or np.any(den <= 0):
        raise ValueError(f"{den_name} must be positive and finite for every prompt")
    return num, den


def _ratio(num: np.ndarray, den: np.ndarray | None) -> float:
    return float(num.sum() / (num.size if den is None else den.sum()))


def _replicates(n: int, n_resamples: int, seed: int, statistic: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``statistic`` of each resample's prompt indices (one row per resample), drawn in chunks.

    The chunks come from one seeded generator in turn, so the indices are those of a
    single ``(n_resamples, n)`` draw, while memory stays bounded for many resamples.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, _DRAWS_PER_CHUNK // n)
    parts = [statistic(rng.integers(0, n, size=(min(rows, n_resamples - start), n))) for start in range(0, n_resamples, rows)]
    return np.concatenate(parts)


def _resampled_ratios(num: np.ndarray, den: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    totals = num[idx].sum(axis=1)
    return totals / (idx.shape[1] if den is None else den[idx].sum(axis=1))


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
