from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, Gemma2Config, Gemma2ForCausalLM

from pytest_steer.engine.decoding import cache_argument
from pytest_steer.model.config import HIDDEN_SIZE, LAYER_COUNT, config_size
from pytest_steer.plan.data import PromptRow, Selection, load_rows, select
from pytest_steer.plan.method_spec import method_sweep, parse_method
from pytest_steer.steering import ActAdd, RunContext, SteeringError, SteeringWarning, UnsupportedModelError
from pytest_steer.steering.actadd.instruction_vectors import NO_INSTRUCTION_TEXT, NO_SHARED_ID, remove_text
from pytest_steer.steering.actadd.method import steer_rows
from pytest_steer.steering.decoder import decoder_layers
from pytest_steer.steering.method import PromptBatch
from pytest_steer.steering.registry import bind_method_parameters

PROMPTS = ["write a short poem about the sea . answer in all caps , do not use any commas", "tell me a story", "hello world"]
LAYER = 2
COEFF = 3.0


def gemma2(tiny, attn: str):
    config = Gemma2Config(
        hidden_size=64,
        head_dim=16,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=len(tiny.tokenizer),
        max_position_embeddings=256,
        sliding_window=8,
        pad_token_id=tiny.tokenizer.pad_token_id,
        bos_token_id=tiny.tokenizer.bos_token_id,
        eos_token_id=tiny.tokenizer.eos_token_id,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    return Gemma2ForCausalLM(config).eval()


def family_model(tiny, family: str, attn: str):
    return gemma2(tiny, attn) if family == "gemma2" else tiny.model(family, attn)


def row_vectors(hidden: int, rows: int = len(PROMPTS)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(rows, hidden, generator=generator)


class ReferenceHook:
    """Adds coeff × vector to the layer's output at positions >= ``first`` of one unpadded row."""

    def __init__(self, model, vector: torch.Tensor, first: int) -> None:
        self.vector, self.first, self.seen = vector, first, 0
        self.handle = decoder_layers(model)[LAYER].register_forward_hook(self.add)

    def add(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        positions = self.seen + torch.arange(hidden.shape[1])
        self.seen += hidden.shape[1]
        steered = (positions >= self.first).to(hidden.dtype)[None, :, None]
        hidden = hidden + steered * COEFF * self.vector.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def run_steps(model, input_ids, attention_mask, tokens: list[torch.Tensor], select=None, prompt_rows=None):
    """Prefill logits at every position, then one decode step per entry of ``tokens`` (one token per response row)."""
    cache, name = DynamicCache(config=model.config), cache_argument(model)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        prefill = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, **{name: cache}).logits
        if prompt_rows is not None:
            cache.batch_select_indices(prompt_rows)
            select(prompt_rows)
            attention_mask, positions = attention_mask[prompt_rows], positions[prompt_rows]
        position = positions[:, -1:]
        steps = []
        for token in tokens:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
            position = position + 1
            out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position, **{name: cache})
            steps.append(out.logits[:, -1])
    return prefill, steps


# Gemma 2 (logit softcapping) runs eager attention only.
FAMILY_KERNELS = [("llama", "eager"), ("llama", "sdpa"), ("qwen2", "eager"), ("qwen2", "sdpa"), ("gemma2", "eager")]


@pytest.mark.parametrize("scope", ["all", "generated"])
@pytest.mark.parametrize(("family", "attn"), FAMILY_KERNELS)
def test_each_padded_row_matches_a_reference_hook_on_the_row_alone_in_prefill_and_decode(tiny, family, attn, scope) -> None:
    model = family_model(tiny, family, attn)
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS))
    vectors = row_vectors(model.config.hidden_size)
    prompt_rows = torch.tensor([0, 0, 1, 2, 2])  # the decode loop fans prompts out to their responses
    tokens = [torch.tensor([7, 8, 9, 10, 11]), torch.tensor([12, 13, 14, 15, 16])]

    run = steer_rows(model, input_ids, attention_mask, vectors, coeff=COEFF, layer=LAYER, scope=scope)
    with run:
        prefill, steps = run_steps(model, input_ids, attention_mask, tokens, run.select_rows, prompt_rows)

    for response, prompt in enumerate(prompt_rows.tolist()):
        real = attention_mask[prompt].bool()
        alone = input_ids[prompt, real][None]
        length = alone.shape[1]
        hook = ReferenceHook(model, vectors[prompt], 0 if scope == "all" else length - 1)
        try:
            ref_prefill, ref_steps = run_steps(model, alone, torch.ones_like(alone), [t[response : response + 1] for t in tokens])
        finally:
            hook.handle.remove()
        if response == 0 or prompt_rows[response - 1] != prompt:
            torch.testing.assert_close(prefill[prompt, real], ref_prefill[0], atol=2e-5, rtol=1e-4)
        for step, ref_step in zip(steps, ref_steps):
            torch.testing.assert_close(step[response], ref_step[0], atol=2e-5, rtol=1e-4)


