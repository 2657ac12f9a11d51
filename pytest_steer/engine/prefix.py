"""The prompt prefix a batch's rows share, prefilled once.

Every templated prompt starts with the same tokens: the chat template's system prompt and the
user turn's opening (24 of the built-in prompts' mean 58 tokens with SmolLM2's template). Their
keys and values depend only on those tokens and their positions, so the engine computes them
once, in a forward of one row, and writes them into every row of the batch's KV cache before the
prefill, which then runs the columns after them only. Rows are left-padded, so a row's columns
before the prefix's end hold its padding, then as much of the prefix as fits; the forward
recomputes the rest of a shorter row's prefix, which changes nothing.

A steered row shares the prefix only as far as its steering leaves it as the unsteered model
computes it: the steering block says how far, before it is entered (``unsteered_tokens``, see
:class:`pytest_steer.steering.method.SteeredBatch`); a block that does not say shares none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pytest_steer.engine.kv_cache import CacheKind, row_cache

MIN_SHARED_TOKENS = 8  # a shorter shared prefix is not worth its own forward


@dataclass(frozen=True, eq=False)
class SharedPrefix:
    """Per layer, the keys and values of the prefix's tokens, (1, kv heads, tokens, head dim)."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[-2]


def shared_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: Sequence[int]) -> int:
    """How many of ``prefix``'s tokens every left-padded row of the batch starts with."""
    padding = (attention_mask == 0).sum(dim=1)
    length = min(len(prefix), int(attention_mask.sum(dim=1).min()))
    if length < 1:
        return 0
    columns = padding[:, None] + torch.arange(length, device=input_ids.device)
    same = (input_ids.gather(1, columns) == torch.tensor(prefix[:length], device=input_ids.device)).all(dim=0)
    return int(same.long().cumprod(dim=0).sum())


def prefill_prefix(model: Any, tokens: Sequence[int], cache_argument: str) -> SharedPrefix | None:
    """The unsteered keys and values of ``tokens`` at positions 0, 1, ...; None where the model keeps
    transformers' own cache (sliding windows and other layer kinds), which the engine does not prefill in parts."""
    cache, kind = row_cache(model, len(tokens))
    if kind is not CacheKind.PREALLOCATED:
        return None
    ids = torch.tensor([list(tokens)], device=model.device)
    model(input_ids=ids, position_ids=torch.arange(len(tokens), device=model.device)[None], use_cache=True, **{cache_argument: cache})
    return SharedPrefix(tuple((layer.keys, layer.values) for layer in cache.layers))


def fill_prefix(cache: Any, prefix: SharedPrefix, attention_mask: torch.Tensor) -> None:
    """Start each row of a fresh preallocated ``cache`` with the prefix: column ``c`` of a row with ``p`` padding
    columns holds the prefix's token ``c - p`` (zeros where it is padding)."""
    padding = (attention_mask == 0).sum(dim=1)
    source = torch.arange(prefix.length, device=padding.device)[None, :] - padding[:, None]  # (rows, prefix length)
    real = (source >= 0)[:, None, :, None]
    index = source.clamp(min=0)
    for layer, (keys, values) in zip(cache.layers, prefix.layers):
        # (kv heads, rows, prefix length, head dim) -> (rows, kv heads, prefix length, head dim)
        rows_keys, rows_values = (part[0][:, index].transpose(0, 1) * real for part in (keys, values))
        layer.start_from(rows_keys, rows_values)
