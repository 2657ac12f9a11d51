"""Seeded per-row sampling of the next token.

Each row draws with a uniform number from a counter-based hash of (its seed, the decode
step), computed for the whole batch at once: no per-row Python work, and a row's token
depends on its scores and its seed alone, never on the other rows of its batch, on the
rows dropped before it, or on the order in which batches run.
"""

from __future__ import annotations

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB


class RowSampler:
    """Temperature, nucleus filtering, then one inverse-CDF draw per row."""

    def __init__(self, temperature: float, top_p: float) -> None:
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, scores: torch.Tensor, seeds: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
        """(rows, vocab) logits, (rows,) int64 seeds and the step (one, or each row's) -> (rows,) token ids."""
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            scores = nucleus(scores, self.top_p)
        cdf = scores.softmax(dim=-1).double().cumsum(dim=-1)
        target = uniform(seeds, step).to(cdf.device) * cdf[:, -1]
        return torch.searchsorted(cdf, target[:, None]).clamp_(max=scores.shape[-1] - 1)[:, 0]


def greedy(scores: torch.Tensor, seeds: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
    """The most likely token of each row (seeds and step are unused)."""
    return scores.argmax(dim=-1)


def nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Scores with the tail past cumulative probability ``top_p`` set to -inf (the token that crosses it stays)."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probabilities = sorted_scores.softmax(dim=-1)
    drop_sorted = probabilities.cumsum(dim=-1) - probabilities >= top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def uniform(seeds: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
    """One float64 in (0, 1) per seed for this step, or for each row's own step (SplitMix64 of seed and step)."""
    steps = step.to(seeds.device, torch.int64) if isinstance(step, torch.Tensor) else torch.full_like(seeds, step)
    z = _splitmix64(_splitmix64(seeds) ^ _splitmix64(steps))
    return (_shift_right(z, 11).double() + 0.5) * 2.0**-53
