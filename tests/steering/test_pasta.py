from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from pytest_steer.steering import (
    PASTA,
    HeadConfigError,
    SteeringError,
    SteeringWarning,
    UnsupportedModelError,
    prompt_key_bias,
)

PROMPTS = ["write a short poem about the sea . answer in all caps , do not use any commas", "tell me a story"]
SUBSTRINGS = [["answer in all caps"], ["a story"]]
# Token positions of SUBSTRINGS in the templated, BOS-prefixed, left-padded batch of PROMPTS.
SPAN_POSITIONS = [range(11, 15), range(19, 21)]
PADDING = [0, 14]
PROMPT_LENGTH = 24


def logits_of(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, tiny) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=tiny.positions(attention_mask)).logits


def expected_bias(scale_position: str, alpha: float, keys: int) -> torch.Tensor:
    """The PASTA bias of every key of the PROMPTS batch, built from known positions."""
    bias = torch.zeros(2, keys)
    for row in range(2):
        for key in range(PADDING[row], PROMPT_LENGTH):
            highlighted = key in SPAN_POSITIONS[row]
            if scale_position == "include" and not highlighted:
                bias[row, key] = -math.log(alpha)
            elif scale_position == "exclude" and not highlighted:
                bias[row, key] = math.log(alpha)
            elif scale_position == "generation":
                bias[row, key] = math.log(alpha)
    return bias


@pytest.mark.parametrize("scale_position", ["include", "exclude", "generation"])
def test_steered_heads_get_softmax_of_logits_plus_bias_and_other_heads_are_untouched(tiny, scale_position) -> None:
    model = tiny.model("llama", "eager")
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    assert input_ids.shape[1] == PROMPT_LENGTH
    # Two tokens past the prompt stand for generated keys, which must get no bias.
    extra = torch.tensor([[30, 31], [32, 33]])
    full_ids = torch.cat([input_ids, extra], dim=1)
    full_mask = torch.cat([attention_mask, torch.ones_like(extra)], dim=1)
    alpha = 10.0 if scale_position != "exclude" else 0.1

    def attentions() -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return model(
                input_ids=full_ids,
                attention_mask=full_mask,
                position_ids=tiny.positions(full_mask),
                output_attentions=True,
            ).attentions

    plain = attentions()
    pasta = PASTA(head_config={1: [0, 2]}, alpha=alpha, scale_position=scale_position)
    with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS, texts=texts):
        steered = attentions()

    bias = expected_bias(scale_position, alpha, full_ids.shape[1])
    expected = torch.softmax(plain[1][:, [0, 2]].log() + bias[:, None, None, :], dim=-1)
    for row in range(2):
        real_queries = slice(PADDING[row], None)  # padding queries attend to nothing real
        torch.testing.assert_close(steered[1][row, [0, 2], real_queries], expected[row, :, real_queries], atol=1e-6, rtol=1e-5)
    assert torch.equal(steered[0], plain[0])
    assert torch.equal(steered[1][:, [1, 3]], plain[1][:, [1, 3]])
    assert (steered[1][:, [0, 2]] - plain[1][:, [0, 2]]).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "qwen3"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_left_padded_row_matches_that_row_alone(tiny, family: str, attn: str) -> None:
    model = tiny.model(family, attn)
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    pasta = PASTA(head_config=[1, 2], alpha=10.0)
    with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS, texts=texts):
        batched = logits_of(model, input_ids, attention_mask, tiny)
    plain = logits_of(model, input_ids, attention_mask, tiny)
    for row in range(2):
        alone_ids, alone_mask = tiny.batch(texts[row : row + 1])
        with pasta.apply(model, tiny.tokenizer, alone_ids, alone_mask, SUBSTRINGS[row : row + 1], texts=texts[row : row + 1]):
            alone = logits_of(model, alone_ids, alone_mask, tiny)
        torch.testing.assert_close(batched[row, PADDING[row] :], alone[0], atol=2e-5, rtol=1e-5)
        assert (batched[row, PADDING[row] :] - plain[row, PADDING[row] :]).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_eager_and_sdpa_give_the_same_steered_logits(tiny, family: str) -> None:
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    pasta = PASTA(head_config={0: [1], 2: [0, 3], 3: [0, 1, 2, 3]}, alpha=7.5)
    results = []
    for attn in ("eager", "sdpa"):
        model = tiny.model(family, attn)
        with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS, texts=texts):
            results.append(logits_of(model, input_ids, attention_mask, tiny))
    for row in range(2):
        torch.testing.assert_close(results[0][row, PADDING[row] :], results[1][row, PADDING[row] :], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_alpha_one_gives_exactly_the_unsteered_logits(tiny, attn: str) -> None:
    model = tiny.model("llama", attn)
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    plain = logits_of(model, input_ids, attention_mask, tiny)
    for scale_position in ("include", "exclude", "generation"):
        pasta = PASTA(head_config=[0, 1, 2, 3], alpha=1.0, scale_position=scale_position)
        with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS, texts=texts):
            assert torch.equal(logits_of(model, input_ids, attention_mask, tiny), plain)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_row_without_spans_is_unsteered_inside_a_steered_batch(tiny, attn: str) -> None:
    model = tiny.model("llama", attn)
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    plain = logits_of(model, input_ids, attention_mask, tiny)
    with PASTA([0, 1, 2, 3], 10.0).apply(model, tiny.tokenizer, input_ids, attention_mask, [SUBSTRINGS[0], []]) as run:
        steered = logits_of(model, input_ids, attention_mask, tiny)
    assert run.steered_rows == [True, False]
    torch.testing.assert_close(steered[1, PADDING[1] :], plain[1, PADDING[1] :], atol=1e-6, rtol=0)
    assert (steered[0] - plain[0]).abs().max() > 1e-2


