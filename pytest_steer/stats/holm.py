"""Holm's step-down: a family of one-sided tests decided together at a family-wise error.

The hypotheses are taken in ascending p-value order (ties keep the given order); the one
at rank ``r`` of ``m`` is tested at ``alpha / (m - r + 1)``, and the first that does not
clear its level stops the procedure: it and every later one are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HolmStep:
    """One hypothesis in Holm's order."""

    rank: int  # 1-based
    level: float  # the error it is tested at: alpha / (m - rank + 1)
    rejected: bool
    stopped_at: int | None = None  # when a hypothesis before it stopped the procedure: that one's index


def holm_steps(p_values: Sequence[float] | np.ndarray, alpha: float, clears: Callable[[int, float], bool] | None = None) -> list[HolmStep]:
    """Each hypothesis's step, in the given order, at family-wise error ``alpha``.

    ``clears(index, level)`` says whether hypothesis ``index`` is rejected at ``level``;
    by default its p-value is at most the level. A caller that decides on a confidence
    bound passes its own, so that the decision reads the same bound it reports.
    """
    p = np.asarray(p_values, dtype=np.float64)
    clears = clears or (lambda index, level: bool(p[index] <= level))
    m = p.size
    steps: dict[int, HolmStep] = {}
    stopped_at: int | None = None
    for rank, index in enumerate(np.argsort(p, kind="stable").tolist(), start=1):
        level = alpha / (m - rank + 1)
        rejected = stopped_at is None and clears(index, level)
        steps[index] = HolmStep(rank, level, rejected, stopped_at)
        if stopped_at is None and not rejected:
            stopped_at = index
    return [steps[index] for index in range(m)]


def holm(p_values: Sequence[float] | np.ndarray, alpha: float) -> np.ndarray:
    """Holm's rejections at family-wise error ``alpha``, one per p-value in the given order."""
    return np.array([step.rejected for step in holm_steps(p_values, alpha)], dtype=bool)
