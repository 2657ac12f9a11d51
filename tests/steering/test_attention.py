"""The registered steered attention functions under every calling convention transformers has used.

The functions see only what the attention interface promises (module, query, key, value,
attention_mask, keywords); the cache keyword, masks of either kind or none, and any extra
keyword must not change what they compute.
"""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
from torch import nn

from pytest_steer.steering.pasta.attention import STEERED_IMPLEMENTATIONS, PromptKeyBias, register_steered_attention, steerable_attention

BATCH, HEADS, KV_HEADS, DIM, PROMPT = 2, 4, 2, 8, 5
STEERED_HEADS = (0, 3)


class FakeAttention(nn.Module):
    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True


def attention_function(base: str):
    from transformers import AttentionInterface

    register_steered_attention()
    return AttentionInterface()[STEERED_IMPLEMENTATIONS[base]]


def reference(query, key, value, allowed: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over the allowed keys, written out head by head."""
    key = key.repeat_interleave(HEADS // KV_HEADS, dim=1)
    value = value.repeat_interleave(HEADS // KV_HEADS, dim=1)
    logits = query @ key.transpose(2, 3) / math.sqrt(DIM) + bias
    logits = logits.masked_fill(~allowed, -math.inf)
    return (logits.softmax(-1) @ value).transpose(1, 2)


def padded_allowed(queries: int, keys: int, padding: list[int]) -> torch.Tensor:
    """(batch, 1, q, k): causal, queries at the end of the keys, left padding masked."""
    query_positions = torch.arange(keys - queries, keys)
    allowed = torch.arange(keys)[None, :] <= query_positions[:, None]
    rows = [allowed & (torch.arange(keys) >= pad)[None, :] for pad in padding]
    return torch.stack(rows)[:, None]


def steered_batch(module: nn.Module, key_bias: torch.Tensor) -> PromptKeyBias:
    from pytest_steer.steering.pasta.attention import STEERING_ATTRIBUTE, _LayerSteering

    bias = PromptKeyBias(key_bias, torch.zeros(BATCH, PROMPT, dtype=torch.long), {0: STEERED_HEADS}, HEADS)
    setattr(module, STEERING_ATTRIBUTE, _LayerSteering(bias, bias.layer_heads[0]))
    return bias


def expected_bias(key_bias: torch.Tensor, keys: int) -> torch.Tensor:
    bias = torch.zeros(BATCH, HEADS, 1, keys)
    for head in STEERED_HEADS:
        bias[:, head, 0, :PROMPT] = key_bias
    return bias


@pytest.mark.parametrize("base", ["eager", "sdpa"])
@pytest.mark.parametrize("mask_kind", ["float", "bool", "none"])
@pytest.mark.parametrize("queries", [PROMPT, 1], ids=["prefill", "decode"])
@pytest.mark.parametrize(
    "extra",
    [{}, {"cache": object()}, {"past_key_values": object()}, {"position_ids": None, "sliding_window": None}],
    ids=["no-cache", "cache=", "past_key_values=", "other-keywords"],
)
def test_the_bias_is_added_whatever_the_mask_and_keywords(base: str, mask_kind: str, queries: int, extra: dict) -> None:
    from pytest_steer.steering.pasta.attention import STEERING_ATTRIBUTE

    torch.manual_seed(0)
    keys = PROMPT + (0 if queries == PROMPT else 2)
    padding = [0, 2] if mask_kind != "none" else [0, 0]  # SDPA passes no mask only when nothing is padded
    query = torch.randn(BATCH, HEADS, queries, DIM)
    key, value = torch.randn(BATCH, KV_HEADS, keys, DIM), torch.randn(BATCH, KV_HEADS, keys, DIM)
    allowed = padded_allowed(queries, keys, padding)
    mask = {"float": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min), "bool": allowed, "none": None}[
        mask_kind
    ]
    key_bias = torch.tensor([[0.0, -2.0, -2.0, 0.0, -2.0], [0.0, 0.0, 1.5, 0.0, 0.0]])
    module = FakeAttention().eval()
    steered_batch(module, key_bias)
    try:
        output, _ = attention_function(base)(module, query, key, value, mask, scaling=DIM**-0.5, dropout=0.0, **extra)
    finally:
        delattr(module, STEERING_ATTRIBUTE)
    expected = reference(query, key, value, allowed, expected_bias(key_bias, keys))
    real = [slice(pad, None) for pad in padding]  # padded queries attend to nothing real
    for row in range(BATCH):
        rows = real[row] if queries == PROMPT else slice(None)
        torch.testing.assert_close(output[row, rows], expected[row, rows], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base", ["eager", "sdpa"])
def test_an_unsteered_module_runs_the_plain_computation(base: str) -> None:
    torch.manual_seed(0)
    query, key, value = torch.randn(1, HEADS, 3, DIM), torch.randn(1, KV_HEADS, 3, DIM), torch.randn(1, KV_HEADS, 3, DIM)
    allowed = padded_allowed(3, 3, [0])
    output, _ = attention_function(base)(
        FakeAttention().eval(),
        query,
        key,
        value,
        allowed if base == "sdpa" else torch.zeros(allowed.shape).masked_fill(~allowed, -1e30),
        scaling=DIM**-0.5,
    )
    torch.testing.assert_close(output, reference(query, key, value, allowed, torch.zeros(1)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("family", "keywords"),
    [("llama", {}), ("gemma2", {"softcap": 2.0, "scaling": 0.7}), ("gpt_oss", {"sinks": True})],
    ids=["plain", "softcap-and-scaling", "sinks"],
)
def test_grouped_eager_attention_equals_the_familys_eager_with_repeated_heads(family: str, keywords: dict) -> None:
    """The same outputs and weights as the family's eager function, which copies each key/value head per query head."""
    import importlib

    from pytest_steer.steering.pasta.attention import eager_attention

    own = importlib.import_module(f"transformers.models.{family}.modeling_{family}").eager_attention_forward
    torch.manual_seed(1)
    module = FakeAttention().eval()
    module.num_key_value_groups = HEADS // KV_HEADS
    keywords = {"scaling": DIM**-0.5, **keywords}
    if keywords.pop("sinks", False):
        module.sinks = nn.Parameter(torch.randn(HEADS))
        keywords["s_aux"] = module.sinks  # what gpt-oss passes; its own function reads module.sinks
    for queries, keys in ((5, 5), (1, 9)):
        query = 3 * torch.randn(2, HEADS, queries, DIM)
        key, value = torch.randn(2, KV_HEADS, keys, DIM), torch.randn(2, KV_HEADS, keys, DIM)
        mask = torch.randn(2, 1, queries, keys)
        ours = eager_attention(module, query, key, value, mask, **keywords)
        theirs = own(module, query, key, value, mask, **keywords)
        for mine, reference_output in zip(ours, theirs):
            torch.testing.assert_close(mine, reference_output, atol=1e-6, rtol=1e-6)


def cache_keywords() -> list[str]:
    """The keyword(s) under which this release's attention layers take the KV cache."""
    from transformers.models.llama.modeling_llama import LlamaAttention

    parameters = inspect.signature(LlamaAttention.forward).parameters
    names = [name for name in ("cache", "past_key_values") if name in parameters]
    if "cache" in names:
        names.append("past_key_values")  # the deprecated spelling, still accepted where `cache` is the name
    return sorted(set(names))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_layer_called_with_its_cache_keyword_keeps_the_bias_in_every_decode_step(tiny, attn: str) -> None:
    from transformers import DynamicCache

    model = tiny.model("llama", attn)
    attention, num_heads = steerable_attention(model)
    layer = attention[1]
    rotary = model.model.rotary_emb
    torch.manual_seed(0)
    hidden = torch.randn(1, PROMPT + 3, model.config.hidden_size)
    positions = torch.arange(PROMPT + 3)[None]
    key_bias = torch.tensor([[0.0, -2.0, -2.0, 0.0, -2.0]])
    steering = PromptKeyBias(key_bias, torch.zeros(1, PROMPT, dtype=torch.long), {1: (0, 2)}, num_heads)
    steering.install(model, attention)

    def run(start: int, stop: int, **cache) -> torch.Tensor:
        states = hidden[:, start:stop]
        embeddings = rotary(states, positions[:, start:stop])
        mask = torch.zeros(1, 1, stop - start, stop).masked_fill(
            torch.arange(stop)[None, :] > torch.arange(start, stop)[:, None], torch.finfo(torch.float32).min
        )
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the deprecated keyword's notice
            return layer(
                hidden_states=states, position_embeddings=embeddings, attention_mask=mask if attn == "eager" else mask == 0, **cache
            )[0]

    try:
        full = run(0, PROMPT + 3)
        for keyword in cache_keywords():
            cache = DynamicCache(config=model.config)
            steps = [run(0, PROMPT, **{keyword: cache})] + [run(t, t + 1, **{keyword: cache}) for t in range(PROMPT, PROMPT + 3)]
            torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5, msg=f"cache passed as {keyword}=")
    finally:
        steering.uninstall()
    assert cache_keywords(), "this release's attention layers take the cache under neither known keyword"
    assert (run(0, PROMPT + 3) - full).abs().max() > 1e-3  # the bias did act