def test_steering_changes_the_logits_and_leaving_the_block_restores_the_model(tiny) -> None:
    model = tiny.model("llama", "eager")
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS))
    plain, _ = run_steps(model, input_ids, attention_mask, [])
    vector = row_vectors(model.config.hidden_size, 1)[0]
    with ActAdd(layer=LAYER, coeff=COEFF, vector=vector).apply(model, tiny.tokenizer, input_ids, attention_mask):
        steered, _ = run_steps(model, input_ids, attention_mask, [])
        with pytest.raises(SteeringError, match="already inside an ActAdd.apply"):
            ActAdd(layer=LAYER, coeff=COEFF, vector=vector).apply(model, tiny.tokenizer, input_ids, attention_mask).__enter__()
    after, _ = run_steps(model, input_ids, attention_mask, [])
    real = attention_mask.bool()
    assert not torch.allclose(steered[real], plain[real], atol=1e-3)
    assert torch.equal(after, plain)
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())


def test_padding_positions_are_never_touched(tiny) -> None:
    model = tiny.model("llama", "eager")
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS))
    layer = decoder_layers(model)[LAYER]
    captured = []

    def capture(module, args, output):
        captured.append(output.clone())

    handle = layer.register_forward_hook(capture)
    run_steps(model, input_ids, attention_mask, [])
    handle.remove()
    with steer_rows(model, input_ids, attention_mask, row_vectors(model.config.hidden_size), coeff=COEFF, layer=LAYER):
        handle = layer.register_forward_hook(capture)  # after the steering hook: sees the steered output
        try:
            run_steps(model, input_ids, attention_mask, [])
        finally:
            handle.remove()
    plain, steered = captured
    padding = ~attention_mask.bool()
    assert padding.sum() > 0
    assert torch.equal(steered[padding], plain[padding])
    assert not torch.allclose(steered[~padding], plain[~padding])


def test_coeff_zero_is_the_identity_and_installs_nothing(tiny) -> None:
    model = tiny.model("qwen2", "sdpa")
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS))
    plain, plain_steps = run_steps(model, input_ids, attention_mask, [torch.tensor([7, 8, 9])])
    method = ActAdd.create({"layer": LAYER, "coeff": 0}, model.config)
    assert method.is_identity and method.params() == {"layer": LAYER, "coeff": 0.0, "scope": "all", "source": "instructions"}
    with method.apply(model, tiny.tokenizer, input_ids, attention_mask, texts=tiny.chat(PROMPTS)):
        assert all(not module._forward_hooks for module in model.modules())
        steered, steered_steps = run_steps(model, input_ids, attention_mask, [torch.tensor([7, 8, 9])])
    assert torch.equal(steered, plain) and torch.equal(steered_steps[0], plain_steps[0])


