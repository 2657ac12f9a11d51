"""Adding a per-head bias over the prompt's keys inside attention, through transformers' attention interface.

Every decoder whose attention layers run their core through
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``,
with the documented signature ``(module, query, key, value, attention_mask, **kwargs)``, can be
steered. This module registers two functions on that interface (``AttentionInterface.register``),
``steer_eager`` and ``steer_sdpa``, with the matching mask builders
(``AttentionMaskInterface.register``). Each one adds the bias of the module's steered heads to
the mask it receives, then computes what its base computes:

- SDPA: transformers' own SDPA function, unchanged.
- eager: what the family's own ``eager_attention_forward`` does, with the bias where that
  function adds the mask, so after Gemma 2's logit softcapping, before gpt-oss's attention
  sinks, at any ``scaling``. For the families in ``GROUPED_EAGER_FAMILIES`` this is
  ``eager_attention`` (faster: no copy of the key/value heads per query head); any other family
  runs its own eager function on the steered mask.

While a batch is steered (``PromptKeyBias.install``) the model's implementation is switched to
the steered twin of its own (``set_attn_implementation``) and each steered module holds its bias
(``STEERING_ATTRIBUTE``); ``uninstall`` restores both. The engine runs unsteered batches on the twins too
(``shared_kernels``), so configs differ only by the bias.

Where the bias lands: the prompt's keys hold absolute positions 0..P-1 (left padding included).
Nothing depends on the keyword names a model passes between its layers (the KV cache's keyword
changed in transformers 5.24): once per model forward the number of positions T the forward
ends at is read (the cache's length before it plus the new tokens), and a layer that receives
``keys`` keys holds positions ``max(0, T - keys) + j``. Full layers with a dynamic cache see keys
0..T-1; static caches pass a longer buffer whose extra slots are masked (their layers hold position i at
slot i, so T is not read per layer there, and a compiled decode step does not depend on it). A sliding-window layer
whose cache has dropped earlier keys (transformers keeps the last window - 1 keys and returns
them with the new ones; the static sliding layer rolls a full buffer) sees the last ``keys``
positions, so the bias follows each kept key and a dropped prompt key takes its bias with it.

The mask received can be a float mask (eager: added to), a boolean mask (SDPA: masked positions
become the dtype's minimum, never 0/1 floats, so padding stays masked) or None (SDPA without
padding: the causal pattern SDPA would apply is rebuilt). One steered mask is built per forward,
head set and mask received, and shared by every layer with those.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pytest_steer.steering.errors import SteeringError, UnsupportedModelError
from pytest_steer.steering.pasta.family import check_model_family, no_interface
from pytest_steer.steering.rows import check_prompt_rows

STEERED_IMPLEMENTATIONS = {"eager": "steer_eager", "sdpa": "steer_sdpa"}

# transformers.models.<family> packages whose eager_attention_forward is Llama's, optionally with logit
# softcapping and attention sinks, which eager_attention reproduces (tests/steering/test_families.py checks each).
GROUPED_EAGER_FAMILIES = frozenset(
    {
        "cohere",
        "gemma",
        "gemma2",
        "gemma3",
        "glm4",
        "gpt_neox",
        "gpt_oss",
        "granite",
        "llama",
        "mistral",
        "mixtral",
        "olmo2",
        "phi3",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "smollm3",
        "stablelm",
        "starcoder2",
    }
)
# What decoder layers call their self-attention, across transformers' families.
ATTENTION_CHILDREN = ("self_attn", "attention", "attn", "self_attention")
# The model forward's keyword for the KV cache: ``cache`` from transformers 5.24, ``past_key_values`` before.
CACHE_KEYWORDS = ("cache", "past_key_values")

HeadSet = tuple[int, ...]
AttentionFunction = Callable[..., tuple[torch.Tensor, Any]]

# The attribute of an attention module being steered that holds the bias it adds. An attribute of the
# module, not an entry of a table elsewhere: torch.compile guards on it, so a compiled step retraces when
# steering starts or stops instead of replaying a graph traced without it.
STEERING_ATTRIBUTE = "_pytest_steer_layer"


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    s_aux: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention as the grouped families compute it, with each key/value head serving its query group in place.

    transformers' eager functions copy every key and value head once per query head of its
    group (``repeat_kv``), a copy of the whole KV cache per layer and step; here the queries of
    a group are stacked against their shared head instead. Query head ``h`` uses key/value
    head ``h // groups``, as with ``repeat_kv``. ``softcap`` caps the logits before the mask is
    added (Gemma 2); ``s_aux`` holds one sink logit per head that takes a share of the softmax
    and is then dropped (gpt-oss).
    """
    batch, heads, queries, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    if scaling is None:
        scaling = dim**-0.5
    grouped = query.reshape(batch, kv_heads, groups * queries, dim)
    # keys times queries, then transposed: the same products as queries times keys, but CPU kernels take a cache's
    # key view (strided over its capacity) as it is this way round, where the other copies it (bfloat16: 2x slower)
    weights = torch.matmul(key, grouped.transpose(2, 3)).transpose(2, 3).reshape(batch, heads, queries, -1) * scaling
    if softcap is not None:
        weights = torch.tanh(weights / softcap) * softcap
    if attention_mask is not None:
        weights = weights + attention_mask
    if s_aux is None:
        weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    else:
        sinks = s_aux.reshape(1, heads, 1, 1).expand(batch, heads, queries, 1).to(weights.dtype)
        combined = torch.cat([weights, sinks], dim=-1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        weights = nn.functional.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1].to(value.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights.reshape(batch, kv_heads, groups * queries, -1), value)
    return output.view(batch, heads, queries, dim).transpose(1, 2).contiguous(), weights


