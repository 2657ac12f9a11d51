"""Anytime-valid sequential decisions for gates and fail-ifs: betting e-processes, Holm over every look.

A check claims that a mean lies above (or below) a threshold. Each per-prompt value ``x``
(a prompt's trials averaged; for a delta, config minus baseline on that prompt) is
centered on the threshold, ``z = x - threshold``, and must lie in a range known before
the run: ``[0, 1]`` for an accuracy, ``[-1, 1]`` for an accuracy delta. Quality has no
such range; its values are clipped to ``threshold ± quality_clip`` (see
:func:`centered_scores`).

For the claim ``E[z] > 0`` a gambler starts with wealth 1 and stakes a fraction
``λ_t >= 0`` of it on each prompt, chosen from earlier prompts only::

    K_t = Π_{s <= t} (1 + λ_s z_s),    0 <= λ_s <= c / |min z|,  c = 0.95

Under the null ``E[z] <= 0`` the wealth is a nonnegative supermartingale, so by Ville's
inequality it ever reaches ``1/a`` with probability at most ``a``, however often it is
looked at (Waudby-Smith & Ramdas 2023, "Estimating means of bounded random variables by
betting"). ``1 / max_{s <= t} K_s`` is therefore a p-value valid at every look. The stake
is learned from earlier prompts (:func:`betting_wealth`) and grows with the effect.

Each check is tested on two sides. *Shown* (the expression holds; the null is its
negation) is decided after every look by Holm's step-down over the whole family at
the sequential share of the one-sided error; the running-supremum p-values only fall,
so a decided check stays decided. Checks still open at the budget are decided by the
fixed design on the remaining share: the union bound keeps the family-wise error of
the whole procedure (anything shown although false) within the run's one-sided level.
*Shown not* (the expression fails, so the final verdict can no longer change) is a
futility stop: the complement shown at the run's two-sided error (twice the one-sided),
each check on its own. Wrongly taken it costs power, not a false alarm: a true
expression is stopped as shown not with probability at most that level, whatever the
other checks do. A check whose complement is shown at that level would almost never be
shown at the budget either, where Holm's first step asks for a p-value below the
family's error over its size, so the looser level costs little power and stops settled
configs sooner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pytest_steer.stats.holm import holm

SEQUENTIAL_SHARE = 0.2  # of the family's one-sided error, spent on the looks; the rest decides at the budget
BET_CAP = 0.95  # the largest stake: the share of the wealth the worst possible prompt may take
FIXED_STAKE = BET_CAP / 2.0
FUTILITY_FACTOR = 2.0  # shown not: the complement shown at this many times the one-sided error (the two-sided one)
OPEN, SHOWN, SHOWN_NOT = "open", "shown", "shown not"


@dataclass(frozen=True)
class Stream:
    """One check's centered per-prompt scores, in prompt order, with the range they are known to lie in.

    ``above`` says the expression claims ``E[score] > 0`` (``>=``/``>``, decided on the
    lower bound); otherwise it claims ``E[score] < 0``.
    """

    name: str
    keys: tuple[str, ...]
    scores: np.ndarray
    low: float
    high: float
    above: bool
    n_clipped: int = 0
    configs: tuple[str, ...] = ()  # the configs whose cases its values come from


@dataclass(frozen=True)
class Decision:
    """Where one check stands after a look: ``state`` is open, shown or shown not."""

    name: str
    state: str
    look: int | None  # 1-based look at which it was decided
    prompts: int  # the check's prompts at the look it was decided at (at the last look, when open)
    p_shown: float  # running-supremum p-value of the shown side, at that look
    p_shown_not: float


@dataclass(frozen=True)
class Look:
    index: int  # 1-based
    prompts_used: int
    decisions: tuple[Decision, ...]
    stopped: tuple[str, ...] = ()  # configs no open check reads any more: generated no further (so far)

    @property
    def open(self) -> list[str]:
        return [d.name for d in self.decisions if d.state == OPEN]

    def to_dict(self) -> dict[str, object]:
        return {
            "look": self.index,
            "prompts_used": self.prompts_used,
            "shown": [d.name for d in self.decisions if d.state == SHOWN],
            "shown_not": [d.name for d in self.decisions if d.state == SHOWN_NOT],
            "open": self.open,
            "stopped": list(self.stopped),
        }


def prompts_per_config(looks: Sequence[Look]) -> dict[str, int]:
    """Config -> the prompts generated for it, for the configs whose generation stopped before the run's."""
    stops: dict[str, int] = {}
    for look in looks:
        for config in look.stopped:
            stops.setdefault(config, look.prompts_used)
    return {config: n for config, n in stops.items() if n < looks[-1].prompts_used}


