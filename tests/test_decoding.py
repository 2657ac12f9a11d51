"""The decode loop against transformers' generate, with rows that end early and shared prefills."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_steer.engine.decoding import cache_argument, compaction, decode
from pytest_steer.engine.generation import Engine
from pytest_steer.engine.kv_cache import CacheKind, row_cache
from pytest_steer.engine.requests import GenerationRequest, GenerationSettings
from pytest_steer.engine.sampling import RowSampler, greedy
from pytest_steer.model.loading import load_model
from pytest_steer.model.prompts import render_prompt
from pytest_steer.steering import PASTA
from pytest_steer.steering.errors import UnsupportedModelError

PROMPTS = ["Write a haiku about rain.", "Name three colours, please, in a list.", "Hi."]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint: Path):
    return load_model(str(tiny_checkpoint), device="cpu", dtype="float32")


def _batch(loaded, prompts: list[str]):
    texts = [render_prompt(loaded.tokenizer, p) for p in prompts]
    return loaded.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _reference(loaded, batch, new_tokens: int, eos: list[int]) -> list[list[int]]:
    """transformers' greedy generate, cut after each row's first end-of-sequence token."""
    with torch.inference_mode():
        out = loaded.model.generate(
            **batch, max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=loaded.tokenizer.pad_token_id,
            temperature=None, top_p=None, top_k=None,
        )  # fmt: skip
    rows = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        ends = [i for i, token in enumerate(row) if token in eos]
        rows.append(row[: ends[0] + 1] if ends else row)
    return rows


def _early_eos(loaded, batch) -> list[int]:
    """Tokens that end rows at different steps: what the first row emits at its 3rd greedy step."""
    free_run = _reference(loaded, batch, 6, eos=[-1])
    return [free_run[0][2]]


def test_greedy_decode_equals_generate_when_rows_end_at_different_steps(loaded) -> None:
    batch = _batch(loaded, PROMPTS)
    eos = _early_eos(loaded, batch)
    expected = _reference(loaded, batch, 10, eos)
    assert len({len(row) for row in expected}) > 1, "the test needs rows that end at different steps"
    with torch.inference_mode():
        tokens = decode(
            loaded.model, batch["input_ids"], batch["attention_mask"], torch.arange(3), torch.zeros(3, dtype=torch.int64),
            max_new_tokens=10, eos_ids=eos, choose=greedy,
        )  # fmt: skip
    assert tokens == expected


def test_steered_decode_with_dropped_rows_equals_each_row_alone(loaded) -> None:
    """A dropped row takes its KV cache and its steering bias with it; the others keep theirs."""
    pasta = PASTA(head_config=[0, 1], alpha=20.0)
    highlights = [["about rain."], ["in a list."], ["Hi."]]
    batch = _batch(loaded, PROMPTS)
    eos = _early_eos(loaded, batch)

    def steered(rows: list[int], fan_out: list[int]) -> list[list[int]]:
        sub = _batch(loaded, [PROMPTS[r] for r in rows])
        texts = [render_prompt(loaded.tokenizer, PROMPTS[r]) for r in rows]
        run = pasta.apply(
            loaded.model, loaded.tokenizer, sub["input_ids"], sub["attention_mask"], [highlights[r] for r in rows], texts=texts
        )
        with torch.inference_mode(), run:
            return decode(
                loaded.model, sub["input_ids"], sub["attention_mask"], torch.tensor(fan_out), torch.zeros(len(fan_out), dtype=torch.int64),
                max_new_tokens=10, eos_ids=eos, choose=greedy, rows_changed=run.select_rows,
            )  # fmt: skip

    together = steered([0, 1, 2], [0, 1, 2, 0])
    assert len({len(row) for row in together}) > 1
    assert together[3] == together[0]  # a prompt fanned out to two rows continues identically under greedy
    assert together[:3] == [steered([r], [0])[0] for r in range(3)]
    unsteered = [_reference(loaded, _batch(loaded, [p]), 10, eos)[0] for p in PROMPTS]
    assert together[:3] != unsteered


def test_trials_of_one_prompt_share_its_prefill_and_keep_their_own_samples(loaded) -> None:
    engine = Engine(loaded, GenerationSettings(max_new_tokens=8, temperature=1.5))
    requests = [GenerationRequest(PROMPTS[0], seed) for seed in (1, 2, 3)] + [GenerationRequest(PROMPTS[1], 1)]
    calls = []
    handle = loaded.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        together = engine.generate(requests)
    finally:
        handle.remove()
    assert calls[0] == (1, len(engine.template))  # the chat template's prefix, once (pytest_steer.engine.prefix)
    assert calls[1][0] == 2  # then one prefill row per distinct prompt
    assert together == [engine.generate([request])[0] for request in requests]
    assert len({g.text for g in together[:3]}) > 1


def test_greedy_trials_share_one_response(loaded) -> None:
    engine = Engine(loaded, GenerationSettings(max_new_tokens=6, greedy=True))
    calls = []
    handle = loaded.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        first, second = engine.generate([GenerationRequest(PROMPTS[0], 1), GenerationRequest(PROMPTS[0], 2)])
    finally:
        handle.remove()
    assert first == second
    assert {shape[0] for shape in calls} == {1}


def test_the_cache_argument_is_read_from_the_forward_signature(loaded) -> None:
    assert cache_argument(loaded.model) in ("cache", "past_key_values")

    class NoCache(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    with pytest.raises(UnsupportedModelError, match="KV cache under none of the names cache, past_key_values"):
        cache_argument(NoCache())


def test_rows_that_end_are_replaced_from_the_end_of_the_batch() -> None:
    running = torch.tensor([True, False, True, False, True, True])
    order = compaction(running)
    assert order.tolist() == [0, 4, 2, 5]
    assert bool(running[order].all())
    assert compaction(torch.tensor([True, True, False])).tolist() == [0, 1]


def test_the_kv_cache_is_allocated_once_and_written_in_place(loaded) -> None:
    """Every step writes into the buffers of the prefill; rows that end move only the rows that replace them."""
    batch = _batch(loaded, PROMPTS)
    eos = _early_eos(loaded, batch)
    buffers = set()
    caches = []

    def record(module, args, kwargs) -> None:
        cache = kwargs[cache_argument(loaded.model)]
        caches.append(cache)
        if cache.layers and cache.layers[0].is_initialized:
            buffers.add(cache.layers[0]._keys.data_ptr())

    handle = loaded.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.inference_mode():
            tokens = decode(
                loaded.model, batch["input_ids"], batch["attention_mask"], torch.arange(3), torch.zeros(3, dtype=torch.int64),
                max_new_tokens=10, eos_ids=eos, choose=greedy,
            )  # fmt: skip
    finally:
        handle.remove()
    assert len({len(row) for row in tokens}) > 1  # rows ended, and were dropped, at different steps
    assert len(set(map(id, caches))) == 1
    assert len(buffers) == 1  # allocated at the prefill, never reallocated nor concatenated
    assert caches[0].layers[0].get_max_length() == batch["input_ids"].shape[1] + 10


def test_models_with_sliding_window_layers_keep_the_dynamic_cache(tiny_checkpoint: Path) -> None:
    from transformers import DynamicCache, MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
    )
    mistral = MistralForCausalLM(config)
    for fixed_shape in (False, True):
        cache, kind = row_cache(mistral, capacity=16, fixed_shape=fixed_shape)
        assert isinstance(cache, DynamicCache) and kind is CacheKind.DYNAMIC
    llama = load_model(str(tiny_checkpoint), device="cpu", dtype="float32").model
    for fixed_shape, expected in ((False, CacheKind.PREALLOCATED), (True, CacheKind.FIXED_SHAPE)):
        cache, kind = row_cache(llama, capacity=16, fixed_shape=fixed_shape)
        assert kind is expected and all(layer.get_max_length() == 16 for layer in cache.layers)


def test_log_probabilities_of_the_chosen_tokens_match_a_forward_over_the_response(loaded) -> None:
    batch = _batch(loaded, PROMPTS)
    with torch.inference_mode():
        tokens, logprobs = decode(
            loaded.model, batch["input_ids"], batch["attention_mask"], torch.arange(3), torch.tensor([5, 6, 7]),
            max_new_tokens=6, eos_ids=[-1], choose=RowSampler(temperature=0.7, top_p=1.0), logprobs=True,
        )  # fmt: skip
        for row, prompt in enumerate(PROMPTS):
            ids = torch.cat([_batch(loaded, [prompt])["input_ids"][0], torch.tensor(tokens[row])])[None]
            scores = loaded.model(input_ids=ids).logits[0, -len(tokens[row]) - 1 : -1].float().log_softmax(-1)
            expected = scores.gather(-1, torch.tensor(tokens[row])[:, None])[:, 0]
            assert torch.allclose(torch.tensor(logprobs[row]), expected, atol=1e-4)


def _sampled(loaded, batch, eos, **options) -> tuple[list[list[int]], list[list[float]]]:
    """Four sampled rows (prompt 0 twice) of the three prompts, with their log-probabilities."""
    with torch.inference_mode():
        return decode(
            loaded.model, batch["input_ids"], batch["attention_mask"], torch.tensor([0, 1, 2, 0]), torch.tensor([5, 6, 7, 8]),
            max_new_tokens=10, eos_ids=eos, choose=RowSampler(temperature=1.5, top_p=1.0), logprobs=True, **options,
        )  # fmt: skip


def _steered_rows(loaded, batch, alpha: float, eos, **options) -> list[list[int]]:
    texts = [render_prompt(loaded.tokenizer, p) for p in PROMPTS]
    highlights = [["about rain."], ["in a list."], ["Hi."]]
    run = PASTA(head_config=[0, 1], alpha=alpha).apply(
        loaded.model, loaded.tokenizer, batch["input_ids"], batch["attention_mask"], highlights, texts=texts
    )
    with torch.inference_mode(), run:
        return decode(
            loaded.model, batch["input_ids"], batch["attention_mask"], torch.tensor([0, 1, 2, 0]), torch.tensor([5, 6, 7, 8]),
            max_new_tokens=10, eos_ids=eos, choose=RowSampler(temperature=1.5, top_p=1.0), rows_changed=run.select_rows, **options,
        )  # fmt: skip


def _ending_early(loaded, batch) -> list[int]:
    """Two tokens that end sampled rows at different steps."""
    free_run, _ = _sampled(loaded, batch, [-1])
    return [free_run[0][3], free_run[2][5]]


def test_fixed_shape_steps_give_the_tokens_of_shrinking_steps(loaded) -> None:
    """Rows that end keep their slot and are fed their end token; the rows still running see exactly what they saw before."""
    batch = _batch(loaded, PROMPTS)
    eos = _ending_early(loaded, batch)
    tokens, logprobs = _sampled(loaded, batch, eos)
    assert len({len(row) for row in tokens}) > 1, "the test needs rows that end at different steps"
    fixed_tokens, fixed_logprobs = _sampled(loaded, batch, eos, fixed_shape=True)
    assert fixed_tokens == tokens
    assert torch.allclose(torch.tensor(sum(fixed_logprobs, [])), torch.tensor(sum(logprobs, [])), atol=1e-5)
    steered = _steered_rows(loaded, batch, 20.0, eos)
    assert steered != tokens
    assert _steered_rows(loaded, batch, 20.0, eos, fixed_shape=True) == steered


def _fresh_compiler() -> None:
    """Forget every compiled graph and the counts of graphs traced."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