def test_generate_inside_the_block_is_steered_like_the_reference_hook(tiny) -> None:
    model = tiny.model("llama", "sdpa")
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS))
    vector = row_vectors(model.config.hidden_size, 1)[0]
    with ActAdd(layer=LAYER, coeff=COEFF, vector=vector, scope="generated").apply(model, tiny.tokenizer, input_ids, attention_mask):
        batched = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=4, do_sample=False)
    for row in range(len(PROMPTS)):
        alone = input_ids[row, attention_mask[row].bool()][None]
        hook = ReferenceHook(model, vector, alone.shape[1] - 1)
        try:
            single = model.generate(input_ids=alone, attention_mask=torch.ones_like(alone), max_new_tokens=4, do_sample=False)
        finally:
            hook.handle.remove()
        assert batched[row, -4:].tolist() == single[0, -4:].tolist()


def split_rows() -> list[PromptRow]:
    """Split-IFEval-like rows: two instruction ids, three prompts each, one prompt holding both."""
    rows = [
        ("a", "write a short poem about the sea . answer in all caps .", ["answer in all caps ."], ["change_case:english_capital"]),
        ("b", "tell me a story . answer in all caps .", ["answer in all caps ."], ["change_case:english_capital"]),
        ("c", "hello world . do not use any commas .", ["do not use any commas ."], ["punctuation:no_comma"]),
        ("d", "write a poem about the sky . do not use any commas .", ["do not use any commas ."], ["punctuation:no_comma"]),
        (
            "e",
            "tell me about the cat . answer in all caps . do not use any commas .",
            ["answer in all caps .", "do not use any commas ."],
            ["change_case:english_capital", "punctuation:no_comma"],
        ),
        (
            "f",
            "the dog sat on the mat . end with is there anything else i can help with ?",
            ["end with is there anything else i can help with ?"],
            ["startend:end_checker"],
        ),
    ]
    return [PromptRow(key, prompt, tuple(texts), tuple(ids), tuple({} for _ in ids)) for key, prompt, texts, ids in rows]


def last_token_hidden(model, tokenizer, prompt: str) -> torch.Tensor:
    """The reference activation: output_hidden_states of the prompt alone (no padding)."""
    ids = tokenizer(tiny_chat(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[LAYER + 1][0, -1]


def tiny_chat(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def bound(method: ActAdd, model, tokenizer, rows, cache_dir=None, loads: list | None = None) -> ActAdd:
    def load():
        if loads is not None:
            loads.append(1)
        return model, tokenizer

    method.bind_run(RunContext(prompts=rows, model_key={"name": "tiny"}, cache_dir=cache_dir, load_model=load))
    return method


def test_instruction_vectors_are_leave_one_out_means_of_the_other_prompts_differences(tiny, tmp_path) -> None:
    model, tokenizer, rows = tiny.model("llama", "eager"), tiny.tokenizer, split_rows()
    loads: list[int] = []
    method = bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows, tmp_path, loads)

    def difference(row: PromptRow, text: str) -> torch.Tensor:
        without = remove_text(row.prompt, text)
        return last_token_hidden(model, tokenizer, row.prompt) - last_token_hidden(model, tokenizer, without)

    diffs = {(row.key, i): difference(row, text) for row in rows for i, text in zip(row.instruction_id_list, row.instructions)}
    texts = tiny.chat([row.prompt for row in rows])
    input_ids, attention_mask = tiny.batch(texts)
    run = method.apply(model, tokenizer, input_ids, attention_mask, texts=texts)
    applied = run._steps[0][1].additions / COEFF
    for index, row in enumerate(rows):
        expected = torch.zeros(model.config.hidden_size)
        for instruction_id in row.instruction_id_list:
            others = [
                diffs[(other.key, instruction_id)] for other in rows if other is not row and instruction_id in other.instruction_id_list
            ]
            if others:
                expected += torch.stack(others).mean(0)
        torch.testing.assert_close(applied[index], expected, atol=1e-4, rtol=1e-4)
    assert applied[5].abs().sum() == 0  # its instruction id is held by no other prompt
    assert loads == []  # the model was given to apply(); nothing was loaded

    params = method.params()
    assert set(params["vectors"]) == {"change_case:english_capital", "punctuation:no_comma", "startend:end_checker"}
    again = bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows, tmp_path, loads)
    assert again.params() == params and loads == []  # read back from the cache: no model needed
    other_layer = bound(ActAdd(layer=LAYER - 1, coeff=COEFF), model, tokenizer, rows, tmp_path, loads)
    assert other_layer.params()["vectors"] != params["vectors"] and loads == [1]
    fewer = bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows[1:], tmp_path, loads)
    assert fewer.params()["vectors"]["change_case:english_capital"] != params["vectors"]["change_case:english_capital"]
    assert fewer.params()["vectors"]["startend:end_checker"] == params["vectors"]["startend:end_checker"]


