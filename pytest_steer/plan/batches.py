"""Generation streams and batches, planned from the case list alone, so that every xdist worker and the controller plan
the same."""

from __future__ import annotations

from collections.abc import Sequence

CPU_BATCH_SIZE = 64  # benchmarks/bench_batch_size.py: 1.14x the tokens/s of 32 rows at 64 new tokens, 1.20x at 32
MAX_BATCH_SIZE = 64
# A planned stream holds up to this many batches' rows. 1: a planned unit is one batch, so on a CPU no rows enter a
# running batch: on a 2-core Zen 4, float32, the demo took 137 s in streams of 3 batches against 126 s in batches (the
# longer tail of rows that entered late, and prefills of a few rows at a time, cost more than the fuller steps gained;
# docs/scaling.md). A GPU whose free memory holds fewer rows than a planned batch runs it as a stream.
STREAM_BATCHES = 1
# --steer-sequential-block auto: a block fills one batch, but holds at least this many prompts
MIN_SEQUENTIAL_BLOCK = 8


def planned_batch_size(device_type: str) -> int:
    """Rows per planned batch when ``--steer-batch-size`` is auto: a CPU's size, or a GPU's upper bound."""
    return MAX_BATCH_SIZE if device_type == "cuda" else CPU_BATCH_SIZE


def running_rows(device_type: str, batch_size: int | None) -> int:
    """Rows that decode at once: ``--steer-batch-size``, else the device's planned size (a GPU's is cut to its memory)."""
    return batch_size or planned_batch_size(device_type)


def sequential_block_size(batch_rows: int, rows_per_prompt: int) -> int:
    """Prompts per sequential block when ``--steer-sequential-block`` is auto: as many as fill one batch.

    No batch spans two blocks, and a step of few rows costs far more per row than a full one (on a 2-core CPU, the
    matmuls of a 24-row step take about two thirds of a 64-row step's time), so a block that fills a batch pays
    about what a fixed run pays per case; looking more often would not make the looks more valid (they are valid
    after every prompt), only costlier.
    """
    return max(MIN_SEQUENTIAL_BLOCK, batch_rows // max(1, rows_per_prompt))


def stream_indices(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into streams of at most ``STREAM_BATCHES`` batches' rows, longest prompts first.

    The engine keeps ``batch_size`` rows of a stream running, queued rows entering as others end
    (:mod:`pytest_steer.engine.stream`); xdist hands out whole streams.
    """
    return batch_indices(lengths, STREAM_BATCHES * batch_size)


def batch_indices(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar prompt length (longest first), to limit padding.

    Ties keep their input order, so the plan is a pure function of the case list.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
