"""Adding a per-head bias over the prompt's keys inside attention, through transformers' attention interface.

Every supported decoder runs its attention core through
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager)``, with the
documented signature ``(module, query, key, value, attention_mask, **kwargs)``. This module
registers two functions on that interface (``AttentionInterface.register``), ``steer_eager``
and ``steer_sdpa``, with the matching mask builders (``AttentionMaskInterface.register``).
Each one adds the bias of the module's steered heads to the mask it receives, then runs the
plain computation of its base (eager here, SDPA from transformers' registry).

While a batch is steered (``PromptKeyBias.install``) the model's implementation is switched
to the steered twin of its own (``set_attn_implementation``) and the steered modules are
registered here; ``uninstall`` restores both. The engine runs unsteered batches on the
twins too (``shared_kernels``), so configs differ only by the bias. Nothing depends on the keyword names a model
passes between its layers (the KV cache's keyword changed in transformers 5.24): the bias is
placed by key index, which is the key's absolute position for dynamic and static caches, so
the prompt's keys 0..P-1 keep their bias in the prefill and in every decode step, and keys
past the prompt get none.

The mask received can be a float mask (eager: added to), a boolean mask (SDPA: masked
positions become the dtype's minimum, never 0/1 floats, so padding stays masked) or None
(SDPA without padding: the causal pattern SDPA would apply is rebuilt). One steered mask is
built per forward and head set and shared by every layer with that head set.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pytest_steer.steering.errors import SteeringError, UnsupportedModelError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
STEERED_IMPLEMENTATIONS = {"eager": "steer_eager", "sdpa": "steer_sdpa"}

HeadSet = tuple[int, ...]

# Attention modules being steered now -> the bias they add. Weak, so a dropped model is never kept alive.
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, _LayerSteering] = weakref.WeakKeyDictionary()


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Llama-family eager attention, with each key/value head serving its query group in place.

    transformers' eager function copies every key and value head once per query head of
    its group (``repeat_kv``), a copy of the whole KV cache per layer and step; here the
    queries of a group are stacked against their shared head instead. Query head ``h``
    uses key/value head ``h // groups``, as with transformers' ``repeat_kv``.
    """
    batch, heads, queries, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    if scaling is None:
        scaling = dim**-0.5
    grouped = query.reshape(batch, kv_heads, groups * queries, dim)
    weights = torch.matmul(grouped, key.transpose(2, 3)).view(batch, heads, queries, -1) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights.reshape(batch, kv_heads, groups * queries, -1), value)
    return output.view(batch, heads, queries, dim).transpose(1, 2).contiguous(), weights


def _steered(base: str) -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    compute = eager_attention if base == "eager" else sdpa_attention_forward

    def steered_attention(
        module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any
    ) -> tuple[torch.Tensor, Any]:
        steering = _ACTIVE.get(module)
        if steering is not None:
            attention_mask = steering.mask(query, key, attention_mask, kwargs.get("sliding_window"))
        return compute(module, query, key, value, attention_mask, **kwargs)

    steered_attention.__name__ = f"steer_{base}_attention"
    return steered_attention


_registered = False