def test_an_instruction_id_repeated_in_a_prompt_steers_it_by_the_other_prompts_only(tiny) -> None:
    model, tokenizer = tiny.model("llama", "eager"), tiny.tokenizer
    twice = PromptRow(
        "g",
        "hello world . answer in all caps . write in all caps .",
        ("answer in all caps .", "write in all caps ."),
        ("change_case:english_capital",) * 2,
        ({}, {}),
    )
    rows = [*split_rows()[:2], twice]
    method = bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows)
    texts = tiny.chat([row.prompt for row in rows])
    applied = method.apply(model, tokenizer, *tiny.batch(texts), texts=texts)._steps[0][1].additions / COEFF
    others = [
        last_token_hidden(model, tokenizer, row.prompt) - last_token_hidden(model, tokenizer, remove_text(row.prompt, row.instructions[0]))
        for row in rows[:2]
    ]
    torch.testing.assert_close(applied[2], torch.stack(others).mean(0), atol=1e-4, rtol=1e-4)


def test_the_prompts_left_unsteered_are_known_from_the_prompts_and_get_no_vector(tiny) -> None:
    model, tokenizer = tiny.model("llama", "eager"), tiny.tokenizer
    bare = PromptRow("h", "tell me about the dog . answer in all caps .", (), ("change_case:english_capital",), ({},))
    rows = [*split_rows(), bare]
    method = bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows)
    assert method.unsteered(rows) == {"f": NO_SHARED_ID, "h": NO_INSTRUCTION_TEXT}
    texts = tiny.chat([row.prompt for row in rows])
    applied = method.apply(model, tokenizer, *tiny.batch(texts), texts=texts)._steps[0][1].additions
    assert [row.key for row, addition in zip(rows, applied) if not addition.any()] == ["f", "h"]
    assert ActAdd(layer=LAYER, coeff=0).unsteered(rows) == {}  # the identity: its responses are the baseline's by design
    assert ActAdd(layer=LAYER, coeff=COEFF, vector=torch.ones(64)).unsteered(rows) == {}
    method.check_prompts(rows)
    with pytest.raises(SteeringError) as caught:
        method.check_prompts([rows[0], rows[2], rows[5]])  # three prompts, three instruction ids
    assert "steer none of the run's 3 prompt(s)" in str(caught.value)
    assert all(fix in str(caught.value) for fix in ("--steer-limit", "--steer-per-instruction", "vector=PATH", "pairs=PATH"))
    with pytest.raises(SteeringError, match="need rows with an 'instructions' column"):
        method.check_prompts([bare])


