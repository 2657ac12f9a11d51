"""The decode loop: one prefill per distinct prompt, one row per response, rows dropped as they end.

transformers' ``generate`` prefills every row it is given and runs every row to the last
step. Here the responses of a batch that continue the same prompt (the trials of a case)
share that prompt's prefill: the prompts' KV cache is computed once, then selected into
one row per response. A row that emits an end-of-sequence token leaves the batch and the
KV cache at once, so each later step costs only the rows still running; rows that end are
replaced by rows from the end of the batch, so only as many rows move as ended. The KV
cache (:mod:`pytest_steer.engine.kv_cache`) is written in place, and the decode steps receive one
additive padding mask built per batch and sliced to the step's keys, instead of a mask
built by the model at each step.

With a ``step_forward`` (``--steer-compile``: the model's forward compiled) the steps run on
a fixed-shape cache instead: every row runs to the last step (a row that ended is fed its
end token again and its output dropped) and every step attends over the whole buffer, the
unwritten slots masked in a mask updated in place. The step's shapes and buffers never
change, so the compiled step is traced once per batch shape and replays as one graph. The
prefill stays eager. The model is still called as a module, so steering hooks run.

The model is driven through its documented forward (``input_ids``, ``attention_mask``,
``position_ids``, the cache, ``logits_to_keep``), the cache API (``Cache`` of
``CacheLayerMixin`` layers, ``batch_select_indices``) and the model's acceptance of a
prepared 4D mask. The cache argument is named ``cache`` from transformers 5.24 and
``past_key_values`` before; the name is read from the forward's signature.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any, Literal, overload

import torch

from pytest_steer.engine.kv_cache import CacheKind, advance, row_cache
from pytest_steer.steering.errors import UnsupportedModelError

# (scores of the running rows, their seeds, step) -> the next token of each row
ChooseToken = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
# Called with the prompt row of every running row, before each forward whose rows changed.
RowsChanged = Callable[[torch.Tensor], None]
# Called once with the KV cache right after the prompts' prefill, one row per distinct prompt.
Prefilled = Callable[[Any], None]

CACHE_ARGUMENTS = ("cache", "past_key_values")
FIXED_CAPACITY_STEP = 64  # a fixed-shape cache holds a multiple of this many positions


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


def prefill_mask(attention_mask: torch.Tensor, capacity: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, prompt length, capacity): 0 where a prompt token sees a key (itself and the real tokens before it),
    the dtype's minimum elsewhere."""
    length = attention_mask.shape[1]
    slots = torch.arange(capacity, device=attention_mask.device)
    causal = slots[None, :] <= torch.arange(length, device=attention_mask.device)[:, None]
    real = torch.zeros(attention_mask.shape[0], capacity, dtype=torch.bool, device=attention_mask.device)
    real[:, :length] = attention_mask.bool()
    visible = causal[None] & real[:, None, :]
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, torch.finfo(dtype).min)[:, None]


@contextlib.contextmanager
def forward_replaced(model: Any, forward: Callable[..., Any] | None) -> Any:
    """Calls of ``model(...)`` run ``forward`` while inside (its hooks still run around it)."""
    if forward is None:
        yield
        return
    own = model.__dict__.get("forward")  # a forward already set on the instance (accelerate's device hooks) comes back after
    model.forward = forward
    try:
        yield
    finally:
        if own is None:
            del model.forward
        else:
            model.forward = own


@overload
def decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_of_row: torch.Tensor, seeds: torch.Tensor, *,
    max_new_tokens: int, eos_ids: Collection[int], choose: ChooseToken, rows_changed: RowsChanged | None = None,
    prefilled: Prefilled | None = None, logprobs: Literal[False] = False, step_forward: Callable[..., Any] | None = None,
    fixed_shape: bool = False,
) -> list[list[int]]: ...  # fmt: skip