def prompt_blocks(keys: Sequence[str], block_size: int, seed: int) -> list[list[str]]:
    """The prompts in a seeded random order, cut into blocks; independent of the order of ``keys``."""
    if block_size < 1:
        raise ValueError(f"a sequential block holds at least one prompt, got {block_size!r}")
    ordered = sorted(set(keys))
    order = np.random.default_rng([seed, 0x5E9]).permutation(len(ordered))
    shuffled = [ordered[i] for i in order]
    return [shuffled[i : i + block_size] for i in range(0, len(shuffled), block_size)]


def centered_scores(
    values: Mapping[str, tuple[float, float]],
    threshold: float,
    value_range: tuple[float, float] | None,
    *,
    max_denominator: float = 1.0,
    quality_clip: float | None = None,
) -> tuple[dict[str, float], float, float, int]:
    """Per-prompt scores whose mean has the sign of ``ratio - threshold``, and the range they lie in.

    ``values`` maps a prompt to ``(numerator, denominator)`` of a ratio estimator (the
    denominator is 1 for a plain mean, the instruction count for instruction accuracy).
    The score ``(numerator - threshold * denominator) / max_denominator`` has a positive
    mean exactly when the ratio of the means exceeds the threshold. ``value_range`` bounds
    ``numerator / denominator``; pass ``None`` for quality, whose per-prompt values are then
    clipped to ``threshold ± quality_clip``: the test decides on the sign of
    ``E[clip(x - threshold)]``, i.e. on which side of the threshold the Huber location
    (tuning constant ``quality_clip``) lies; it is the mean whenever the values are
    symmetric about the threshold (an A/A delta against 0, for one). Also returns how
    many were clipped.
    """
    if max_denominator <= 0:
        raise ValueError(f"max_denominator must be positive, got {max_denominator!r}")
    if value_range is None:
        if quality_clip is None or not quality_clip > 0:
            raise ValueError(f"an unbounded metric needs a positive clipping half-width, got {quality_clip!r}")
        raw = {key: num / den - threshold for key, (num, den) in values.items()}
        scores = {key: min(max(z, -quality_clip), quality_clip) for key, z in raw.items()}
        clipped = sum(abs(z) > quality_clip for z in raw.values())
        return scores, -quality_clip, quality_clip, clipped
    lo, hi = value_range
    scores = {key: (num - threshold * den) / max_denominator for key, (num, den) in values.items()}
    # num / den in [lo, hi] and 0 < den <= max_denominator put the score between these:
    return scores, min(0.0, lo - threshold), max(0.0, hi - threshold), 0