def test_the_vector_cache_recomputes_an_entry_it_cannot_trust_with_a_warning(tiny, tmp_path) -> None:
    model, tokenizer, rows = tiny.model("llama", "eager"), tiny.tokenizer, split_rows()
    loads: list[int] = []
    params = bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows, tmp_path, loads).params()
    assert loads == [1]
    [entry] = (tmp_path / "actadd-vectors").rglob("*.safetensors")
    stored = load_file(str(entry))["values"].clone()  # safetensors 0.4 maps the file, which the loop below overwrites
    with safe_open(str(entry), framework="pt") as opened:
        metadata = opened.metadata()
    damaged = {
        "nan": ({"values": torch.full_like(stored, math.nan)}, None),  # overwritten, without the entry's key
        "nan under its key": ({"values": torch.full_like(stored, math.nan)}, metadata),
        "changed values": ({"values": stored + 1}, metadata),
        "fewer rows": ({"values": stored[1:].contiguous()}, metadata),
    }
    for name, (tensors, kept) in damaged.items():
        save_file(tensors, str(entry), metadata=kept)
        with pytest.warns(SteeringWarning, match=f"actadd vector cache entry {entry}.*; computing it again"):
            again = bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows, tmp_path, loads).params()
        assert again == params, name
        torch.testing.assert_close(load_file(str(entry))["values"], stored)  # rewritten
    entry.write_bytes(b"not a safetensors file")
    with pytest.warns(SteeringWarning, match="cannot be read"):
        assert bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows, tmp_path, loads).params() == params
    loads.clear()
    assert bound(ActAdd(layer=LAYER, coeff=COEFF), model, tokenizer, rows, tmp_path, loads).params() == params
    assert loads == []  # a sound entry is read back without the model


def test_the_method_steers_a_prompt_batch_through_steer_and_select_rows(tiny) -> None:
    model, tokenizer, rows = tiny.model("qwen2", "sdpa"), tiny.tokenizer, split_rows()[:4]
    method = bound(ActAdd.create({"layer": LAYER, "coeff": COEFF}, model.config), model, tokenizer, rows)
    texts = tiny.chat([row.prompt for row in rows])
    input_ids, attention_mask = tiny.batch(texts)
    vectors = method.apply(model, tokenizer, input_ids, attention_mask, texts=texts)._steps[0][1].additions / COEFF
    batch = PromptBatch(model, tokenizer, input_ids, attention_mask, texts, [[] for _ in rows])
    prompt_rows = torch.tensor([3, 1, 1])
    with method.steer(batch) as steered:
        _, steps = run_steps(model, input_ids, attention_mask, [torch.tensor([7, 8, 9])], steered.select_rows, prompt_rows)
    assert steered.missing == [[], [], [], []]
    with steer_rows(model, input_ids, attention_mask, vectors, coeff=COEFF, layer=LAYER) as reference:
        _, expected = run_steps(model, input_ids, attention_mask, [torch.tensor([7, 8, 9])], reference.select_rows, prompt_rows)
    assert torch.equal(steps[0], expected[0])


def test_rows_without_instruction_texts_get_a_clear_error(tiny) -> None:
    model = tiny.model("llama", "eager")
    rows = [PromptRow("a", "tell me a story", (), ("punctuation:no_comma",), ({},))]
    method = bound(ActAdd(layer=LAYER, coeff=COEFF), model, tiny.tokenizer, rows)
    with pytest.raises(SteeringError, match="need rows with an 'instructions' column"):
        method.params()
    with pytest.raises(SteeringError, match="call bind_run"):
        ActAdd(layer=LAYER, coeff=COEFF).params()