@pytest.mark.parametrize("rows", [2, 1], ids=["padded", "unpadded"])  # unpadded SDPA gets no mask at all
@pytest.mark.parametrize(("family", "attn"), [("llama", "eager"), ("llama", "sdpa"), ("qwen2", "eager"), ("qwen2", "sdpa")])
def test_cached_generation_equals_full_recomputation(tiny, family: str, attn: str, rows: int) -> None:
    model = tiny.model(family, attn)
    texts = tiny.chat(PROMPTS[:rows])
    input_ids, attention_mask = tiny.batch(texts)
    new_tokens = 6
    # Head subsets: SDPA decode folds query heads onto key/value heads, the recomputation does not.
    pasta = PASTA(head_config={1: [0, 3], 2: [1], 3: [0, 1, 2, 3]}, alpha=10.0)
    with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS[:rows], texts=texts):
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
        generated = out.sequences[:, input_ids.shape[1] :]
        for step in range(new_tokens):
            ids = torch.cat([input_ids, generated[:, :step]], dim=1)
            mask = torch.cat([attention_mask, torch.ones_like(generated[:, :step])], dim=1)
            last = logits_of(model, ids, mask, tiny)[:, -1]
            torch.testing.assert_close(out.logits[step], last, atol=5e-5, rtol=1e-5)
            last[:, tiny.tokenizer.eos_token_id] = -math.inf  # min_new_tokens forbids stopping
            assert torch.equal(last.argmax(-1), generated[:, step])
    with torch.no_grad():
        plain = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=1,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    assert (plain.logits[0] - out.logits[0]).abs().max() > 1e-2


def test_beam_search_rows_are_steered_like_their_prompt(tiny) -> None:
    model = tiny.model("llama", "eager")
    texts = tiny.chat(PROMPTS)
    pasta = PASTA(head_config=[1, 2], alpha=10.0)

    def beams(rows: slice) -> torch.Tensor:
        input_ids, attention_mask = tiny.batch(texts[rows])
        with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS[rows], texts=texts[rows]):
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=4,
                    min_new_tokens=4,
                    num_beams=2,
                    do_sample=False,
                )
        return out[:, input_ids.shape[1] :]

    together = beams(slice(0, 2))
    assert torch.equal(together[0], beams(slice(0, 1))[0])
    assert torch.equal(together[1], beams(slice(1, 2))[0])


@pytest.mark.parametrize("scale_position", ["include", "exclude", "generation"])
def test_overlapping_spans_act_as_their_union(tiny, scale_position: str) -> None:
    model = tiny.model("llama", "eager")
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    pasta = PASTA(head_config=[0, 1, 2, 3], alpha=4.0, scale_position=scale_position)
    with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, [["answer in all caps"], ["a story"]]) as single:
        one_span = logits_of(model, input_ids, attention_mask, tiny)
    pieces = [["answer in all", "in all caps", "all"], ["a sto", "a story", "story"]]
    with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, pieces) as overlapping:
        union = logits_of(model, input_ids, attention_mask, tiny)
    assert overlapping.spans[0] == [(11, 14), (12, 15), (13, 14)]
    assert torch.equal(overlapping.key_bias, single.key_bias)
    assert torch.equal(union, one_span)


