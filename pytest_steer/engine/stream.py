"""A running batch that stays full: the rows of a stream enter as others end (continuous batching).

A decode step costs far less per row at 64 rows than at 20, and a batch whose responses end
one by one runs its tail at the small end. Here up to ``slots`` rows decode together, and
when rows end, queued rows take their places after a prefill of their prompts, in the
stream's order, so the batch stays full until the queue is empty.

Every prompt of the stream is tokenized into one left-padded batch of width P, which the
steering methods see once, whole (their ``select_rows`` follows the rows, as in a batch).
Each running row holds, in a cache of ``slots`` rows (:class:`StreamLayer` of
:mod:`pytest_steer.engine.kv_cache`), its prompt's P columns and then its own new tokens, the
t-th at column P + t: rows at different steps share a forward, each attending over its own
columns (one additive mask per row), and a steering method reads key j as position j, the
prompt's j-th column, whatever the row's step. A row's prefill cuts the left padding its
group of entering rows shares and starts at that column. A row that ends leaves at once,
replaced by a row from the end of the batch (only the rows that move are copied).

A response depends on its prompt, seed, config and the model, and on the other rows only
through float rounding; which rows share a step depends on the stream alone (its order and
its rows' ends), so a rerun and every xdist worker decode alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from typing import Any

import torch

from pytest_steer.engine.decoding import ChooseToken, RowsChanged, cache_argument, compaction, contiguous_head_input, forward_parameters
from pytest_steer.engine.kv_cache import prefill_cache, stream_cache

# Called after each prefill of entering rows: the prefill's cache and the prompt row of each of its rows.
StreamPrefilled = Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor], None]
ENTER_AT_ONCE = 8  # free slots that let queued rows in (fewer while the queue lasts: a prefill of one row is slow per row)


def supports_streams(model: Any) -> bool:
    """Whether the model's cache layers are all plain full attention (sliding windows keep transformers' cache)."""
    return stream_cache(model, 1, 1) is not None


class Stream:
    """The running batch: its cache, masks, positions and rows, between steps."""

    def __init__(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, slots: int, max_new_tokens: int) -> None:
        self.model = model
        self.input_ids, self.attention_mask = input_ids, attention_mask
        self.width = input_ids.shape[1]
        self.slots = slots
        self.capacity = self.width + max_new_tokens
        self.cache = stream_cache(model, slots, self.capacity)
        self.cache_name = cache_argument(model)
        self.logits_to_keep = "logits_to_keep" in forward_parameters(model)
        self.minimum = torch.finfo(model.dtype).min
        device = input_ids.device
        self.mask = torch.full((slots, 1, 1, self.capacity), self.minimum, dtype=model.dtype, device=device)
        self.last_position = (attention_mask.long().sum(-1) - 1).clamp(min=0)  # per prompt row
        self.rows = torch.empty(0, dtype=torch.int64, device=device)  # the running rows, by index in the stream
        self.prompt_of_slot = torch.empty(0, dtype=torch.int64, device=device)
        self.fed = torch.empty(0, dtype=torch.int64, device=device)  # new tokens each running row has been fed
        self.allocated = False

    def enter(self, rows: torch.Tensor, prompt_of_row: torch.Tensor, rows_changed: RowsChanged, prefilled: Any) -> torch.Tensor:
        """Prefill the prompts of ``rows`` (each distinct prompt once) into the free slots; their first scores."""
        prompts, inverse = torch.unique(prompt_of_row[rows], sorted=True, return_inverse=True)
        mask = self.attention_mask[prompts]
        start = int((mask == 0).long().cumprod(-1).sum(-1).min())  # the left padding every entering prompt shares
        cache = prefill_cache(self.model, self.width, start)
        rows_changed(prompts)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self.logits_to_keep else {}
        with contiguous_head_input(self.model):
            out = self.model(
                input_ids=self.input_ids[prompts, start:],
                attention_mask=mask,
                position_ids=positions[:, start:],
                use_cache=True,
                **{self.cache_name: cache},
                **extra,
            )
        if prefilled is not None:
            prefilled(cache, prompts, self.input_ids[prompts], mask)
        slots = torch.arange(len(self.rows), len(self.rows) + len(rows), device=rows.device)
        for layer, source in zip(self.cache.layers, cache.layers):
            if not self.allocated:
                layer.allocate(source._keys)
            layer.place(slots, source, inverse)
        self.allocated = True
        self.mask[slots] = self.minimum
        self.mask[slots, 0, 0, : self.width] = torch.where(mask[inverse].bool(), 0.0, self.minimum).to(self.mask.dtype)
        self.rows = torch.cat([self.rows, rows])
        self.prompt_of_slot = torch.cat([self.prompt_of_slot, prompt_of_row[rows]])
        self.fed = torch.cat([self.fed, torch.zeros(len(rows), dtype=torch.int64, device=rows.device)])
        return out.logits[:, -1][inverse]

    def drop(self, ended: torch.Tensor) -> torch.Tensor:
        """Let the ended rows go; the indices of the rows that go on, in their new order."""
        keep = compaction(~ended)
        moved = (keep != torch.arange(len(keep), device=keep.device)).nonzero()[:, 0]
        if moved.numel():
            columns = self.width + int(self.fed.max()) + 1
            for layer in self.cache.layers:
                layer.move(moved, keep[moved], columns)
            self.mask[moved] = self.mask[keep[moved]]
        self.rows, self.prompt_of_slot, self.fed = self.rows[keep], self.prompt_of_slot[keep], self.fed[keep]
        return keep

    def step(self, chosen: torch.Tensor) -> torch.Tensor:
        """Feed each running row its chosen token at its own column; the scores of each one's next token."""
        running = len(self.rows)
        columns = self.width + self.fed
        self.mask[torch.arange(running, device=columns.device), 0, 0, columns] = 0
        length = self.width + int(self.fed.max()) + 1
        for layer in self.cache.layers:
            layer.columns, layer.length = columns, length
        out = self.model(
            input_ids=chosen[:, None],
            attention_mask=self.mask[:running, ..., :length],
            position_ids=(self.last_position[self.prompt_of_slot] + 1 + self.fed)[:, None],
            use_cache=True,
            **{self.cache_name: self.cache},
        )
        self.fed = self.fed + 1
        return out.logits[:, -1]