def family_eager_attention(attention_class: type) -> AttentionFunction:
    """The eager computation for an attention module class: ``eager_attention`` where it reproduces the
    family's own function, else the ``eager_attention_forward`` of the module's modeling code (Llama's
    computation, ``eager_attention``, where that code defines none)."""
    where = attention_class.__module__
    if where.startswith("transformers.models.") and where.rsplit(".", 2)[-2] in GROUPED_EAGER_FAMILIES:
        return eager_attention
    own = getattr(sys.modules.get(where), "eager_attention_forward", None)
    return own if callable(own) else eager_attention


def _steered(base: str) -> AttentionFunction:
    # why: importing this module must not load transformers (a run's engine imports it before any model is loaded)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def steered_attention(
        module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any
    ) -> tuple[torch.Tensor, Any]:
        steering = getattr(module, STEERING_ATTRIBUTE, None)
        if steering is not None:
            attention_mask = steering.mask(query, key, attention_mask)
        compute = sdpa_attention_forward if base == "sdpa" else family_eager_attention(type(module))
        return compute(module, query, key, value, attention_mask, **kwargs)

    steered_attention.__name__ = f"steer_{base}_attention"
    return steered_attention


_registered = False


def register_steered_attention() -> None:
    """Register ``steer_eager`` and ``steer_sdpa`` with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface, AttentionMaskInterface  # why: as in _steered
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
            f"{_model_type(model)}: {type(model).__name__} did not switch to the attention function {target!r} "
            "(transformers refuses to change its attention implementation), so the steering bias cannot be applied"
        )
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def shared_kernels(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """``steerable_kernels`` for the models PASTA can steer; others run as loaded."""
    try:
        steerable_attention(model)
    except UnsupportedModelError:
        return contextlib.nullcontext()
    return steerable_kernels(model)


def _model_type(model: nn.Module) -> str:
    return repr(getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__)


def steerable_attention(model: nn.Module) -> tuple[list[nn.Module], int]:
    """The attention module of every decoder layer and the number of query heads.

    Raises UnsupportedModelError, naming the model type and what is missing, when the model
    cannot carry a per-head additive mask.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    check_model_family(model_type, is_encoder_decoder=bool(getattr(config, "is_encoder_decoder", False)))
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in STEERED_IMPLEMENTATIONS and implementation not in STEERED_IMPLEMENTATIONS.values():
        raise UnsupportedModelError(
            f"attention implementation {implementation!r} cannot be steered: PASTA adds a per-head bias through the "
            "attention mask, which only eager and sdpa attention apply as given; load the model with "
            "attn_implementation='eager' or 'sdpa' (or call model.set_attn_implementation('sdpa'))"
        )
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    attention = _decoder_attention(model, int(text_config.num_hidden_layers))
    if attention is None:
        raise UnsupportedModelError(
            f"PASTA cannot steer {_model_type(model)}: {type(model).__name__} has no stack of "
            f"{text_config.num_hidden_layers} decoder layers that each hold a causal self-attention module "
            f"({', '.join(ATTENTION_CHILDREN)}). Pass the causal LM itself (e.g. LlamaForCausalLM), not a wrapper around it"
        )
    where = type(attention[0]).__module__
    if getattr(sys.modules.get(where), "ALL_ATTENTION_FUNCTIONS", None) is None:
        raise UnsupportedModelError(no_interface(model_type or type(model).__name__, where))
    return attention, int(text_config.num_attention_heads)


