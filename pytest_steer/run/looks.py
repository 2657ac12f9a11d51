"""``--steer-sequential`` during a run: a look after each block of prompts, and where generation stops.

The plan puts every case of a block before the next block's (pytest_steer.plan.collection).
When a case of block ``b`` is about to generate, the checks are looked at after each
block before it, exactly as :func:`pytest_steer.stats.sequential.decide_sequentially`
replays them later: the same block order, the same streams, over the same prompts. Once
a look leaves no check open, the cases of every later block are skipped, never generated.

In one process every case of the earlier blocks has run by then. Under xdist each worker
looks for itself, on every worker's records: a worker writes the records of each batch
it generates to a directory the controller shares (:mod:`pytest_steer.run.shared_records`) and, before
the first case of a later block, waits until the earlier blocks' records are all there.
Every worker thus takes the same decisions as a serial run, from the same records. The
controller hands out work units in block order (``--loadscope-no-reorder``), so the
cases a worker waits for are always on workers that can reach them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_steer.plan.options import SteerSettings
from pytest_steer.stats.eprocess import decide_looks
from pytest_steer.stats.levels import CONFIDENCE, one_sided_error
from pytest_steer.stats.sequential import SequentialSettings, aggregates_over, check_streams


def sequential_settings(settings: SteerSettings, block_size: int) -> SequentialSettings:
    """The looks' settings; ``block_size``: the plan's prompts per block (``--steer-sequential-block``, or auto's)."""
    return SequentialSettings(seed=settings.seed, block_size=block_size, quality_clip=settings.sequential_quality_clip)


class LooksHalted(Exception):
    """The run stops before the records a look needs can all come (a worker crashed, the run was stopped)."""


Wanted = Callable[[str, str], bool]  # (prompt key, config) -> whether a look needs the records of those cases
Records = Callable[[Wanted], Sequence[Mapping[str, Any]]]  # every record a look needs (maybe more); may wait for them


class SequentialStop:
    """Whether a case's block is still to be generated, looking at the finished blocks as needed.

    The run stops at the first look that leaves no check open; a config stops earlier, at
    the first look that leaves no open check reading it (:func:`pytest_steer.stats.eprocess.decide_looks`).
    """

    def __init__(self, settings: SteerSettings, blocks: Sequence[Sequence[str]], block_size: int, max_instructions: int) -> None:
        self.settings = settings
        self.blocks = [list(block) for block in blocks]
        self.block_size = block_size
        self.max_instructions = max_instructions  # of every prompt in the blocks: scales instruction accuracy alike at every look
        self._block_of = {key: index for index, block in enumerate(self.blocks) for key in block}
        self.looked = 0  # blocks looked at so far
        self.stopped_after: int | None = None  # blocks generated when a look left no check open
        self.config_stopped_after: dict[str, int] = {}  # config -> blocks generated when no open check read it any more
        self.halted: str | None = None  # why no further look can be taken

    @property
    def prompts_total(self) -> int:
        return len(self._block_of)

    def skip_reason(self, key: str, config: str, records: Records) -> str | None:
        """Why the cases of prompt ``key`` under ``config`` are not generated, or None."""
        block = self._block_of.get(key)
        if block is None:
            return None
        if not self.never_generated(key, config):
            self._look_until(block, records)
        if self.halted is not None and self.stopped_after is None and self.looked < block:
            return f"not generated: the sequential looks stopped after {self.looked} blocks: {self.halted}"
        if not self.never_generated(key, config):
            return None
        if self.stopped_after is not None and block >= self.stopped_after:
            used = sum(len(b) for b in self.blocks[: self.stopped_after])
            return (
                f"decided after {used} of {self.prompts_total} prompts: look {self.stopped_after} left no gate or fail-if "
                "open (--steer-sequential)"
            )
        look = self.config_stopped_after[config]
        used = sum(len(b) for b in self.blocks[:look])
        return (
            f"decided after {used} of {self.prompts_total} prompts: look {look} left no gate or fail-if on {config} "
            "open (--steer-sequential)"
        )

    def look_through(self, records: Records) -> None:
        """Take every look the run took (the controller, after the test loop: it takes none before)."""
        self._look_until(len(self.blocks), records)

    def _look_until(self, blocks: int, records: Records) -> None:
        while self.stopped_after is None and self.halted is None and self.looked < blocks:
            try:
                found = records(self._wanted_for_look(self.looked + 1))
            except LooksHalted as exc:
                self.halted = str(exc)
                return
            self._look(found)

    def _wanted_for_look(self, blocks: int) -> Wanted:
        """The cases a look after ``blocks`` blocks reads: those of its blocks that were generated."""
        return lambda key, config: self._block_of.get(key, blocks) < blocks and not self.never_generated(key, config)

    def never_generated(self, key: str, config: str) -> bool:
        """The prompt's block comes after the look that stopped the run or the config (as far as the run has looked)."""
        block = self._block_of.get(key)
        if block is None:
            return False
        stop = min(self.stopped_after or len(self.blocks), self.config_stopped_after.get(config, len(self.blocks)))
        return block >= stop

    def _look(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.looked += 1
        looked = self.blocks[: self.looked]
        s, sequential = self.settings, sequential_settings(self.settings, self.block_size)
        aggregates = aggregates_over(records, seed=s.seed, confidence=CONFIDENCE)({key for block in looked for key in block}, {})
        streams = check_streams(s.gate, s.fail_if, aggregates, quality_clip=sequential.quality_clip, max_instructions=self.max_instructions)
        looks = decide_looks(
            streams, looked, one_sided_error(CONFIDENCE), min_prompts=s.min_prompts, share=sequential.share, correction=s.gate_correction
        )
        if not (streams and looks):
            return
        for config in looks[-1].stopped:
            self.config_stopped_after.setdefault(config, looks[-1].index)
        if not looks[-1].open:
            self.stopped_after = looks[-1].index