def decode_stream(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_of_row: torch.Tensor,
    seeds: torch.Tensor,
    *,
    slots: int,
    max_new_tokens: int,
    eos_ids: Collection[int],
    choose: ChooseToken,
    rows_changed: RowsChanged | None = None,
    prefilled: StreamPrefilled | None = None,
    logprobs: bool = False,
) -> tuple[list[list[int]], list[list[float]] | None]:
    """New tokens of each row of a stream (up to and including its first end-of-sequence token), ``slots`` at a time.

    As :func:`pytest_steer.engine.decoding.decode`, but rows enter in their order as others end; ``prefilled`` sees
    each prefill's cache with the prompt rows it holds, their tokens and padding mask.
    """
    device = input_ids.device
    changed = rows_changed or (lambda rows: None)
    stream = Stream(model, input_ids, attention_mask, slots, max_new_tokens)
    prompt_of_row, seeds = prompt_of_row.to(device), seeds.to(device)
    eos = torch.tensor(sorted(eos_ids), device=device)
    queue = deque(range(len(prompt_of_row)))
    tokens: list[list[int]] = [[] for _ in queue]
    chosen_logprobs: list[list[float]] = [[] for _ in queue]
    scores: torch.Tensor | None = None  # the next-token scores of the running rows
    while queue or len(stream.rows):
        free = slots - len(stream.rows)
        if queue and (free >= min(ENTER_AT_ONCE, len(queue)) or not len(stream.rows)):
            entering = torch.tensor([queue.popleft() for _ in range(min(free, len(queue)))], device=device)
            first = stream.enter(entering, prompt_of_row, changed, prefilled)
            scores = first if scores is None else torch.cat([scores, first])
            changed(stream.prompt_of_slot)
        assert scores is not None
        chosen = choose(scores, seeds[stream.rows], stream.fed)
        rows = stream.rows.tolist()
        for row, token in zip(rows, chosen.tolist()):
            tokens[row].append(token)
        if logprobs:
            values = scores.float().log_softmax(dim=-1).gather(-1, chosen[:, None])[:, 0]
            for row, value in zip(rows, values.tolist()):
                chosen_logprobs[row].append(value)
        ended = torch.isin(chosen, eos) | (stream.fed + 1 >= max_new_tokens)
        if bool(ended.any()):
            keep = stream.drop(ended)
            chosen = chosen[keep]
            changed(stream.prompt_of_slot)
        scores = stream.step(chosen) if len(stream.rows) else None
    return tokens, (chosen_logprobs if logprobs else None)
