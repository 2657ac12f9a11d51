"""Generation batches, planned from the case list alone, so that every xdist worker and the controller plan the same."""

from __future__ import annotations

from collections.abc import Sequence

CPU_BATCH_SIZE = 64  # benchmarks/bench_batch_size.py: 1.14x the tokens/s of 32 rows at 64 new tokens, 1.20x at 32
MAX_BATCH_SIZE = 64


def planned_batch_size(device_type: str) -> int:
    """Rows per planned batch when ``--steer-batch-size`` is auto: a CPU's size, or a GPU's upper bound."""
    return MAX_BATCH_SIZE if device_type == "cuda" else CPU_BATCH_SIZE


def batch_indices(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar prompt length (longest first), to limit padding.

    Ties keep their input order, so the plan is a pure function of the case list.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