@overload
def decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_of_row: torch.Tensor, seeds: torch.Tensor, *,
    max_new_tokens: int, eos_ids: Collection[int], choose: ChooseToken, rows_changed: RowsChanged | None = None,
    prefilled: Prefilled | None = None, logprobs: Literal[True], step_forward: Callable[..., Any] | None = None,
    fixed_shape: bool = False,
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
    step_forward: Callable[..., Any] | None = None,
    fixed_shape: bool = False,
) -> list[list[int]] | tuple[list[list[int]], list[list[float]]]:
    """New tokens of each response row, up to and including its first end-of-sequence token.

    ``input_ids``/``attention_mask`` hold the distinct prompts, left-padded;
    ``prompt_of_row[r]`` is the prompt that response row ``r`` continues and ``seeds[r]``
    its seed. ``rows_changed`` lets a steering block follow the rows (see
    ``SteeredBatch.select_rows``); ``prefilled`` sees the prompts' cache before it is
    selected into response rows. With ``logprobs``, also each chosen token's log
    probability under the model's raw (temperature 1) distribution. ``step_forward``
    (the model's forward, compiled) runs the decode steps on a fixed-shape cache;
    ``fixed_shape`` runs them so without one. The tokens are the same either way.
    """
    notify = rows_changed or (lambda rows: None)
    device = input_ids.device
    fixed_shape = fixed_shape or step_forward is not None
    capacity = input_ids.shape[1] + max_new_tokens
    if fixed_shape:  # batches of nearby prompt lengths share one step shape, so one compiled step
        capacity = -(-capacity // FIXED_CAPACITY_STEP) * FIXED_CAPACITY_STEP
    cache, kind = row_cache(model, capacity, fixed_shape=fixed_shape)
    fixed = kind is CacheKind.FIXED_SHAPE
    if not fixed:  # transformers' own cache (sliding windows...) changes shape every step: a compiled step would retrace each time
        step_forward = None
    cache_name = cache_argument(model)
    parameters = forward_parameters(model)
    prefill_extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    # transformers 5.0 reads a forward's slots from cache_position, else from the cache's length (a number a graph would bake in)
    slot_argument = fixed and "cache_position" in parameters
    positions = attention_mask.long().cumsum(-1) - 1
    positions.masked_fill_(attention_mask == 0, 1)
    prompt_mask = prefill_mask(attention_mask, capacity, model.dtype) if fixed else attention_mask
    if slot_argument:
        prefill_extra["cache_position"] = torch.arange(input_ids.shape[1], device=device)
    out = model(
        input_ids=input_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True, **{cache_name: cache}, **prefill_extra
    )
    if fixed:
        advance(cache, input_ids.shape[1])
    prompt_of_row = prompt_of_row.to(device)
    if prefilled is not None:
        if fixed:
            for layer in cache.layers:
                layer.filled()
        prefilled(cache)
    logits = out.logits[prompt_of_row, -1]
    cache.batch_select_indices(prompt_of_row)
    notify(prompt_of_row)
    mask = attention_mask[prompt_of_row]
    if kind is not CacheKind.DYNAMIC:  # one additive mask for every step; each step sees its first `keys` columns
        mask = padding_bias(mask, capacity, model.dtype)
    if fixed:  # the slots not written yet stay masked until their step
        mask[..., input_ids.shape[1] :] = torch.finfo(model.dtype).min
    position = positions[prompt_of_row, -1:]
    keys = input_ids.shape[1]
    seeds = seeds.to(device)
    eos = torch.tensor(sorted(eos_ids), device=device)
    rows = len(prompt_of_row)
    running = torch.arange(rows, device=device)  # the rows still generating, by their index in `tokens`
    tokens: list[list[int]] = [[] for _ in range(rows)]
    chosen_logprobs: list[list[float]] = [[] for _ in range(rows)]
    fed = torch.empty(rows, dtype=torch.int64, device=device)  # fixed shape: the token each row is fed
    with forward_replaced(model, step_forward):
        for step in range(max_new_tokens):
            scores = logits[running] if fixed else logits
            chosen = choose(scores, seeds[running], step)
            running_rows = running.tolist()
            for row, token in zip(running_rows, chosen.tolist()):
                tokens[row].append(token)
            if logprobs:
                values = scores.float().log_softmax(dim=-1).gather(-1, chosen[:, None])[:, 0]
                for row, value in zip(running_rows, values.tolist()):
                    chosen_logprobs[row].append(value)
            if step == max_new_tokens - 1:
                break
            ended = torch.isin(chosen, eos)
            if fixed:
                fed[running] = chosen
            if bool(ended.any()):
                if bool(ended.all()):
                    break
                if fixed:
                    running = running[~ended]
                else:
                    keep = compaction(~ended) if kind is CacheKind.PREALLOCATED else (~ended).nonzero()[:, 0]
                    running, chosen, mask, position = running[keep], chosen[keep], mask[keep], position[keep]
                    cache.batch_select_indices(keep)
                    notify(prompt_of_row[running])
            keys += 1
            position = position + 1
            extra = {}
            if fixed:
                mask[..., keys - 1] = 0
                step_mask, step_tokens = mask, fed
                if slot_argument:
                    extra["cache_position"] = cache.layers[0].write_at.clone()
            elif kind is CacheKind.PREALLOCATED:
                step_mask, step_tokens = mask[..., :keys], chosen
            else:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                step_mask, step_tokens = mask, chosen
            inputs = {"input_ids": step_tokens[:, None], "attention_mask": step_mask, "position_ids": position, cache_name: cache}
            out = model(**inputs, use_cache=True, **extra)
            if fixed:
                advance(cache, 1)
            logits = out.logits[:, -1]
    return (tokens, chosen_logprobs) if logprobs else tokens
