"""The decode loop: one prefill per distinct prompt, one row per response, rows dropped as they end.

transformers' ``generate`` prefills every row it is given and runs every row to the last
step. Here the responses of a batch that continue the same prompt (the trials of a case)
share that prompt's prefill: the prompts' KV cache is computed once, then selected into
one row per response. A row that emits an end-of-sequence token leaves the batch and the
KV cache at once, so each later step costs only the rows still running.

The KV cache is allocated once per batch, for the prompt and every new token
(:func:`row_cache`), and written in place: transformers' dynamic cache concatenates every
layer's keys and values at each step, a copy of the whole cache per step. Rows that end
are replaced by rows from the end of the batch, so only as many rows move as ended. The
decode steps receive one additive padding mask built per batch and sliced to the step's
keys, instead of a mask built by the model at each step. Models whose cache layers are not
plain full attention (sliding windows, shared or linear layers) keep transformers' own
dynamic cache and masks.

The model is driven through its documented forward (``input_ids``, ``attention_mask``,
``position_ids``, the cache, ``logits_to_keep``), the cache API (``Cache`` of
``CacheLayerMixin`` layers, ``batch_select_indices``) and the model's acceptance of a
prepared 4D mask. The cache argument is named ``cache`` from transformers 5.24 and
``past_key_values`` before; the name is read from the forward's signature.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any, Literal, overload

import torch

from pytest_steer.steering.errors import UnsupportedModelError

# (scores of the running rows, their seeds, step) -> the next token of each row
ChooseToken = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
# Called with the prompt row of every running row, before each forward whose rows changed.
RowsChanged = Callable[[torch.Tensor], None]
# Called once with the KV cache right after the prompts' prefill, one row per distinct prompt.
Prefilled = Callable[[Any], None]

CACHE_ARGUMENTS = ("cache", "past_key_values")


def forward_parameters(model: Any) -> frozenset[str]:
    """The argument names of the model's forward, as documented by its signature."""
    return _forward_parameters(type(model))


@functools.cache
def _forward_parameters(forward_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(forward_class.forward).parameters)


def cache_argument(model: Any) -> str:
    """The name under which this model's forward takes its KV cache."""
    parameters = forward_parameters(model)
    for name in CACHE_ARGUMENTS:
        if name in parameters:
            return name
    raise UnsupportedModelError(
        f"{type(model).__name__}.forward takes its KV cache under none of the names {', '.join(CACHE_ARGUMENTS)}; "
        "install a transformers release within the tested range (see the README's 'Tested versions')"
    )


def _preallocated_layer_class() -> type:
    from transformers.cache_utils import CacheLayerMixin

    class PreallocatedLayer(CacheLayerMixin):
        """One layer's keys and values in buffers sized for the whole decode, written in place.

        ``update`` returns views of the filled part, so attention reads the cache without
        copying it; the mask sizes follow the filled length, as with a dynamic cache, so a
        key's index stays its position in the sequence.
        """

        is_compileable = False
        is_sliding = False

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self.length = 0
            self.rows = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.rows = key_states.shape[0]
            self._keys = key_states.new_empty(*key_states.shape[:2], self.capacity, key_states.shape[-1])
            self._values = value_states.new_empty(*value_states.shape[:2], self.capacity, value_states.shape[-1])
            self.device = key_states.device
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"the preallocated KV cache holds {self.capacity} tokens; a forward asked for {end}")
            self._keys[: self.rows, :, self.length : end] = key_states
            self._values[: self.rows, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = self._keys[: self.rows, :, :end], self._values[: self.rows, :, :end]
            return self.keys, self.values

        def get_mask_sizes(self, query: int | torch.Tensor) -> tuple[int, int]:
            # the query's length (transformers 5.0 passes the query's cache positions instead)
            query_length = query if isinstance(query, int) else query.shape[0]
            return self.length + query_length, 0

        def get_seq_length(self) -> int:
            return self.length

        def get_max_length(self) -> int:
            return self.capacity

        get_max_cache_shape = get_max_length  # its name in transformers 5.0

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Row ``i`` becomes row ``indices[i]``: in place when the batch does not grow, copying only the rows that move."""
            if not self.is_initialized:
                return
            if len(indices) > self._keys.shape[0]:
                self._keys, self._values = self._keys[indices], self._values[indices]
            else:
                moved = (indices != torch.arange(len(indices), device=indices.device)).nonzero()[:, 0]
                if moved.numel():
                    sources = indices[moved]
                    for buffer in (self._keys, self._values):
                        buffer[moved, :, : self.length] = buffer[sources, :, : self.length]
            self.rows = len(indices)
            self.keys, self.values = self._keys[: self.rows, :, : self.length], self._values[: self.rows, :, : self.length]

    return PreallocatedLayer


@functools.cache
def _layer_class() -> type:
    return _preallocated_layer_class()


def row_cache(model: Any, capacity: int) -> tuple[Any, bool]:
    """A KV cache for one decode and whether it is preallocated (:class:`PreallocatedLayer`).

    Models whose dynamic cache is anything but plain full-attention layers keep that cache.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer

    dynamic = DynamicCache(config=model.config)
    if not dynamic.layers or any(type(layer) is not DynamicLayer for layer in dynamic.layers):
        return dynamic, False
    return Cache(layers=[_layer_class()(capacity) for _ in dynamic.layers]), True


def compaction(running: torch.Tensor) -> torch.Tensor:
    """The new order of the rows once the ``running`` (boolean) ones stay: survivors past the
    new end fill the slots of the rows that ended before it; the others keep their place."""
    kept = int(running.sum())
    order = torch.arange(kept, device=running.device)
    order[(~running[:kept]).nonzero()[:, 0]] = running[kept:].nonzero()[:, 0] + kept
    return order


def padding_bias(attention_mask: torch.Tensor, capacity: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, 1, capacity): 0 over the keys a decode step sees, the dtype's minimum over the padding."""
    bias = torch.zeros(attention_mask.shape[0], 1, 1, capacity, dtype=dtype, device=attention_mask.device)
    bias[:, 0, 0, : attention_mask.shape[1]].masked_fill_(attention_mask == 0, torch.finfo(dtype).min)
    return bias


@overload
def decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_of_row: torch.Tensor, seeds: torch.Tensor, *,
    max_new_tokens: int, eos_ids: Collection[int], choose: ChooseToken, rows_changed: RowsChanged | None = None,
    prefilled: Prefilled | None = None, logprobs: Literal[False] = False,
) -> list[list[int]]: ...  # fmt: skip


