"""PASTA on every decoder family it claims, against an independent reference.

For each family a tiny model is built from its config (sliding windows shorter than the
prompts where the family has them). The steered run is the engine's decode loop on a
left-padded batch, with response rows selected and repeated from the prompts. The
reference takes each response alone, without padding or a cache, recomputes the whole
sequence at every step and runs the family's own ``eager_attention_forward`` with the
PASTA bias added to the mask it receives, on the selected heads. Prefill and decode steps
must give the same logits.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from pytest_steer.engine.decoding import decode
from pytest_steer.steering import PASTA
from pytest_steer.steering.pasta.attention import GROUPED_EAGER_FAMILIES, steerable_attention

PROMPTS = ["write a short poem about the sea . answer in all caps , do not use any commas", "tell me a story"]
SUBSTRINGS = [["answer in all caps"], ["a story"]]
PROMPT_OF_ROW = torch.tensor([1, 0, 1])  # rows reordered and repeated, as trials of a case are
NEW_TOKENS = 4  # the prefill and three decode steps
WINDOW = 5  # shorter than both templated prompts (24 and 10 tokens)
HEAD_CONFIG = {0: [0, 2], 1: [0, 1, 2, 3]}
MIXED_LAYERS = {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": WINDOW}
EXPERTS = {"num_local_experts": 2, "num_experts_per_tok": 2}

# model_type -> (config keywords beyond the common ones, attention implementations the model supports).
FAMILIES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "llama": ({}, ("eager", "sdpa")),
    "mistral": ({"sliding_window": WINDOW}, ("eager", "sdpa")),
    "mixtral": ({"sliding_window": WINDOW, **EXPERTS}, ("eager", "sdpa")),
    "qwen2": ({"use_sliding_window": True, **MIXED_LAYERS}, ("eager", "sdpa")),
    "qwen2_moe": (
        {"num_experts": 2, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32},
        ("eager", "sdpa"),
    ),
    "qwen3": ({"use_sliding_window": True, **MIXED_LAYERS}, ("eager", "sdpa")),
    "qwen3_moe": ({"num_experts": 2, "num_experts_per_tok": 2, "moe_intermediate_size": 32}, ("eager", "sdpa")),
    "gemma": ({}, ("eager", "sdpa")),
    "gemma2": ({"attn_logit_softcapping": 1.0, "query_pre_attn_scalar": 20, **MIXED_LAYERS}, ("eager",)),
    "gemma3_text": ({"query_pre_attn_scalar": 20, **MIXED_LAYERS}, ("eager", "sdpa")),
    "phi3": ({"sliding_window": WINDOW, "partial_rotary_factor": 0.5}, ("eager", "sdpa")),
    "granite": (
        {"attention_multiplier": 0.3, "embedding_multiplier": 2.0, "residual_multiplier": 0.5, "logits_scaling": 2.0},
        ("eager", "sdpa"),
    ),
    "olmo2": ({}, ("eager", "sdpa")),
    "smollm3": ({"use_sliding_window": True, **MIXED_LAYERS}, ("eager", "sdpa")),
    "cohere": ({"logit_scale": 1.0}, ("eager", "sdpa")),
    "starcoder2": ({"sliding_window": WINDOW}, ("eager", "sdpa")),
    "gpt_neox": ({"rotary_pct": 0.5, "partial_rotary_factor": 0.5}, ("eager", "sdpa")),
    "glm4": ({"partial_rotary_factor": 0.5, "attention_bias": True}, ("eager", "sdpa")),
    "stablelm": ({"partial_rotary_factor": 0.5, "use_qkv_bias": True}, ("eager", "sdpa")),
    "gpt_oss": ({**MIXED_LAYERS, **EXPERTS}, ("eager",)),
    # Families outside GROUPED_EAGER_FAMILIES: the steered eager twin runs their own eager function.
    "gpt2": ({"n_inner": 64}, ("eager", "sdpa")),
    "opt": ({"ffn_dim": 64, "word_embed_proj_dim": 32}, ("eager", "sdpa")),
}
CASES = [(family, attn) for family, (_, implementations) in FAMILIES.items() for attn in implementations]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Models this small gain nothing from a second thread and lose much to it on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_family_of_the_grouped_kernel_is_tested_here() -> None:
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    assert GROUPED_EAGER_FAMILIES <= {model_type_to_module_name(model_type) for model_type in FAMILIES}


def build(tiny, model_type: str) -> nn.Module:
    extra, _ = FAMILIES[model_type]
    tokenizer = tiny.tokenizer
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **extra,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # peaked attention, so that the bias shows in the logits
        for attention in steerable_attention(model)[0]:
            for name, parameter in attention.named_parameters():
                if parameter.ndim == 2 and not name.startswith(("o_proj", "dense", "out_proj")):
                    parameter.mul_(4.0)
    return model


def head_bias(key_bias: torch.Tensor, heads: list[int], num_heads: int, keys: int) -> torch.Tensor:
    """(1, heads, 1, keys): the prompt keys' bias on the selected heads, zero past the prompt."""
    bias = torch.zeros(1, num_heads, 1, keys)
    bias[0, heads, 0, : key_bias.shape[0]] = key_bias
    return bias


