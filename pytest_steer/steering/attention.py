"""Folding a per-head bias over the prompt's keys into the attention mask of chosen layers.

Mechanism: a forward pre-hook on each steered attention module swaps the ``attention_mask``
keyword for an additive float mask of shape (batch, heads, queries, keys) that carries the
model's own masking (causal, padding) plus the bias on the selected heads. Both eager and
SDPA attention add a float mask to the scaled logits before the softmax, so one mask serves
both, and no transformers function or config is replaced. The incoming mask can be:

- a float mask (eager): the bias is added to it;
- a boolean mask (SDPA): masked positions become the dtype's minimum, never 0/1 floats, so
  padding stays masked;
- None (SDPA without padding, where attention relies on ``is_causal``): the causal pattern is
  rebuilt from the cache's query and key offsets.

Keys are addressed by absolute position (cache offset + index), so the prompt's positions
0..P-1 keep their bias in the prefill and in every KV-cache decode step, and keys past the
prompt get none. A mask is built once per forward and head set, and reused by every layer
with that head set (all layers share the mask object transformers built for the forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pytest_steer.steering.errors import SteeringError, UnsupportedModelError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
STEERABLE_ATTENTION = ("eager", "sdpa")

HeadSet = tuple[int, ...]


def steerable_attention(model: nn.Module) -> tuple[list[nn.Module], int]:
    """The attention module of every decoder layer and the number of query heads.

    Raises UnsupportedModelError when the architecture or attention implementation cannot
    carry a per-head additive mask.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"PASTA steering supports the Llama-family decoders {', '.join(SUPPORTED_MODEL_TYPES)}; "
            f"this model is {model_type or type(model).__name__!r}. Use a model of one of those families"
        )
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in STEERABLE_ATTENTION:
        raise UnsupportedModelError(
            f"attention implementation {implementation!r} cannot be steered: PASTA adds a per-head bias through the "
            "attention mask, which only eager and sdpa attention apply as given; load the model with "
            "attn_implementation='eager' or 'sdpa' (or call model.set_attn_implementation('sdpa'))"
        )
    layers = getattr(getattr(model, "base_model", None), "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
        raise UnsupportedModelError(
            f"{type(model).__name__} has no decoder layers with a self_attn module; pass the causal LM itself "
            "(e.g. LlamaForCausalLM), not a wrapper around it"
        )
    return [layer.self_attn for layer in layers], int(config.num_attention_heads)


class PromptKeyBias:
    """Installs and serves the steered masks for one batch of prompts.

    ``key_bias`` (batch, prompt_length) is the value added to the attention logits of each
    prompt key; ``layer_heads`` says which query heads of which layers receive it.
    """

    def __init__(
        self,
        key_bias: torch.Tensor,
        prompt_ids: torch.Tensor,
        layer_heads: dict[int, HeadSet],
        num_heads: int,
    ) -> None:
        self.prompt_ids = prompt_ids
        self.layer_heads = layer_heads
        self._head_bias: dict[HeadSet, torch.Tensor] = {}
        for heads in set(layer_heads.values()):
            selected = torch.zeros(num_heads, dtype=key_bias.dtype, device=key_bias.device)
            selected[list(heads)] = 1.0
            self._head_bias[heads] = key_bias[:, None, None, :] * selected[None, :, None, None]
        # Per head set: (mask received, its signature, steered mask) of the latest forward.
        self._latest: dict[HeadSet, tuple[torch.Tensor | None, tuple[Any, ...], torch.Tensor]] = {}

    def install(self, model: nn.Module, attention: Sequence[nn.Module]) -> list[RemovableHandle]:
        handles = [model.register_forward_pre_hook(self._check_prompt, with_kwargs=True)]
        for layer, heads in self.layer_heads.items():
            handles.append(attention[layer].register_forward_pre_hook(partial(self._steer, heads), with_kwargs=True))
        return handles

    def release(self) -> None:
        """Drop the masks kept from the latest forward."""
        self._latest.clear()

    def _check_prompt(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A forward that starts a sequence must start with the steered prompt, or the bias lands elsewhere."""
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("past_key_values")
        if input_ids is None or (cache is not None and cache.get_seq_length() > 0):
            return
        rows, prompt_rows = input_ids.shape[0], self.prompt_ids.shape[0]
        prompt_length = self.prompt_ids.shape[1]
        if rows % prompt_rows == 0 and input_ids.shape[1] >= prompt_length:
            expected = self.prompt_ids.repeat_interleave(rows // prompt_rows, dim=0).to(input_ids.device)
            if torch.equal(input_ids[:, :prompt_length], expected):
                return
        raise SteeringError(
            f"a forward inside the steering block starts with input_ids of shape {tuple(input_ids.shape)} that are not "
            f"the steered prompt batch {tuple(self.prompt_ids.shape)}; run the model (or generate) on the input_ids "
            "given to PASTA.apply(), or open a new apply() block for other prompts"
        )

    def _steer(self, heads: HeadSet, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if "attention_mask" not in kwargs:
            raise UnsupportedModelError(
                f"{type(module).__name__} did not receive attention_mask as a keyword, so the steering bias cannot be "
                "applied; use a supported Llama-family model"
            )
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        mask = kwargs["attention_mask"]
        batch, queries = hidden.shape[0], hidden.shape[1]
        cache = kwargs.get("past_key_values")
        if cache is not None:
            query_offset = int(cache.get_query_offset(module.layer_idx))
            keys, key_offset = cache.get_mask_sizes(queries, module.layer_idx)
        else:
            query_offset, keys, key_offset = 0, queries, 0
        if mask is not None:
            keys = mask.shape[-1]
        signature = (batch, queries, keys, key_offset, query_offset, hidden.dtype, hidden.device)
        latest = self._latest.get(heads)
        if latest is not None and latest[0] is mask and latest[1] == signature:
            steered = latest[2]
        else:
            steered = self._steered_mask(heads, mask, signature)
            self._latest[heads] = (mask, signature, steered)
        kwargs["attention_mask"] = steered
        return args, kwargs

    def _steered_mask(self, heads: HeadSet, mask: torch.Tensor | None, signature: tuple[Any, ...]) -> torch.Tensor:
        batch, queries, keys, key_offset, query_offset, dtype, device = signature
        bias = self._bias_over_keys(heads, batch, keys, key_offset, dtype, device)
        masked = torch.finfo(dtype).min
        if mask is None:
            query_positions = torch.arange(queries, device=device) + query_offset
            key_positions = torch.arange(keys, device=device) + key_offset
            visible = key_positions[None, :] <= query_positions[:, None]
            return torch.where(visible, bias, masked)
        if mask.dtype == torch.bool:
            return torch.where(mask, bias, masked)
        return mask + bias.to(mask.dtype)

    def _bias_over_keys(
        self, heads: HeadSet, batch: int, keys: int, key_offset: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """(batch, heads, 1, keys): the prompt bias at absolute key positions, zero past the prompt."""
        prompt_bias = self._head_bias[heads]
        prompt_rows, prompt_length = prompt_bias.shape[0], prompt_bias.shape[-1]
        if batch != prompt_rows:
            if batch % prompt_rows:
                raise SteeringError(
                    f"a forward of {batch} rows cannot be matched to the {prompt_rows} steered prompts; "
                    "run the batch given to PASTA.apply() (generate may repeat each row, e.g. num_return_sequences)"
                )
            prompt_bias = prompt_bias.repeat_interleave(batch // prompt_rows, dim=0)
        if key_offset == 0 and keys <= prompt_length:
            bias = prompt_bias[..., :keys]
        else:
            bias = prompt_bias.new_zeros(*prompt_bias.shape[:3], keys)
            overlap = min(prompt_length, key_offset + keys) - key_offset
            if overlap > 0:
                bias[..., :overlap] = prompt_bias[..., key_offset : key_offset + overlap]
        return bias.to(device=device, dtype=dtype)
