"""Planned batch sizes that do not need a model: the sequential block that fills one batch."""

from __future__ import annotations

import pytest

from pytest_steer.plan.batches import MIN_SEQUENTIAL_BLOCK, sequential_block_size


@pytest.mark.parametrize(
    ("batch_rows", "rows_per_prompt", "block"),
    [
        (64, 3, 21),  # the demo: baseline, PASTA and emphasis x 1 trial fill 63 of 64 rows
        (64, 2, 32),
        (64, 1, 64),
        (64, 15, MIN_SEQUENTIAL_BLOCK),  # 5 configs x 3 trials: a block of the minimum spans two batches
        (20, 2, 10),
    ],
)
def test_an_auto_block_fills_one_batch(batch_rows: int, rows_per_prompt: int, block: int) -> None:
    assert sequential_block_size(batch_rows, rows_per_prompt) == block
