from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_steer.engine.generation import Engine
from pytest_steer.engine.requests import GenerationRequest, GenerationSettings
from pytest_steer.engine.sampling import RowSampler, uniform
from pytest_steer.model.loading import load_model
from pytest_steer.plan.batches import batch_indices


def test_uniform_draws_are_in_range_deterministic_and_well_spread() -> None:
    seeds = torch.arange(20_000, dtype=torch.int64) * 7919
    draws = uniform(seeds, 3)
    assert draws.dtype == torch.float64
    assert bool(((draws > 0) & (draws < 1)).all())
    assert torch.equal(draws, uniform(seeds, 3))
    assert not torch.equal(draws, uniform(seeds, 4))
    assert abs(draws.mean().item() - 0.5) < 0.01
    assert abs(draws.var().item() - 1 / 12) < 0.005
    counts = torch.histc(draws.float(), bins=10, min=0, max=1)
    assert counts.min().item() > 1_800  # each decile holds about 2,000


def test_a_rows_draw_depends_on_its_seed_only() -> None:
    alone = uniform(torch.tensor([42]), 7)
    in_batch = uniform(torch.tensor([5, 42, 9]), 7)
    assert alone.item() == in_batch[1].item()


def test_sampler_follows_the_distribution_with_one_token_per_row() -> None:
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    scores = probs.log().expand(4000, -1).clone()
    chosen = RowSampler(temperature=1.0, top_p=1.0)(scores, torch.arange(4000), step=0)
    assert chosen.shape == (4000,)
    frequencies = torch.bincount(chosen, minlength=4).float() / 4000
    assert torch.allclose(frequencies, probs, atol=0.03)
    assert frequencies[3] == 0


def test_nucleus_drops_the_tail() -> None:
    scores = torch.tensor([0.6, 0.3, 0.1]).log().expand(2000, -1).clone()
    chosen = RowSampler(temperature=1.0, top_p=0.8)(scores, torch.arange(2000), step=0)
    assert set(chosen.tolist()) == {0, 1}


def test_batches_are_longest_first_and_stable() -> None:
    assert batch_indices([3, 9, 3, 5, 9], 2) == [[1, 4], [3, 0], [2]]


def test_a_planned_stream_holds_up_to_its_batches_rows() -> None:
    from pytest_steer.plan.batches import STREAM_BATCHES, stream_indices

    lengths = list(range(300))
    assert stream_indices(lengths, 64) == batch_indices(lengths, STREAM_BATCHES * 64)


@pytest.mark.parametrize("greedy", [False, True])
def test_responses_do_not_depend_on_the_batch(tiny_checkpoint: Path, greedy: bool) -> None:
    engine = Engine(load_model(str(tiny_checkpoint), device="cpu", dtype="float32"), GenerationSettings(max_new_tokens=6, greedy=greedy))
    requests = [
        GenerationRequest("Write a haiku about rain.", 11),
        GenerationRequest("Name three colours, please, in a list.", 12),
        GenerationRequest("Hi.", 13),
    ]
    together = engine.generate(requests)
    alone = [engine.generate([request])[0] for request in requests]
    assert together == alone
    assert all(1 <= g.n_new_tokens <= 6 for g in together)


def test_different_seeds_give_different_samples(tiny_checkpoint: Path) -> None:
    engine = Engine(load_model(str(tiny_checkpoint), device="cpu", dtype="float32"), GenerationSettings(max_new_tokens=8, temperature=1.5))
    texts = {engine.generate([GenerationRequest("Tell me a story.", seed)])[0].text for seed in range(6)}
    assert len(texts) > 1


def test_unsteered_batches_run_on_the_steered_kernels_and_restore_the_model(tiny_checkpoint: Path) -> None:
    """Every config computes attention with the same functions; steering only adds its bias."""
    loaded = load_model(str(tiny_checkpoint), device="cpu", dtype="float32")
    seen = []
    handle = loaded.model.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    try:
        Engine(loaded, GenerationSettings(max_new_tokens=3)).generate([GenerationRequest("Hi.", 1)])
    finally:
        handle.remove()
    assert set(seen) == {"steer_eager"}
    assert loaded.model.config._attn_implementation == "eager"


def _mixed_requests(engine: Engine) -> list[GenerationRequest]:
    from pytest_steer.steering import PASTA
    from pytest_steer.steering.actadd.method import ActAdd
    from pytest_steer.steering.emphasis import Emphasis

    hidden = engine.loaded.model.config.hidden_size
    vector = torch.linspace(-1.0, 1.0, hidden)
    highlights = ("a list",)
    return [
        GenerationRequest("Name three colours, please, in a list.", 11, highlights),  # the baseline
        GenerationRequest("Name three colours, please, in a list.", 11, highlights, PASTA([0, 1], 10.0)),
        GenerationRequest("Write a haiku about rain, not a list.", 12, highlights, PASTA({1: [0]}, 3.0, "exclude")),
        GenerationRequest("Name three colours, please, in a list.", 13, highlights, ActAdd(1, 4.0, vector=vector)),
        GenerationRequest("Hi, write a list.", 14, highlights, ActAdd(0, -2.0, vector=vector, scope="generated")),
        GenerationRequest("Write a haiku about rain, not a list.", 15, highlights, Emphasis()),
    ]