def test_pairs_give_the_mean_difference_at_the_last_token(tiny, tmp_path) -> None:
    model, tokenizer = tiny.model("llama", "eager"), tiny.tokenizer
    pairs = [("answer in all caps", "tell me a story"), ("do not use any commas", "hello world"), ("write a poem", "the cat sat")]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"positive": p, "negative": n}) + "\n" for p, n in pairs))
    method = ActAdd(layer=LAYER, coeff=COEFF, pairs=path)
    input_ids, attention_mask = tiny.batch(tiny.chat(PROMPTS))
    applied = method.apply(model, tokenizer, input_ids, attention_mask)._steps[0][1].additions / COEFF
    expected = torch.stack([last_token_hidden(model, tokenizer, p) - last_token_hidden(model, tokenizer, n) for p, n in pairs]).mean(0)
    for row in applied:
        torch.testing.assert_close(row, expected, atol=1e-4, rtol=1e-4)
    assert method.params()["vector"] == bound(ActAdd(layer=LAYER, coeff=1, pairs=path), model, tokenizer, []).params()["vector"]

    path.write_text('{"positive": "a"}\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl:1: each line needs non-empty 'positive' and 'negative'"):
        ActAdd(layer=LAYER, coeff=COEFF, pairs=path)


@pytest.mark.parametrize("suffix", [".safetensors", ".npy", ".pt"])
def test_a_vector_file_plugs_in_and_its_digest_names_it(tmp_path, suffix) -> None:
    vector = torch.arange(64, dtype=torch.float32) / 10
    path = tmp_path / f"v{suffix}"
    if suffix == ".safetensors":
        save_file({"direction": vector}, str(path))
    elif suffix == ".npy":
        np.save(path, vector.numpy())
    else:
        torch.save(vector, path)
    method = ActAdd.create(
        {"layer": 1, "coeff": 2.5, "vector": str(path)}, {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 64}
    )
    assert torch.equal(method._single_vector(), vector)
    params = method.params()
    assert params["layer"] == 1 and params["coeff"] == 2.5 and params["source"] == "vector"
    assert params["vector"] != ActAdd(layer=1, coeff=2.5, vector=vector + 1).params()["vector"]
    with pytest.raises(SteeringError, match="holds 64 values; this llama model's hidden size is 32"):
        ActAdd.create({"layer": 1, "coeff": 1, "vector": str(path)}, {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 32})


def test_bad_vector_files_and_parameters_are_refused_with_the_fix(tmp_path) -> None:
    two = tmp_path / "two.safetensors"
    save_file({"a": torch.zeros(4), "b": torch.zeros(4)}, str(two))
    matrix = tmp_path / "matrix.npy"
    np.save(matrix, np.zeros((2, 4), dtype=np.float32))
    config = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 4}
    cases = [
        ({"vector": str(two)}, "holds 2 entries"),
        ({"vector": str(matrix)}, r"has shape \(2, 4\); it must hold one vector"),
        ({"vector": str(tmp_path / "absent.npy")}, "does not exist"),
        ({"vector": str(tmp_path / "v.txt")}, "unsupported file type '.txt'"),
        ({"vector": str(matrix), "pairs": "p.jsonl"}, "a vector or pairs, not both"),
        ({"layer": 4}, "layer 4 does not exist: this llama model has layers 0-3"),
        ({"coeff": "strong"}, "coeff must be a finite number"),
        ({"scope": "prompt"}, "scope must be one of all, generated"),
    ]
    for extra, message in cases:
        with pytest.raises((ValueError, SteeringError), match=message):
            ActAdd.create({"layer": 1, "coeff": 1, **extra}, config)
    # Names and presence are checked at collection, against the declared parameters
    with pytest.raises(ValueError, match="actadd takes no parameter 'alpha'"):
        bind_method_parameters(ActAdd, "actadd", [("layer", "1"), ("coeff", "1"), ("alpha", "2")])
    with pytest.raises(ValueError, match="actadd needs the parameter 'coeff'"):
        bind_method_parameters(ActAdd, "actadd", [("layer", "1")])


class Pickled:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""

    def __init__(self) -> None:
        self.vector = torch.zeros(4)


def test_a_directory_a_pickled_file_and_a_non_finite_coeff_are_refused_with_our_own_fix(tmp_path) -> None:
    with pytest.raises(ValueError) as caught:
        ActAdd(layer=1, coeff=1, vector=tmp_path)
    assert str(caught.value) == (
        f"actadd vector {tmp_path} is a directory; give the path of the vector file itself (a .safetensors, .npy, .pt, .pth file)"
    )
    pickled = tmp_path / "v.pt"
    torch.save(Pickled(), pickled)
    with pytest.raises(ValueError) as caught:
        ActAdd(layer=1, coeff=1, vector=pickled)
    message = str(caught.value)
    assert message.startswith(f"actadd vector {pickled} holds pickled objects besides tensors") and "safetensors" in message
    assert "weights_only=False" not in message and "weights_only=True" in message
    for coeff in ("nan", "inf"):
        with pytest.raises(ValueError, match=f"parameter 'coeff': '{coeff}' is not finite; it must be a finite number"):
            bind_method_parameters(ActAdd, "actadd", [("layer", "1"), ("coeff", coeff)])


