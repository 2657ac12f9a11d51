"""The chat template's prefix, prefilled once per batch: the same responses as prefilling every prompt whole, and
no sharing past a steered token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_steer.engine import decoding
from pytest_steer.engine.generation import Engine
from pytest_steer.engine.prefix import SharedPrefix, shared_tokens
from pytest_steer.engine.requests import GenerationRequest, GenerationSettings
from pytest_steer.model.loading import load_model
from pytest_steer.model.prompts import template_prefix
from pytest_steer.steering import PASTA
from pytest_steer.steering.actadd.method import ActAdd
from pytest_steer.steering.emphasis import Emphasis

PROMPTS = ("Name three colours, please, in a list.", "Write a haiku about rain, not a list.", "Hi, write a list.")


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every shared prefix a batch's cache started with."""
    lengths: list[int] = []
    fill = decoding.fill_prefix

    def recording(cache: object, prefix: SharedPrefix, attention_mask: torch.Tensor) -> None:
        lengths.append(prefix.length)
        fill(cache, prefix, attention_mask)

    monkeypatch.setattr(decoding, "fill_prefix", recording)
    return lengths


def engines(checkpoint: Path, greedy: bool) -> tuple[Engine, Engine]:
    loaded = load_model(str(checkpoint), device="cpu", dtype="float32")
    settings = GenerationSettings(max_new_tokens=8, greedy=greedy)
    return Engine(loaded, settings), Engine(loaded, settings, share_prefix=False)


def test_the_template_prefix_is_the_system_prompt_and_the_user_turns_opening(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = load_model(str(tiny_checkpoint), device="cpu", dtype="float32").tokenizer
    prefix = template_prefix(tokenizer)
    assert tokenizer.decode(prefix).endswith("<|im_start|>user\n")
    assert "You are a helpful AI assistant" in tokenizer.decode(prefix)
    monkeypatch.setattr(tokenizer, "chat_template", None)  # the loaded model is shared: put it back after
    assert template_prefix(tokenizer) == ()


def test_shared_tokens_count_what_every_left_padded_row_starts_with() -> None:
    ids = torch.tensor([[0, 0, 5, 6, 7, 9], [5, 6, 7, 8, 1, 2], [0, 5, 6, 4, 4, 4]])
    mask = (ids != 0).long()
    assert shared_tokens(ids, mask, (5, 6, 7, 8)) == 2  # the third row leaves the prefix at its third token
    assert shared_tokens(ids[:2], mask[:2], (5, 6, 7, 8)) == 3
    assert shared_tokens(ids, mask, (3,)) == 0


@pytest.mark.parametrize("greedy", [True, False])
def test_a_shared_prefix_changes_no_response(tiny_checkpoint: Path, greedy: bool, shared: list[int]) -> None:
    sharing, whole = engines(tiny_checkpoint, greedy)
    highlights = ("a list",)
    requests = [
        request
        for seed, prompt in enumerate(PROMPTS)
        for request in (
            GenerationRequest(prompt, seed, highlights),
            GenerationRequest(prompt, seed, highlights, PASTA([0, 1], 10.0)),
            GenerationRequest(prompt, seed, highlights, PASTA({1: [0]}, 3.0, "exclude")),
            GenerationRequest(prompt, seed, highlights, Emphasis()),
        )
    ]
    with_prefix = sharing.generate(requests)
    assert shared == [len(sharing.template)]  # the whole template prefix, once for the batch
    without = whole.generate(requests)
    assert len(shared) == 1
    assert [g.text for g in with_prefix] == [g.text for g in without]
    assert len({g.text for g in without}) > 3, "the configs must steer differently for this test to mean anything"
    for a, b in zip(with_prefix, without):
        if a.unsteered is not None:
            torch.testing.assert_close(torch.tensor(a.unsteered.log_probs), torch.tensor(b.unsteered.log_probs), atol=1e-4, rtol=0)
            assert a.unsteered.prompt is not None and b.unsteered.prompt is not None  # the fluency score's prefill is whole
            for (keys, values), (keys_b, values_b) in zip(a.unsteered.prompt.layers, b.unsteered.prompt.layers):
                torch.testing.assert_close(keys, keys_b, atol=1e-5, rtol=0)
                torch.testing.assert_close(values, values_b, atol=1e-5, rtol=0)


def test_no_prefix_is_shared_past_a_steered_token(tiny_checkpoint: Path, shared: list[int]) -> None:
    """A highlight inside the system prompt steers every query after it: the prefix stops before it (here below
    the minimum, so nothing is shared, not even computed), and the responses are those of whole prefills."""
    sharing, whole = engines(tiny_checkpoint, greedy=True)
    requests = [GenerationRequest(PROMPTS[0], 1), GenerationRequest(PROMPTS[0], 1, ("helpful AI assistant",), PASTA([0, 1], 10.0))]
    with_prefix = sharing.generate(requests)
    assert shared == []
    assert [g.text for g in with_prefix] == [g.text for g in whole.generate(requests)]


def test_a_block_that_does_not_say_what_it_leaves_unsteered_shares_nothing(tiny_checkpoint: Path, shared: list[int]) -> None:
    """actadd adds its vector at every prompt position (scope all) and does not say otherwise."""
    sharing, whole = engines(tiny_checkpoint, greedy=True)
    vector = torch.randn(sharing.loaded.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    requests = [GenerationRequest(PROMPTS[0], 1), GenerationRequest(PROMPTS[0], 1, (), ActAdd(1, 4.0, vector=vector))]
    with_prefix = sharing.generate(requests)
    assert shared == []
    assert [g.text for g in with_prefix] == [g.text for g in whole.generate(requests)]