@pytest.mark.parametrize("greedy", [True, False])
def test_a_response_is_the_same_alone_and_in_a_batch_of_every_config(tiny_checkpoint: Path, greedy: bool) -> None:
    """Rows of the baseline, two PASTA configs, two actadd configs and a prompt method share one batch; each row
    gets its own steering and nothing of the others': its tokens are those it gets alone (float32, up to rounding,
    which these short responses do not reach), and the baseline's log-probabilities match within the padding
    tolerance."""
    engine = Engine(load_model(str(tiny_checkpoint), device="cpu", dtype="float32"), GenerationSettings(max_new_tokens=8, greedy=greedy))
    requests = _mixed_requests(engine)
    alone = [engine.generate([request])[0] for request in requests]
    mixed = engine.generate(requests)
    assert [g.text for g in mixed] == [g.text for g in alone]
    assert len({g.text for g in alone}) > 3, "the configs must steer the prompt differently for this test to mean anything"
    assert mixed[0].unsteered is not None and alone[0].unsteered is not None
    assert all(g.unsteered is None for g in mixed[1:])  # only the baseline's rows serve the fluency score
    torch.testing.assert_close(torch.tensor(mixed[0].unsteered.log_probs), torch.tensor(alone[0].unsteered.log_probs), atol=1e-4, rtol=0)
    reordered = engine.generate(requests[::-1])[::-1]  # the order of a batch changes nothing either
    assert [g.text for g in reordered] == [g.text for g in mixed]


def test_steering_of_a_shared_batch_is_not_left_behind(tiny_checkpoint: Path) -> None:
    engine = Engine(load_model(str(tiny_checkpoint), device="cpu", dtype="float32"), GenerationSettings(max_new_tokens=4, greedy=True))
    model = engine.loaded.model
    before = engine.generate([GenerationRequest("Hi, write a list.", 1)])
    engine.generate(_mixed_requests(engine))
    layers = model.model.layers
    assert not any(layer._forward_hooks for layer in layers) and not model.model._forward_pre_hooks
    assert not any(hasattr(layer.self_attn, "_pytest_steer_layer") for layer in layers)
    assert engine.generate([GenerationRequest("Hi, write a list.", 1)]) == before


def test_a_method_that_cannot_share_a_batch_is_planned_apart() -> None:
    from pytest_steer.steering.method import SteeringMethod, shares_batches
    from pytest_steer.steering.registry import method_registry

    class WholeBatches(SteeringMethod):
        name = "whole"

        def steer(self, batch):  # type: ignore[override]
            return super().steer(batch)

    builtin = method_registry()
    assert shares_batches(None) and all(shares_batches(builtin[name]) for name in ("pasta", "actadd", "emphasis"))
    assert not shares_batches(WholeBatches)


@pytest.mark.parametrize("greedy", [True, False])
def test_rows_that_enter_a_running_batch_get_the_responses_they_get_alone(tiny_checkpoint: Path, greedy: bool) -> None:
    """More rows than slots: queued rows enter as others end (each config's, several trials of one prompt, rows that
    end early and late); each gets its own response, as alone, and the baseline's log-probabilities and prompt
    prefills for the fluency score."""
    engine = Engine(load_model(str(tiny_checkpoint), device="cpu", dtype="float32"), GenerationSettings(max_new_tokens=8, greedy=greedy))
    requests = _mixed_requests(engine)
    requests += [GenerationRequest("Hi.", 20 + trial) for trial in range(3)]  # trials of one prompt: one prefill
    alone = [engine.generate([request])[0] for request in requests]
    from pytest_steer.engine import stream

    entries: list[int] = []
    enter = stream.Stream.enter

    def counted(self, rows, *args):
        entries.append(len(rows))
        return enter(self, rows, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stream.Stream, "enter", counted)
        streamed = engine.generate(requests, slots=3)
    rows = 7 if greedy else 9  # greedy trials of one prompt share one response
    assert entries[0] == 3 and sum(entries) == rows and len(entries) > 1  # rows entered mid-run
    assert [g.text for g in streamed] == [g.text for g in alone]
    assert [g.n_new_tokens for g in streamed] == [g.n_new_tokens for g in alone]
    for got, own in zip(streamed, alone):
        assert (got.unsteered is None) == (own.unsteered is None)
        if own.unsteered is not None:
            torch.testing.assert_close(torch.tensor(got.unsteered.log_probs), torch.tensor(own.unsteered.log_probs), atol=1e-4, rtol=0)
            assert got.unsteered.prompt is not None and got.unsteered.prompt.ids == own.unsteered.prompt.ids
    assert [g.text for g in engine.generate(requests, slots=5)] == [g.text for g in alone]  # whatever the slots
