"""``--steer-sequential`` during a run: a look after each block of prompts, and where generation stops.

The plan puts every case of a block before the next block's (pytest_steer.collection),
so when a case of block ``b`` is about to generate, every case of the blocks before it
has reported. The checks are then looked at after each of those blocks, exactly as
:func:`pytest_steer.sequential_checks.decide_sequentially` replays them later: the same
block order, the same streams, over the same prompts. Once a look leaves no check open,
the cases of every later block are skipped, never generated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_steer.options import SteerSettings
from pytest_steer.sequential import decide_looks
from pytest_steer.sequential_checks import SequentialSettings, aggregates_over, check_streams

CONFIDENCE = 0.95  # the run's two-sided level, as its aggregates use


def sequential_settings(settings: SteerSettings) -> SequentialSettings:
    return SequentialSettings(seed=settings.seed, block_size=settings.sequential_block, quality_clip=settings.sequential_quality_clip)


class SequentialStop:
    """Whether a case's block is still to be generated, looking at the finished blocks as needed."""

    def __init__(self, settings: SteerSettings, blocks: Sequence[Sequence[str]]) -> None:
        self.settings = settings
        self.blocks = [list(block) for block in blocks]
        self._block_of = {key: index for index, block in enumerate(self.blocks) for key in block}
        self.looked = 0  # blocks looked at so far
        self.stopped_after: int | None = None  # blocks generated when a look left no check open

    @property
    def prompts_total(self) -> int:
        return len(self._block_of)

    def skip_reason(self, key: str, records: Callable[[], Sequence[Mapping[str, Any]]]) -> str | None:
        """Why the cases of prompt ``key`` are not generated, or None; ``records`` gives every record so far."""
        block = self._block_of.get(key)
        if block is None:
            return None
        while self.stopped_after is None and self.looked < block:
            self._look(records())
        if not self.never_generated(key):
            return None
        used = sum(len(b) for b in self.blocks[: self.stopped_after])
        return (
            f"decided after {used} of {self.prompts_total} prompts: look {self.stopped_after} left no gate or fail-if "
            "open (--steer-sequential)"
        )

    def never_generated(self, key: str) -> bool:
        """The prompt's block comes after the look that stopped the run (as far as the run has looked)."""
        block = self._block_of.get(key)
        return block is not None and self.stopped_after is not None and block >= self.stopped_after

    def _look(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.looked += 1
        looked = self.blocks[: self.looked]
        s, sequential = self.settings, sequential_settings(self.settings)
        aggregates = aggregates_over(records, seed=s.seed, confidence=CONFIDENCE)({key for block in looked for key in block})
        streams = check_streams(s.gate, s.fail_if, aggregates, quality_clip=sequential.quality_clip)
        looks = decide_looks(
            streams, looked, (1.0 - CONFIDENCE) / 2.0, min_prompts=s.min_prompts, share=sequential.share, correction=s.gate_correction
        )
        if streams and looks and not looks[-1].open:
            self.stopped_after = looks[-1].index