def test_a_compiled_step_is_one_graph_from_the_first_step_to_the_last(loaded) -> None:
    """The step is traced once per batch shape and steered head set, whole (fullgraph), and replays with the
    tokens of the eager steps: a new batch, or PASTA at another alpha, reuses it; steering, or not, is never
    replayed from the other's graph. The backend is dynamo's plain one, so no compiler or GPU is needed."""
    batch = _batch(loaded, PROMPTS)
    eos = _ending_early(loaded, batch)
    eager = {alpha: _steered_rows(loaded, batch, alpha, eos) for alpha in (20.0, 2.0)}
    unsteered = _sampled(loaded, batch, eos)[0]
    _fresh_compiler()
    step = torch.compile(loaded.model.forward, backend="eager", fullgraph=True, dynamic=False)
    buffers = set()

    def record(module, args, kwargs) -> None:
        if kwargs["input_ids"].shape[1] == 1:  # a decode step
            buffers.add(kwargs[cache_argument(loaded.model)].layers[0]._keys.data_ptr())

    handle = loaded.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        assert _sampled(loaded, batch, eos, step_forward=step)[0] == unsteered
        assert len(buffers) == 1  # every step of the batch wrote into one buffer
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
        assert _sampled(loaded, batch, eos, step_forward=step)[0] == unsteered  # a second batch of the same shape
        assert _steered_rows(loaded, batch, 20.0, eos, step_forward=step) == eager[20.0]
        assert _steered_rows(loaded, batch, 2.0, eos, step_forward=step) == eager[2.0]
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # unsteered, and PASTA on heads 0-1
        assert _sampled(loaded, batch, eos, step_forward=step)[0] == unsteered
    finally:
        handle.remove()
        _fresh_compiler()
    assert "step_forward" not in loaded.model.__dict__ and "forward" not in loaded.model.__dict__