def register_steered_attention() -> None:
    """Register ``steer_eager`` and ``steer_sdpa`` with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask, sdpa_mask

    masks = {"eager": eager_mask, "sdpa": sdpa_mask}
    for base, name in STEERED_IMPLEMENTATIONS.items():
        AttentionInterface.register(name, _steered(base))
        AttentionMaskInterface.register(name, masks[base])
    _registered = True


@contextlib.contextmanager
def steerable_kernels(model: nn.Module) -> Iterator[None]:
    """Run the model's attention through the steered twin of its implementation while inside.

    A module not registered for steering computes plain attention there, so the engine runs
    every batch, steered or not, on the same kernels (the twin of eager is also the faster
    one, see ``eager_attention``). Re-entrant: inside, it changes nothing.
    """
    current = model.config._attn_implementation
    if current in STEERED_IMPLEMENTATIONS.values():
        yield
        return
    register_steered_attention()
    target = STEERED_IMPLEMENTATIONS[current]
    model.set_attn_implementation(target)
    if model.config._attn_implementation != target:
        model.set_attn_implementation(current)
        raise UnsupportedModelError(
            f"{type(model).__name__} did not switch to the attention function {target!r} (transformers refuses to change "
            "its attention implementation), so the steering bias cannot be applied; use a supported Llama-family model"
        )
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def shared_kernels(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """``steerable_kernels`` for the models PASTA can steer; others run as loaded."""
    config = getattr(model, "config", None)
    steerable = getattr(config, "model_type", None) in SUPPORTED_MODEL_TYPES
    if steerable and getattr(config, "_attn_implementation", None) in STEERED_IMPLEMENTATIONS:
        return steerable_kernels(model)
    return contextlib.nullcontext()


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
    if implementation not in STEERED_IMPLEMENTATIONS and implementation not in STEERED_IMPLEMENTATIONS.values():
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


class _LayerSteering:
    """What one attention module adds: its head set's share of the batch's prompt bias."""

    def __init__(self, batch: PromptKeyBias, heads: HeadSet) -> None:
        self.batch = batch
        self.heads = heads

    def mask(self, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, sliding_window: int | None) -> torch.Tensor:
        return self.batch.steered_mask(self.heads, query, key, mask, sliding_window)


class PromptKeyBias:
    """Installs and serves the steered masks for one batch of prompts.

    ``key_bias`` (batch, prompt_length) is the value added to the attention logits of each
    prompt key; ``layer_heads`` says which query heads of which layers receive it.
    """

    def __init__(self, key_bias: torch.Tensor, prompt_ids: torch.Tensor, layer_heads: dict[int, HeadSet], num_heads: int) -> None:
        self.prompt_ids = prompt_ids
        self.layer_heads = layer_heads
        self._head_bias: dict[HeadSet, torch.Tensor] = {}
        for heads in set(layer_heads.values()):
            selected = torch.zeros(num_heads, dtype=key_bias.dtype, device=key_bias.device)
            selected[list(heads)] = 1.0
            self._head_bias[heads] = key_bias[:, None, None, :] * selected[None, :, None, None]
        # Per head set: (mask received, its signature, steered mask) of the latest forward.
        self._latest: dict[HeadSet, tuple[torch.Tensor | None, tuple[Any, ...], torch.Tensor]] = {}
        self._model: nn.Module | None = None
        self._kernels = contextlib.ExitStack()
        self._handles: list[RemovableHandle] = []
        self._modules: list[nn.Module] = []
        self._rows: torch.Tensor | None = None  # prompt row of each forward row; None: the batch as given

    def select_rows(self, prompt_rows: torch.Tensor) -> None:
        """Forwards from now on run one row per entry: that prompt row's bias (repeats allowed)."""
        self._rows = prompt_rows.to(self.prompt_ids.device)
        self._latest.clear()

    def install(self, model: nn.Module, attention: Sequence[nn.Module]) -> None:
        self._kernels.enter_context(steerable_kernels(model))
        self._model = model
        self._handles = [model.register_forward_pre_hook(self._check_prompt, with_kwargs=True)]
        for layer, heads in self.layer_heads.items():
            _ACTIVE[attention[layer]] = _LayerSteering(self, heads)
            self._modules.append(attention[layer])

    def uninstall(self) -> None:
        """Restore the model's own attention and drop the masks kept from the latest forward."""
        for module in self._modules:
            _ACTIVE.pop(module, None)
        for handle in self._handles:
            handle.remove()
        self._kernels.close()
        self._modules, self._handles, self._model, self._rows = [], [], None, None
        self._latest.clear()

    def _check_prompt(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A forward that holds the prompt's length must hold the steered prompt, or the bias lands elsewhere.

        Shorter forwards are decode steps (or a foreign sequence, which ``steered_mask``
        refuses when it has fewer keys than the prompt).
        """
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        prompt_ids = self.prompt_ids if self._rows is None else self.prompt_ids[self._rows]
        prompt_rows, prompt_length = prompt_ids.shape
        if input_ids is None or input_ids.shape[1] < prompt_length:
            return
        rows = input_ids.shape[0]
        if rows % prompt_rows == 0:
            expected = prompt_ids.repeat_interleave(rows // prompt_rows, dim=0).to(input_ids.device)
            if torch.equal(input_ids[:, :prompt_length], expected):
                return
        raise SteeringError(
            f"a forward inside the steering block starts with input_ids of shape {tuple(input_ids.shape)} that are not "
            f"the steered prompt batch {tuple(self.prompt_ids.shape)}; run the model (or generate) on the input_ids "
            "given to PASTA.apply(), or open a new apply() block for other prompts"
        )

    def steered_mask(
        self, heads: HeadSet, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, sliding_window: int | None
    ) -> torch.Tensor:
        batch, queries, keys = query.shape[0], query.shape[2], key.shape[2]
        prompt_length = self.prompt_ids.shape[1]
        if keys < prompt_length:
            raise SteeringError(
                f"a forward inside the steering block attends over {keys} keys, fewer than the {prompt_length} tokens of the "
                "steered prompt batch; run the model (or generate) on the input_ids given to PASTA.apply()"
            )
        if sliding_window is not None and keys >= sliding_window:
            raise SteeringError(
                f"the sequence reached the model's sliding window of {sliding_window} tokens, past which its cache drops the "
                "prompt's first keys and the bias could not follow them; generate fewer tokens or use a shorter prompt"
            )
        if mask is not None and mask.shape[-1] != keys:
            mask = mask[..., :keys]
        signature = (batch, queries, keys, query.dtype, query.device)
        latest = self._latest.get(heads)
        if latest is not None and latest[0] is mask and latest[1] == signature:
            return latest[2]
        steered = self._build_mask(heads, mask, signature)
        self._latest[heads] = (mask, signature, steered)
        return steered

    def _build_mask(self, heads: HeadSet, mask: torch.Tensor | None, signature: tuple[Any, ...]) -> torch.Tensor:
        batch, queries, keys, dtype, device = signature
        bias = self._bias_over_keys(heads, batch, keys, dtype, device)
        masked = torch.finfo(dtype).min
        if mask is None:
            if queries == 1:  # one query sees every key
                return bias
            # SDPA's causal pattern without a mask: query i sees keys 0..i (aligned top-left).
            visible = torch.arange(keys, device=device)[None, :] <= torch.arange(queries, device=device)[:, None]
            return torch.where(visible, bias, masked)
        if mask.dtype == torch.bool:
            return torch.where(mask, bias, masked)
        return mask + bias.to(mask.dtype)

    def _bias_over_keys(self, heads: HeadSet, batch: int, keys: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(batch, heads, 1, keys): the prompt bias at key positions 0..P-1, zero past the prompt."""
        prompt_bias = self._head_bias[heads]
        if self._rows is not None:
            prompt_bias = prompt_bias[self._rows]
        prompt_rows, prompt_length = prompt_bias.shape[0], prompt_bias.shape[-1]
        if batch != prompt_rows:
            if batch % prompt_rows:
                raise SteeringError(
                    f"a forward of {batch} rows cannot be matched to the {prompt_rows} steered prompts; "
                    "run the batch given to PASTA.apply() (generate may repeat each row, e.g. num_return_sequences)"
                )
            prompt_bias = prompt_bias.repeat_interleave(batch // prompt_rows, dim=0)
        if keys > prompt_length:
            prompt_bias = nn.functional.pad(prompt_bias, (0, keys - prompt_length))
        return prompt_bias.to(device=device, dtype=dtype)