@contextmanager
def biased_own_eager(model: nn.Module, bias_of: dict[nn.Module, torch.Tensor]) -> Iterator[None]:
    """The family's own eager_attention_forward, with each module's bias added to the mask it receives."""
    attention = steerable_attention(model)[0]
    modeling = sys.modules[type(attention[0]).__module__]
    own = modeling.eager_attention_forward

    def biased(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, **kwargs: Any):
        assert mask is not None and mask.dtype != torch.bool, "the reference expects eager's float mask"
        bias = bias_of.get(module)
        if bias is not None:
            mask = mask[..., : key.shape[2]] + bias[..., : key.shape[2]]
        return own(module, query, key, value, mask, **kwargs)

    with mock.patch.object(modeling, "eager_attention_forward", biased):
        yield


def reference_logits(model: nn.Module, sequence: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
    """Next-token logits after ``sequence`` (one row, no padding), the whole sequence recomputed without a cache."""
    attention, num_heads = steerable_attention(model)
    bias_of = (
        {}
        if key_bias is None
        else {attention[layer]: head_bias(key_bias, heads, num_heads, len(sequence)) for layer, heads in HEAD_CONFIG.items()}
    )
    with torch.no_grad(), biased_own_eager(model, bias_of):
        return model(input_ids=sequence[None], use_cache=False).logits[0, -1]


@pytest.mark.parametrize(("model_type", "attn"), CASES, ids=[f"{family}-{attn}" for family, attn in CASES])
def test_steered_decoding_matches_each_row_alone_under_the_familys_own_eager_attention(tiny, model_type: str, attn: str) -> None:
    model = build(tiny, model_type)
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    window = getattr(model.config, "sliding_window", None)
    assert window is None or window < attention_mask.sum(1).min(), "the window must be shorter than every prompt"

    steered_model = copy.deepcopy(model)
    steered_model.set_attn_implementation(attn)
    model.set_attn_implementation("eager")
    steps: list[torch.Tensor] = []

    def greedy(logits: torch.Tensor, seeds: torch.Tensor, step: int) -> torch.Tensor:
        steps.append(logits.clone())
        return logits.argmax(-1)

    with (
        torch.no_grad(),
        PASTA(HEAD_CONFIG, alpha=20.0).apply(steered_model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS, texts=texts) as run,
    ):
        tokens = decode(
            steered_model,
            input_ids,
            attention_mask,
            PROMPT_OF_ROW,
            torch.zeros(len(PROMPT_OF_ROW), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            eos_ids=(),
            choose=greedy,
            rows_changed=run.select_rows,
        )
    assert all(run.steered_rows) and len(steps) == NEW_TOKENS

    assert_rows_match_the_reference(model, input_ids, attention_mask, run.key_bias, PROMPT_OF_ROW.tolist(), tokens, steps)


@pytest.mark.parametrize(
    ("model_type", "attn", "cache"),
    [
        ("mistral", "sdpa", "dynamic"),
        ("gemma3_text", "eager", "dynamic"),
        ("gemma3_text", "sdpa", "dynamic"),
        ("gemma3_text", "eager", "static"),
        ("mistral", "sdpa", "static"),
    ],
)
def test_generate_inside_the_block_matches_each_row_alone_past_the_window(tiny, model_type: str, attn: str, cache: str) -> None:
    """transformers' generate, with its dynamic cache or a static one (whose sliding layers roll a buffer of the window)."""
    model = build(tiny, model_type)
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    steered_model = copy.deepcopy(model)
    steered_model.set_attn_implementation(attn)
    steered_model.generation_config.pad_token_id = tiny.tokenizer.pad_token_id
    model.set_attn_implementation("eager")
    with (
        torch.no_grad(),
        PASTA(HEAD_CONFIG, alpha=20.0).apply(steered_model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS, texts=texts) as run,
    ):
        out = steered_model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            cache_implementation=cache,
        )
    tokens = out.sequences[:, input_ids.shape[1] :].tolist()
    assert_rows_match_the_reference(model, input_ids, attention_mask, run.key_bias, [0, 1], tokens, list(out.logits))


def assert_rows_match_the_reference(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_bias: torch.Tensor,
    prompt_of_row: list[int],
    tokens: list[list[int]],
    steps: list[torch.Tensor],
) -> None:
    """``steps[s][row]``, the steered logits after ``s`` generated tokens, against the reference on that row alone."""
    references: dict[tuple[int, ...], torch.Tensor] = {}  # rows that repeat a prompt share their sequences under greedy decoding
    for row, prompt in enumerate(prompt_of_row):
        real = attention_mask[prompt].bool()
        prompt_tokens, key_bias = input_ids[prompt, real], prompt_bias[prompt, real]
        for step in range(NEW_TOKENS):
            sequence = torch.cat([prompt_tokens, torch.tensor(tokens[row][:step], dtype=torch.long)])
            if tuple(sequence.tolist()) not in references:
                references[tuple(sequence.tolist())] = reference_logits(model, sequence, key_bias)
            expected = references[tuple(sequence.tolist())]
            torch.testing.assert_close(
                steps[step][row],
                expected,
                atol=1e-5,
                rtol=1e-4,
                msg=lambda text, row=row, step=step: f"{model.config.model_type}, row {row}, step {step}: {text}",
            )
    # The last step, where a sliding window holds both prompt keys (biased) and generated keys (not).
    unsteered = reference_logits(model, sequence, None)
    assert (unsteered - steps[-1][-1]).abs().max() > 1e-2, "the bias must change the logits, or this test proves nothing"