def test_the_engine_compiles_its_step_under_a_compile_mode(loaded) -> None:
    """--steer-compile default: torch's own compiler (inductor, a C++ compiler on CPUs) gives the eager engine's responses."""
    requests = [GenerationRequest(prompt, seed) for prompt in PROMPTS for seed in (1, 2)]
    settings = GenerationSettings(max_new_tokens=8, temperature=1.5)
    eager = Engine(loaded, settings).generate(requests)
    _fresh_compiler()
    try:
        compiled = Engine(loaded, settings, compile_mode="default")
        assert compiled.generate(requests) == eager
        for before, after in zip(eager, compiled.generate(requests)):
            assert after.unsteered.ids == before.unsteered.ids
            assert torch.allclose(torch.tensor(after.unsteered.log_probs), torch.tensor(before.unsteered.log_probs), atol=1e-4)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    finally:
        _fresh_compiler()


def test_the_prefill_hands_the_output_embedding_a_contiguous_input_and_lets_go(loaded) -> None:
    """The prefill keeps the last position's logits only: the head gets that slice contiguous (one matmul, no
    expanded copy of the output matrix per row); the logits are those of the model's own forward."""
    from pytest_steer.engine.decoding import contiguous_head_input

    batch = _batch(loaded, PROMPTS)
    head = loaded.model.get_output_embeddings()
    seen: list[bool] = []

    def probe(module, args) -> None:
        seen.append(args[0].is_contiguous())

    with torch.inference_mode():
        handle = head.register_forward_pre_hook(probe)
        plain = loaded.model(**batch, logits_to_keep=1).logits
        handle.remove()
        with contiguous_head_input(loaded.model):
            handle = head.register_forward_pre_hook(probe)  # runs after the engine's hook
            fixed = loaded.model(**batch, logits_to_keep=1).logits
            handle.remove()
    assert seen == [False, True]
    torch.testing.assert_close(fixed, plain)
    assert not head._forward_pre_hooks  # removed on leaving
