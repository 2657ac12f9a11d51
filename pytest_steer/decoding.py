"""The decode loop: one prefill per distinct prompt, one row per response, rows dropped as they end.

transformers' ``generate`` prefills every row it is given and runs every row to the last
step. Here the responses of a batch that continue the same prompt (the trials of a case)
share that prompt's prefill: the prompts' KV cache is computed once, then selected into
one row per response. A row that emits an end-of-sequence token leaves the batch and the
KV cache at once, so each later step costs only the rows still running.

The model is driven through its documented forward (``input_ids``, ``attention_mask``,
``position_ids``, the cache, ``logits_to_keep``) and the cache's ``batch_select_indices``.
The cache argument is named ``cache`` from transformers 5.24 and ``past_key_values`` before;
the name is read from the forward's signature.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any

import torch

from pytest_steer.steering.errors import UnsupportedModelError

# (scores of the running rows, their seeds, step) -> the next token of each row
ChooseToken = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
# Called with the prompt row of every running row, before each forward whose rows changed.
RowsChanged = Callable[[torch.Tensor], None]

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
    logprobs: bool = False,
) -> list[list[int]] | tuple[list[list[int]], list[list[float]]]:
    """New tokens of each response row, up to and including its first end-of-sequence token.

    ``input_ids``/``attention_mask`` hold the distinct prompts, left-padded;
    ``prompt_of_row[r]`` is the prompt that response row ``r`` continues and ``seeds[r]``
    its seed. ``rows_changed`` lets a steering block follow the rows (see
    ``SteeredBatch.select_rows``). With ``logprobs``, each token also comes with its
    log-probability under the forward's raw logits (temperature 1, no filtering), in a
    second list of the same shape.
    """
    from transformers import DynamicCache

    notify = rows_changed or (lambda rows: None)
    cache = DynamicCache(config=model.config)
    cache_name = cache_argument(model)
    prefill_extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}
    positions = attention_mask.long().cumsum(-1) - 1
    positions.masked_fill_(attention_mask == 0, 1)
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, **{cache_name: cache}, **prefill_extra
    )
    prompt_of_row = prompt_of_row.to(input_ids.device)
    logits = out.logits[prompt_of_row, -1]
    cache.batch_select_indices(prompt_of_row)
    notify(prompt_of_row)
    mask, position = attention_mask[prompt_of_row], positions[prompt_of_row, -1:]
    seeds = seeds.to(input_ids.device)
    eos = torch.tensor(sorted(eos_ids), device=input_ids.device)
    running = torch.arange(len(prompt_of_row), device=input_ids.device)
    tokens: list[list[int]] = [[] for _ in range(len(prompt_of_row))]
    log_probs: list[list[float]] = [[] for _ in range(len(prompt_of_row))]
    for step in range(max_new_tokens):
        chosen = choose(logits, seeds[running], step)
        for row, token in zip(running.tolist(), chosen.tolist()):
            tokens[row].append(token)
        if logprobs:
            chosen_log_probs = logits.float().log_softmax(-1).gather(-1, chosen[:, None])[:, 0]
            for row, value in zip(running.tolist(), chosen_log_probs.tolist()):
                log_probs[row].append(value)
        if step == max_new_tokens - 1:
            break
        ended = torch.isin(chosen, eos)
        if bool(ended.any()):
            keep = (~ended).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            running, chosen, mask, position = running[keep], chosen[keep], mask[keep], position[keep]
            cache.batch_select_indices(keep)
            notify(prompt_of_row[running])
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        position = position + 1
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=position, use_cache=True, **{cache_name: cache})
        logits = out.logits[:, -1]
    return (tokens, log_probs) if logprobs else tokens