def test_missing_substrings_are_reported_per_row_with_a_warning(tiny) -> None:
    model = tiny.model("llama", "eager")
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    with pytest.warns(SteeringWarning, match="row 0: 'purple'; row 1: 'the sea'"):
        run = PASTA([1], 10.0).apply(model, tiny.tokenizer, input_ids, attention_mask, [["purple", "all caps"], ["the sea"]])
    assert run.missing == [["purple"], ["the sea"]]
    assert run.spans == [[(13, 15)], []]
    assert run.steered_rows == [True, False]


def test_key_bias_semantics() -> None:
    highlight = torch.tensor([[False, False, True, True, False], [False] * 5])
    real = torch.tensor([[False, True, True, True, True], [True] * 5])
    log10 = math.log(10.0)
    include = prompt_key_bias(highlight, real, 10.0, "include")
    exclude = prompt_key_bias(highlight, real, 10.0, "exclude")
    generation = prompt_key_bias(highlight, real, 10.0, "generation")
    torch.testing.assert_close(include[0], torch.tensor([0, -log10, 0, 0, -log10]))
    torch.testing.assert_close(exclude[0], torch.tensor([0, log10, 0, 0, log10]))
    torch.testing.assert_close(generation[0], torch.tensor([0, log10, log10, log10, log10]))
    for bias in (include, exclude, generation):
        assert not bias[1].any()  # no span, no steering


def assert_pristine(model, plain_logits, state, tiny, input_ids, attention_mask) -> None:
    assert all(not module._forward_pre_hooks for module in model.modules())
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    assert torch.equal(logits_of(model, input_ids, attention_mask, tiny), plain_logits)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_the_model_is_restored_after_the_block_and_after_an_exception(tiny, attn: str) -> None:
    model = tiny.model("llama", attn)
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    plain = logits_of(model, input_ids, attention_mask, tiny)
    pasta = PASTA([0, 1, 2, 3], 10.0)

    with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS):
        assert not torch.equal(logits_of(model, input_ids, attention_mask, tiny), plain)
    assert_pristine(model, plain, state, tiny, input_ids, attention_mask)

    with pytest.raises(RuntimeError, match="inside the block"):
        with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS):
            logits_of(model, input_ids, attention_mask, tiny)
            raise RuntimeError("inside the block")
    assert_pristine(model, plain, state, tiny, input_ids, attention_mask)

    with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS):
        with pytest.raises(SteeringError, match="already inside"):
            with pasta.apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS):
                pass
    assert_pristine(model, plain, state, tiny, input_ids, attention_mask)


def test_other_inputs_inside_the_block_are_refused(tiny) -> None:
    model = tiny.model("llama", "eager")
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    with PASTA([1], 10.0).apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS):
        with pytest.raises(SteeringError, match="steered prompt batch"):
            logits_of(model, input_ids[:, 1:], attention_mask[:, 1:], tiny)
        with pytest.raises(SteeringError, match="steered prompt batch"):
            logits_of(model, input_ids.flip(0), attention_mask.flip(0), tiny)


@pytest.mark.parametrize(
    ("model_type", "config"),
    # bloom's attention bypasses the interface from transformers 5.0 to 5.25 at least (falcon's joined it in 5.25)
    [("bloom", {"hidden_size": 32, "n_head": 4, "n_layer": 2}), ("mamba", {"hidden_size": 32, "num_hidden_layers": 2})],
)
def test_models_whose_attention_bypasses_the_interface_are_refused_by_type(tiny, model_type: str, config: dict) -> None:
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, vocab_size=len(tiny.tokenizer), **config))
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS[:1]))
    with pytest.raises(UnsupportedModelError, match=f"cannot steer '{model_type}'.*attention interface"):
        PASTA([0], 10.0).apply(model, tiny.tokenizer, input_ids, attention_mask, [["all caps"]])
    with pytest.raises(UnsupportedModelError, match=f"cannot steer '{model_type}'"):
        PASTA.create({"alpha": 10.0}, {"model_type": model_type, "num_hidden_layers": 2})