def test_layer_count_and_hidden_size_are_read_under_every_familys_names() -> None:
    from transformers import AutoConfig

    for model_type, sizes in (("gpt2", {"n_layer": 3, "n_embd": 48}), ("opt", {"num_hidden_layers": 3, "hidden_size": 48})):
        config = AutoConfig.for_model(model_type, **sizes)
        for given in (config, config.to_dict()):  # the loaded model's config, and its config.json
            assert (config_size(given, LAYER_COUNT), config_size(given, HIDDEN_SIZE)) == (3, 48), (model_type, type(given))
    nested = {"model_type": "llava", "text_config": {"num_hidden_layers": 5, "hidden_size": 16}, "hidden_size": 99}
    assert (config_size(nested, LAYER_COUNT), config_size(nested, HIDDEN_SIZE)) == (5, 16)
    assert config_size({"model_type": "x"}, LAYER_COUNT) is None and config_size(None, HIDDEN_SIZE) is None


@pytest.mark.parametrize("model_type", ["gpt2", "opt", "llama"])
def test_every_family_is_refused_at_collection_for_a_layer_it_lacks_or_a_vector_of_another_size(tmp_path, model_type) -> None:
    from transformers import AutoConfig

    from pytest_steer.plan.collection import plan_cases
    from pytest_steer.plan.options import SteerSettings

    checkpoint = tmp_path / model_type
    AutoConfig.for_model(model_type, num_hidden_layers=2, hidden_size=32, num_attention_heads=4).save_pretrained(checkpoint)
    assert "num_hidden_layers" in json.loads((checkpoint / "config.json").read_text()) or model_type == "gpt2"  # GPT-2 says n_layer
    vector = tmp_path / "v.npy"
    np.save(vector, np.ones(64, dtype=np.float32))
    refusals = [
        ("actadd:layer=5,coeff=4", f"actadd layer 5 does not exist: this {model_type} model has layers 0-1"),
        (f"actadd:layer=1,coeff=4,vector={vector}", f"holds 64 values; this {model_type} model's hidden size is 32"),
    ]
    for spec, message in refusals:
        settings = SteerSettings(model=str(checkpoint), limit=4, method=(parse_method(spec),))
        with pytest.raises(pytest.Collector.CollectError, match=message):
            plan_cases(settings)


def test_a_model_without_decoder_layers_is_refused_naming_its_type() -> None:
    class Config:
        model_type = "mystery"
        num_hidden_layers = 3

    class Bare(torch.nn.Module):
        config = Config()

    with pytest.raises(UnsupportedModelError, match="cannot find the decoder layers of this mystery model"):
        decoder_layers(Bare())


def test_instruction_text_is_cut_out_with_its_seam_joined() -> None:
    assert remove_text("Write a poem. Answer in all caps. Keep it short.", "Answer in all caps.") == "Write a poem. Keep it short."
    assert remove_text("Write a poem.\nAnswer in all caps.", "Answer in all caps.") == "Write a poem."
    assert remove_text("Answer in all caps.", "Answer in all caps.") is None
    assert remove_text("Write a poem.", "absent") is None


def test_comma_lists_sweep_a_parameter_into_one_config_each() -> None:
    from pytest_steer.plan.collection import run_configs
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.steering.registry import method_registry

    name, params = parse_method("actadd:layer=15,coeff=2,4,8")
    assert name == "actadd" and method_sweep(params) == [{"layer": "15", "coeff": c} for c in ("2", "4", "8")]  # text until collection
    settings = SteerSettings(alpha=(10.0,), method=(parse_method("actadd:layer=14,15,coeff=0.5,scope=generated"), parse_method("emphasis")))
    names = [config.name for config in run_configs(settings, method_registry())]
    assert names == [
        "baseline",
        "pasta_alpha10",
        "actadd_layer14_coeff0.5_scopegenerated",
        "actadd_layer15_coeff0.5_scopegenerated",
        "emphasis",
    ]
    with pytest.raises(ValueError, match="parameter '4' is not key=value"):
        parse_method("actadd:4,layer=1")
    swept = method_sweep(parse_method("actadd:layer=1,coeff=-1.5")[1])[0]
    assert math.isclose(bind_method_parameters(ActAdd, "actadd", swept.items())["coeff"], -1.5)