@overload
def decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_of_row: torch.Tensor, seeds: torch.Tensor, *,
    max_new_tokens: int, eos_ids: Collection[int], choose: ChooseToken, rows_changed: RowsChanged | None = None,
    prefilled: Prefilled | None = None, logprobs: Literal[True],
) -> tuple[list[list[int]], list[list[float]]]: ...  # fmt: skip


def decode(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_of_row: torch.Tensor,
    seeds: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: Collection[int],
    choose: ChooseToken,
    rows_changed: RowsChanged | None = None,
    prefilled: Prefilled | None = None,
    logprobs: bool = False,
) -> list[list[int]] | tuple[list[list[int]], list[list[float]]]:
    """New tokens of each response row, up to and including its first end-of-sequence token.

    ``input_ids``/``attention_mask`` hold the distinct prompts, left-padded;
    ``prompt_of_row[r]`` is the prompt that response row ``r`` continues and ``seeds[r]``
    its seed. ``rows_changed`` lets a steering block follow the rows (see
    ``SteeredBatch.select_rows``); ``prefilled`` sees the prompts' cache before it is
    selected into response rows. With ``logprobs``, also each chosen token's log
    probability under the model's raw (temperature 1) distribution.
    """
    notify = rows_changed or (lambda rows: None)
    device = input_ids.device
    capacity = input_ids.shape[1] + max_new_tokens
    cache, preallocated = row_cache(model, capacity)
    cache_name = cache_argument(model)
    prefill_extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}
    positions = attention_mask.long().cumsum(-1) - 1
    positions.masked_fill_(attention_mask == 0, 1)
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, **{cache_name: cache}, **prefill_extra
    )
    if prefilled is not None:
        prefilled(cache)
    prompt_of_row = prompt_of_row.to(device)
    logits = out.logits[prompt_of_row, -1]
    cache.batch_select_indices(prompt_of_row)
    notify(prompt_of_row)
    mask = attention_mask[prompt_of_row]
    if preallocated:  # one additive mask for every step; each step sees its first `keys` columns
        mask = padding_bias(mask, capacity, model.dtype)
    position = positions[prompt_of_row, -1:]
    keys = input_ids.shape[1]
    seeds = seeds.to(device)
    eos = torch.tensor(sorted(eos_ids), device=device)
    running = torch.arange(len(prompt_of_row), device=device)
    tokens: list[list[int]] = [[] for _ in range(len(prompt_of_row))]
    chosen_logprobs: list[list[float]] = [[] for _ in range(len(prompt_of_row))]
    for step in range(max_new_tokens):
        chosen = choose(logits, seeds[running], step)
        rows = running.tolist()
        for row, token in zip(rows, chosen.tolist()):
            tokens[row].append(token)
        if logprobs:
            values = logits.float().log_softmax(dim=-1).gather(-1, chosen[:, None])[:, 0]
            for row, value in zip(rows, values.tolist()):
                chosen_logprobs[row].append(value)
        if step == max_new_tokens - 1:
            break
        ended = torch.isin(chosen, eos)
        if bool(ended.any()):
            if bool(ended.all()):
                break
            keep = compaction(~ended) if preallocated else (~ended).nonzero()[:, 0]
            running, chosen, mask, position = running[keep], chosen[keep], mask[keep], position[keep]
            cache.batch_select_indices(keep)
            notify(prompt_of_row[running])
        keys += 1
        position = position + 1
        if preallocated:
            step_mask = mask[..., :keys]
        else:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            step_mask = mask
        out = model(input_ids=chosen[:, None], attention_mask=step_mask, position_ids=position, use_cache=True, **{cache_name: cache})
        logits = out.logits[:, -1]
    return (tokens, chosen_logprobs) if logprobs else tokens