def test_encoder_decoder_configs_are_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="decoder-only models; 't5' is an encoder-decoder"):
        PASTA.create({"alpha": 10.0}, {"model_type": "t5", "is_encoder_decoder": True, "num_hidden_layers": 2})


def test_a_layer_that_bypasses_the_interface_is_caught_on_the_first_forward(tiny) -> None:
    model = tiny.model("llama", "eager")
    attention = model.model.layers[2].self_attn
    attention.forward = lambda hidden_states, *args, **kwargs: (torch.zeros_like(hidden_states), None)
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS))
    with PASTA([1, 2], 10.0).apply(model, tiny.tokenizer, input_ids, attention_mask, SUBSTRINGS):
        with pytest.raises(UnsupportedModelError, match="cannot steer 'llama': the attention of layer 2 did not run through"):
            logits_of(model, input_ids, attention_mask, tiny)


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flex_attention"])
def test_attention_implementations_that_ignore_the_mask_are_refused(tiny, implementation: str) -> None:
    model = tiny.model("llama", "eager")
    model.config._attn_implementation = implementation
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS[:1]))
    with pytest.raises(UnsupportedModelError, match=f"'{implementation}'.*attn_implementation='eager' or 'sdpa'"):
        PASTA([0], 10.0).apply(model, tiny.tokenizer, input_ids, attention_mask, [["all caps"]])


@pytest.mark.parametrize(
    ("head_config", "message"),
    [([4], r"layer 4, but the model has 4 layers \(0-3\)"), ({1: [0, 4]}, r"head 4 of layer 1, but the model has 4")],
)
def test_layers_and_heads_out_of_range_are_refused(tiny, head_config, message: str) -> None:
    model = tiny.model("llama", "eager")
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS[:1]))
    with pytest.raises(HeadConfigError, match=message):
        PASTA(head_config, 10.0).apply(model, tiny.tokenizer, input_ids, attention_mask, [["all caps"]])


def test_a_gpt2_checkpoint_is_planned_from_its_own_config_names_and_an_absent_layer_refused(tmp_path) -> None:
    from pytest_steer.plan.collection import plan_cases
    from pytest_steer.plan.method_spec import parse_method
    from pytest_steer.plan.options import SteerSettings

    checkpoint = tmp_path / "gpt2"
    AutoConfig.for_model("gpt2", n_layer=2, n_head=4, n_embd=32).save_pretrained(checkpoint)  # config.json says n_layer, n_head
    plan = plan_cases(SteerSettings(model=str(checkpoint), limit=4, alpha=(10.0,)))
    assert {case.config.name for case in plan.cases} == {"baseline", "pasta_alpha10"}
    config = {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 32}
    PASTA.create({"alpha": 10.0}, config).check_model_config(config)
    with pytest.raises(pytest.Collector.CollectError, match=r"heads '5' names layer 5, but the model has 2 layers \(0-1\)"):
        plan_cases(SteerSettings(model=str(checkpoint), limit=4, method=(parse_method("pasta:alpha=10,heads=5"),)))
    with pytest.raises(HeadConfigError, match=r"names layer 2, but the model has 2 layers \(0-1\)"):
        PASTA([2], 10.0).check_model_config(config)
    with pytest.raises(HeadConfigError, match="names head 4 of layer 1, but the model has 4 attention heads"):
        PASTA({1: [4]}, 10.0).check_model_config(config)
    with pytest.raises(SteeringError, match="PASTA cannot read the layer count of this gpt2 model from its config"):
        PASTA.create({"alpha": 10.0}, {"model_type": "gpt2"})


@pytest.mark.parametrize(("alpha", "scale_position"), [(0.0, "include"), (-1.0, "include"), (math.inf, "include"), (2.0, "middle")])
def test_bad_parameters_are_refused(alpha: float, scale_position: str) -> None:
    with pytest.raises(ValueError):
        PASTA([0], alpha, scale_position)  # type: ignore[arg-type]


def test_one_substring_list_per_row_is_required(tiny) -> None:
    model = tiny.model("llama", "eager")
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS))
    with pytest.raises(ValueError, match="one list per row: got 1 lists for 2 rows"):
        PASTA([0], 10.0).apply(model, tiny.tokenizer, input_ids, attention_mask, [["all caps"]])
