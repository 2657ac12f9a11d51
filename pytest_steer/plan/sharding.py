"""Splitting the selected prompts into shards, so that many machines run one suite together.

``--steer-shard i/n`` keeps shard ``i`` of ``n``, counted from 1 (``1/4`` .. ``4/4``, as a
CI matrix or a job array numbers its jobs). The selected prompts are sorted by key and
dealt round robin: the prompt at sorted position ``p`` goes to shard ``p mod n + 1``. Every
machine runs the same selection, so the shards are disjoint, together hold every
prompt, differ in size by at most one, and do not depend on the dataset's row order.
A prompt's configs and trials all stay in its shard, so per-prompt statistics and
paired comparisons survive merging.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

_SYNTAX = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class _Keyed:
    key: str


Row = TypeVar("Row", bound=_Keyed)


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> Shard(2, 4); raises ValueError naming the expected form."""
    match = _SYNTAX.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a shard; use i/n with 1 <= i <= n, e.g. 1/4 for the first of four shards")
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise ValueError(f"{text!r} has {count} shards; the shard count n in i/n must be at least 1")
    if not 1 <= index <= count:
        raise ValueError(f"{text!r}: shards are numbered 1 to {count}; use i/{count} with 1 <= i <= {count}")
    return Shard(index, count)


def select_shard(rows: Sequence[Row], shard: Shard) -> list[Row]:
    """The rows of ``shard``, in their input order."""
    order = sorted(range(len(rows)), key=lambda i: rows[i].key)
    kept = {i for position, i in enumerate(order) if position % shard.count == shard.index - 1}
    if not kept:
        raise ValueError(f"shard {shard} holds no prompt: the selection has {len(rows)} prompt(s); use at most {len(rows)} shard(s)")
    return [row for i, row in enumerate(rows) if i in kept]