def betting_wealth(scores: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """Wealth after each score of a gambler betting that the mean is positive.

    ``scores`` has shape ``(..., n)`` (leading axes are independent streams; NaN marks a
    prompt a stream lacks, on which nothing is staked); ``low <= 0`` bounds the scores from
    below and broadcasts against the leading axes. Scores are scaled by ``-low`` so that
    they lie above -1, and the wealth is split evenly between three gamblers whose stakes,
    fractions in ``[0, BET_CAP]``, use earlier scores only: the plug-in ``m / (v + m²)``
    of the running (shrunk) mean and variance, quick on noisy streams; the online Newton
    step on the log-wealth (Cutkosky & Orabona 2018), which learns the growth-optimal
    stake of a skewed stream; and a constant ``FIXED_STAKE``, which grows from the first
    prompt when the effect is large. An average of e-processes is one. The wealth before
    any prompt is 1.
    """
    z = np.asarray(scores, dtype=np.float64)
    low = np.broadcast_to(np.asarray(low, dtype=np.float64), z.shape[:-1])
    high = np.broadcast_to(np.asarray(high, dtype=np.float64), z.shape[:-1])
    if np.any(low > 0) or np.any(high < low):
        raise ValueError("each stream needs low <= 0 and low <= high")
    # A stream that cannot go below 0 is scaled by a hundredth of its span, so its stakes stay finite.
    scale = np.maximum(-low, 0.01 * np.maximum(high - low, 1e-12))
    prior_var = ((high - low) / scale / 4.0) ** 2  # shrinks the first variance estimates towards a moderate spread
    step = 2.0 / (2.0 - math.log(3.0))
    count, total, squares = (np.zeros(z.shape[:-1]) for _ in range(3))
    newton, curvature = np.zeros(z.shape[:-1]), np.ones(z.shape[:-1])
    log_plug_in, log_newton, log_fixed = np.zeros(z.shape[:-1]), np.zeros(z.shape[:-1]), np.zeros(z.shape[:-1])
    wealth = np.ones(z.shape)
    for t in range(z.shape[-1]):
        mean = total / (count + 1.0)
        plug_in = np.clip(mean / ((prior_var + squares) / (count + 1.0) + mean**2), 0.0, BET_CAP)
        x = z[..., t] / scale
        seen = ~np.isnan(x)
        y = np.where(seen, x, 0.0)
        log_plug_in = log_plug_in + np.log1p(plug_in * y)
        log_newton = log_newton + np.log1p(newton * y)
        log_fixed = log_fixed + np.log1p(FIXED_STAKE * y)
        wealth[..., t] = (np.exp(log_plug_in) + np.exp(log_newton) + np.exp(log_fixed)) / 3.0
        gradient = -y / (1.0 + newton * y)
        curvature = curvature + gradient**2
        newton = np.clip(newton - step * gradient / curvature, 0.0, BET_CAP)
        squares = squares + np.where(seen, (y - mean) ** 2, 0.0)
        total = total + y
        count = count + seen
    return wealth


def running_p_values(wealth: np.ndarray) -> np.ndarray:
    """``1 / max_{s <= t} K_s`` along the last axis, capped at 1: valid at every t at once (Ville)."""
    return np.minimum(1.0, 1.0 / np.maximum.accumulate(np.maximum(wealth, 1.0), axis=-1))


def decide_looks(
    streams: Sequence[Stream],
    blocks: Sequence[Sequence[str]],
    alpha: float,
    *,
    min_prompts: int = 0,
    share: float = SEQUENTIAL_SHARE,
    correction: str = "holm",
) -> list[Look]:
    """The decisions after each block, until none is open or the blocks run out.

    ``alpha`` is the family's one-sided error; ``share`` of it is spent on the looks:
    *shown* by Holm over all ``streams`` (``correction="none"``: each check on its own at
    that share); *shown not* is each check's complement shown at ``FUTILITY_FACTOR * alpha``.
    A check is not decided before ``min_prompts`` of its prompts are in. Stops at the
    first look where every check is decided.

    A config that no open check reads any more (every check on it decided) is generated no
    further: the look lists it as stopped, and the checks that read it keep the values of
    that look in Holm's ranking, as they would in a run that generated nothing more of it.
    """
    if not 0.0 < alpha < 1.0 or not 0.0 < share <= 1.0:
        raise ValueError(f"need 0 < alpha < 1 and 0 < share <= 1, got alpha={alpha!r}, share={share!r}")
    decide = holm if correction == "holm" else (lambda p_values, level: p_values <= level)
    order = [key for block in blocks for key in block]
    position = {key: i for i, key in enumerate(order)}
    n = len(order)
    scores = np.full((len(streams), n), np.nan)
    for row, stream in enumerate(streams):
        for key, score in zip(stream.keys, stream.scores, strict=True):
            if key in position:
                scores[row, position[key]] = score
    lows = np.array([s.low for s in streams])
    highs = np.array([s.high for s in streams])
    signs = np.array([1.0 if s.above else -1.0 for s in streams])[:, None]
    # Shown side: bet on the direction the expression claims; shown-not side: on the other.
    sided = np.stack([signs * scores, -signs * scores])
    low = np.stack([np.where(signs[:, 0] > 0, lows, -highs), np.where(signs[:, 0] > 0, -highs, lows)])
    high = np.stack([np.where(signs[:, 0] > 0, highs, -lows), np.where(signs[:, 0] > 0, -lows, highs)])
    p = running_p_values(betting_wealth(sided, low, high)) if n else np.ones((2, len(streams), 0))
    seen = np.cumsum(~np.isnan(scores), axis=-1)
    rows = np.arange(len(streams))
    readers: dict[str, list[int]] = {}
    for row, stream in enumerate(streams):
        for config in stream.configs:
            readers.setdefault(config, []).append(row)
    stopped: list[str] = []
    frozen = np.full(len(streams), -1)  # the last prompt position of a check whose config stopped generating
    states = [OPEN] * len(streams)
    decided_at: list[int | None] = [None] * len(streams)
    looks: list[Look] = []
    end = 0
    for index, block in enumerate(blocks, start=1):
        end += len(block)
        if not block:
            continue
        at = np.where(frozen >= 0, frozen, end - 1)
        p_at, seen_at = p[:, rows, at], seen[rows, at]
        ready = seen_at >= max(min_prompts, 1)
        shown = decide(np.where(ready, p_at[0], 1.0), alpha * share)
        shown_not = ready & (p_at[1] <= alpha * FUTILITY_FACTOR)
        for row in range(len(streams)):
            if states[row] == OPEN and (shown[row] or shown_not[row]):
                states[row] = SHOWN if shown[row] else SHOWN_NOT
                decided_at[row] = index
        for config, reading in readers.items():
            if config not in stopped and all(states[row] != OPEN for row in reading):
                stopped.append(config)
                frozen[reading] = np.where(frozen[reading] >= 0, frozen[reading], end - 1)
        # A decided check keeps the look it was decided at: its prompts and e-values then.
        decisions = tuple(
            looks[-1].decisions[r]
            if decided_at[r] is not None and decided_at[r] < index
            else Decision(s.name, states[r], decided_at[r], int(seen_at[r]), float(p_at[0, r]), float(p_at[1, r]))
            for r, s in enumerate(streams)
        )
        looks.append(Look(index, end, decisions, tuple(stopped)))
        if OPEN not in states:
            break
    return looks