def test_a_sweep_runs_end_to_end_and_coeff_zero_gives_the_baseline_responses(pytester: pytest.Pytester, tiny_checkpoint) -> None:
    pytester.makepyfile(test_answers="def test_answers(steer_case):\n    pass\n")
    out = pytester.path / "results.json"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-instruction-ids",
        "change_case:english_capital",
        "--steer-per-instruction",
        "3",
        "--steer-max-new-tokens",
        "4",
        "--steer-cache-dir",
        str(pytester.path / "cache"),
        "--steer-method",
        "actadd:layer=1,coeff=0,8",
        "--steer-json",
        str(out),
        "-v",
    )
    assert result.ret == 0, result.stdout.str()
    data = json.loads(out.read_text())
    assert sorted(c["name"] for c in data["configs"]) == ["actadd_layer1_coeff0", "actadd_layer1_coeff8", "baseline"]
    responses: dict[str, dict[str, str]] = {}
    for case in data["cases"]:
        responses.setdefault(case["config"], {})[case["key"]] = case["response"]
    assert len(responses["baseline"]) == 3
    assert responses["actadd_layer1_coeff0"] == responses["baseline"]
    assert responses["actadd_layer1_coeff8"] != responses["baseline"]
    assert list((pytester.path / "cache" / "actadd-vectors").rglob("*.safetensors"))  # the run's instruction differences


def test_prompts_left_unsteered_are_counted_with_why_and_a_run_steering_none_is_refused(pytester: pytest.Pytester, tiny_checkpoint) -> None:
    pytester.makepyfile(test_answers="def test_answers(steer_case):\n    pass\n")
    common = (
        "-p",
        "no:cacheprovider",
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-max-new-tokens",
        "2",
        "--steer-no-cache",
        "--steer-method",
        "actadd:layer=1,coeff=4",
    )
    refused = pytester.runpytest_subprocess(*common, "--steer-limit", "10")
    assert refused.ret == pytest.ExitCode.INTERRUPTED, refused.stdout.str()
    refused.stdout.fnmatch_lines(["*--steer-method actadd:layer=1,coeff=4.0: actadd's instruction vectors steer none of the run's 10*"])
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess(*common, "--steer-limit", "30", "--steer-report-dir", str(report))
    assert result.ret == 0, result.stdout.str()
    expected = ActAdd(layer=1, coeff=4).unsteered(select(load_rows("builtin"), Selection(limit=30)))
    assert 0 < len(expected) < 30
    result.stdout.fnmatch_lines(
        [f"actadd_layer1_coeff4: {len(expected)} of 30 case(s) ran unsteered ({len(expected)} of 30 prompt(s)): {NO_SHARED_ID}"]
    )
    config = {c["name"]: c for c in json.loads((report / "results.json").read_text())["configs"]}["actadd_layer1_coeff4"]
    assert (config["n_unsteered"], config["n_unsteered_prompts"], config["unsteered_reasons"]) == (
        len(expected),
        len(expected),
        {NO_SHARED_ID: len(expected)},
    )
    cases = [json.loads(line) for line in (report / "cases.jsonl").read_text().splitlines()]
    assert {c["key"]: c["unsteered"] for c in cases if c["config"] == "actadd_layer1_coeff4" and c["unsteered"]} == expected
    responses = {(c["key"], c["config"]): c["response"] for c in cases}
    assert all(responses[(key, "actadd_layer1_coeff4")] == responses[(key, "baseline")] for key in expected)
    assert (report / "report.html").read_text().count(NO_SHARED_ID) == len(expected) + 1  # each case, and the line under the table