def _decoder_attention(model: nn.Module, num_layers: int) -> list[nn.Module] | None:
    """The causal self-attention of each decoder layer: the first stack of ``num_layers`` layers that each hold one."""
    for _, stack in getattr(model, "base_model", model).named_modules():
        if isinstance(stack, nn.ModuleList) and len(stack) == num_layers:
            modules = [_attention_child(layer) for layer in stack]
            if all(module is not None and getattr(module, "is_causal", True) for module in modules):
                return modules  # type: ignore[return-value]
    return None


def _attention_child(layer: nn.Module) -> nn.Module | None:
    for name in ATTENTION_CHILDREN:
        child = getattr(layer, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def _keys_from_position_zero(cache: Any) -> bool:
    """Whether every layer of the cache hands attention its whole buffer, slot i holding position i
    (transformers' static full-attention layers, the engine's fixed-shape layers)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(getattr(layer, "is_compileable", False) and not layer.is_sliding for layer in layers)


class _LayerSteering:
    """What one attention module adds: its head set's share of the batch's prompt bias."""

    def __init__(self, batch: PromptKeyBias, heads: tuple[HeadSet, ...]) -> None:
        self.batch = batch
        self.heads = heads
        self.reached = False

    def mask(self, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        self.reached = True
        return self.batch.steered_mask(self.heads, query, key, mask)


class PromptKeyBias:
    """Installs and serves the steered masks for one batch of prompts.

    ``key_bias`` (batch, prompt_length) is the value added to the attention logits of each
    prompt key; ``layer_heads`` says, per steered layer, which query heads receive it: one head
    set for every row, or one per prompt row (rows of several PASTA configs sharing a batch).
    """

    def __init__(
        self, key_bias: torch.Tensor, prompt_ids: torch.Tensor, layer_heads: dict[int, HeadSet | tuple[HeadSet, ...]], num_heads: int
    ) -> None:
        self.prompt_ids = prompt_ids
        rows = key_bias.shape[0]
        self.layer_heads: dict[int, tuple[HeadSet, ...]] = {
            layer: heads if heads and isinstance(heads[0], tuple) else (heads,) * rows  # type: ignore[misc]
            for layer, heads in layer_heads.items()
        }
        self._head_bias: dict[tuple[HeadSet, ...], torch.Tensor] = {}
        for row_heads in set(self.layer_heads.values()):
            selected = torch.zeros(len(row_heads), num_heads, dtype=key_bias.dtype, device=key_bias.device)
            for heads in set(row_heads):
                rows = [row for row, own in enumerate(row_heads) if own == heads]
                selected[torch.tensor(rows)[:, None], torch.tensor(heads, dtype=torch.long)[None, :]] = 1.0
            self._head_bias[row_heads] = key_bias[:, None, None, :] * selected[:, :, None, None]
        # per-row head sets -> (mask received, its signature, steered mask) of the current forward. Matched by identity, not
        # by id(): a compiled step then guards on no particular mask tensor, and retraces for no new batch.
        self._latest: dict[tuple[HeadSet, ...], list[tuple[torch.Tensor | None, tuple[Any, ...], torch.Tensor]]] = {}
        self._positions: int | None = None  # positions the current model forward ends at; None: layers called directly
        self._model: nn.Module | None = None
        self._kernels = contextlib.ExitStack()
        self._handles: list[RemovableHandle] = []
        self._layers: dict[int, _LayerSteering] = {}
        self._modules: list[nn.Module] = []
        self._rows: torch.Tensor | None = None  # prompt row of each forward row; None: the batch as given

    def select_rows(self, prompt_rows: torch.Tensor) -> None:
        """Forwards from now on run one row per entry: that prompt row's bias (repeats allowed)."""
        self._rows = prompt_rows.to(self.prompt_ids.device)
        self._latest.clear()

    def install(self, model: nn.Module, attention: Sequence[nn.Module]) -> None:
        self._kernels.enter_context(steerable_kernels(model))
        self._model = model
        self._handles = [
            model.register_forward_pre_hook(self._begin_forward, with_kwargs=True),
            model.register_forward_hook(self._check_reached),  # removes itself after the first forward
        ]
        for layer, heads in self.layer_heads.items():
            self._layers[layer] = _LayerSteering(self, heads)
            setattr(attention[layer], STEERING_ATTRIBUTE, self._layers[layer])
            self._modules.append(attention[layer])

    def uninstall(self) -> None:
        """Restore the model's own attention and drop the masks kept from the latest forward."""
        for module in self._modules:
            module.__dict__.pop(STEERING_ATTRIBUTE, None)
        for handle in self._handles:
            handle.remove()
        self._kernels.close()
        self._modules, self._layers, self._handles = [], {}, []
        self._model, self._rows, self._positions = None, None, None
        self._latest.clear()

    def _begin_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Note how many positions this forward ends at; refuse a forward that is not on the steered prompt.

        A forward that ends before the prompt does, or that holds the prompt's length with other
        tokens, is a foreign sequence. Forwards of fewer tokens on a cache are decode steps.
        """
        self._latest.clear()
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        new_tokens = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        cache = next((kwargs[name] for name in CACHE_KEYWORDS if kwargs.get(name) is not None), None)
        cached = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
        self._positions = None if new_tokens is None else cached + new_tokens.shape[1]
        prompt_ids = self.prompt_ids if self._rows is None else self.prompt_ids[self._rows]
        prompt_length = prompt_ids.shape[1]
        if self._positions is not None and self._positions < prompt_length:
            raise self._foreign(self._positions)
        check_prompt_rows(input_ids, prompt_ids, self.prompt_ids.shape, "PASTA")
        if _keys_from_position_zero(cache):
            # every layer's keys are its slots 0..capacity-1: no position to read per layer, so a captured step stays one graph
            self._positions = None

    def _foreign(self, positions: int) -> SteeringError:
        return SteeringError(
            f"a forward inside the steering block attends over {positions} positions, fewer than the "
            f"{self.prompt_ids.shape[1]} tokens of the steered prompt batch; run the model (or generate) on the input_ids "
            "given to PASTA.apply()"
        )

    def _check_reached(self, module: nn.Module, args: tuple, output: Any) -> None:
        """After the first forward: every steered layer must have asked for its mask, or the model bypassed the interface."""
        self._handles[-1].remove()
        missed = [layer for layer, steering in self._layers.items() if not steering.reached]
        if missed:
            raise UnsupportedModelError(
                f"PASTA cannot steer {_model_type(module)}: the attention of layer {missed[0]} did not run through "
                f"transformers' attention interface under {module.config._attn_implementation!r}, so its bias was never "
                "applied. Use a model whose attention layers call ALL_ATTENTION_FUNCTIONS, or a method that changes only "
                "the prompt (emphasis)"
            )

    def steered_mask(self, heads: tuple[HeadSet, ...], query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, queries, keys = query.shape[0], query.shape[2], key.shape[2]
        positions = keys if self._positions is None else self._positions
        if positions < self.prompt_ids.shape[1]:
            raise self._foreign(positions)
        first = max(0, positions - keys)  # absolute position of key 0: > 0 once a sliding cache dropped keys
        if mask is not None and mask.shape[-1] != keys:
            mask = mask[..., :keys]
        signature = (batch, queries, keys, first, query.dtype, query.device)
        built = self._latest.setdefault(heads, [])
        for received, received_signature, steered in built:
            if received is mask and received_signature == signature:
                return steered
        steered = self._build_mask(heads, mask, signature)
        built.append((mask, signature, steered))
        return steered

    def _build_mask(self, heads: tuple[HeadSet, ...], mask: torch.Tensor | None, signature: tuple[Any, ...]) -> torch.Tensor:
        batch, queries, keys, first, dtype, device = signature
        bias = self._bias_over_keys(heads, batch, first, keys, dtype, device)
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

    def _bias_over_keys(
        self, heads: tuple[HeadSet, ...], batch: int, first: int, keys: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """(batch, heads, 1, keys): the bias of absolute positions first..first+keys-1, zero past the prompt."""
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
        if first + keys > prompt_length:
            prompt_bias = nn.functional.pad(prompt_bias, (0, first + keys - prompt_length))
        return prompt_bias[..., first : first + keys].to(device=device, dtype=dtype)
