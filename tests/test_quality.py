"""Quality scorers: fluency against a direct per-row computation on the embedded model,
reward models built tiny from a config and read back through the real loading path."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Model

from pytest_steer.engine import quality as quality_module
from pytest_steer.engine.decoding import decode
from pytest_steer.engine.generation import Engine
from pytest_steer.engine.quality import FluencyScorer, NoQualityScorer, QualityError, RewardModelScorer, create_scorer
from pytest_steer.engine.requests import GenerationRequest, GenerationSettings, ScoredTokens
from pytest_steer.model.loading import EMBEDDED, LoadedModel, embedded_checkpoint, load_model, load_tokenizer, source_revision
from pytest_steer.model.prompts import render_prompt
from pytest_steer.plan.collection import plan_cases
from pytest_steer.plan.options import OPTIONS, SteerSettings
from pytest_steer.plan.spec import quality_spec
from pytest_steer.run.runner import CaseRunner, runner_for
from pytest_steer.steering.pasta.attention import shared_kernels
from pytest_steer.store.hub import HubUnavailableError

CPU = torch.device("cpu")
PROMPTS = [
    "Write a haiku about the sea.",
    "What is the capital of France? Answer in one sentence.",
    "List three colors, separated by commas.",
    "Explain photosynthesis to a child in two short sentences, without using the word 'sun'.",
]
RESPONSES = [
    "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time.",
    "The capital of France is Paris.",
    "Red, green, blue",
    "Plants eat light. They make sugar from air and water, and give us the air we breathe.",
]
LABELS = {0: "bad", 1: "neutral", 2: "good"}


def parse(name: str, text: str) -> object:
    return next(option for option in OPTIONS if option.name == name).parse(text)


# --- options -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["fluency", "none", "reward:OpenAssistant/reward-model-deberta-v3-large-v2"])
def test_quality_spec_accepts_the_three_scorers(text: str) -> None:
    assert parse("quality", text) == text


def test_quality_spec_accepts_an_existing_path(tmp_path: Path) -> None:
    assert parse("quality", f"reward:{tmp_path}") == f"reward:{tmp_path}"
    assert SteerSettings(quality=f"reward:{tmp_path}").reward_model == str(tmp_path)
    assert SteerSettings(quality="fluency").reward_model is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reward", "is not a quality scorer"),
        ("perplexity", "is not a quality scorer"),
        ("reward:", "names no reward model"),
        ("reward:./no/such/model", "neither an existing local path nor a Hugging Face model id"),
    ],
)
def test_quality_spec_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse("quality", text)


@pytest.mark.parametrize("text", ["identity", "sigmoid", "softmax:good", "log_softmax:2"])
def test_reward_transform_accepts(text: str) -> None:
    assert parse("reward_transform", text) == text


@pytest.mark.parametrize("text", ["softmax", "log_softmax:", "identity:0", "tanh"])
def test_reward_transform_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a reward transform"):
        parse("reward_transform", text)


def test_the_run_spec_names_the_scorer(tmp_path: Path) -> None:
    assert quality_spec(SteerSettings()) == {"scorer": "fluency"}
    reward = quality_spec(SteerSettings(quality=f"reward:{tmp_path}", reward_max_length=512))
    assert reward == {"scorer": f"reward:{tmp_path}", "revision": "unknown", "transform": "identity", "max_length": 512}


# --- fluency ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> LoadedModel:
    return load_model(EMBEDDED, device="cpu", dtype="float32")


def direct_fluency(loaded: LoadedModel, prompt: str, response: str) -> float:
    """Mean log p(response token | chat-templated prompt, earlier tokens), one unpadded row."""
    tokenizer = loaded.tokenizer
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = loaded.model(torch.tensor([prompt_ids + response_ids])).logits[0].double()
    log_probs = logits.log_softmax(-1)
    total = sum(log_probs[len(prompt_ids) + i - 1, token] for i, token in enumerate(response_ids))
    return float(total) / len(response_ids)


@pytest.fixture(scope="module")
def direct_scores(embedded: LoadedModel) -> list[float]:
    return [direct_fluency(embedded, p, r) for p, r in zip(PROMPTS, RESPONSES)]


def test_fluency_matches_a_direct_per_row_computation(embedded: LoadedModel, direct_scores: list[float]) -> None:
    scores = FluencyScorer(embedded, batch_size=3).score(PROMPTS, RESPONSES)  # a left-padded batch of three, then one
    assert scores == pytest.approx(direct_scores, abs=1e-4)
    assert all(-10 < score < 0 for score in scores)


def test_fluency_prefers_fluent_text(embedded: LoadedModel) -> None:
    fluent, scrambled = FluencyScorer(embedded).score(
        [PROMPTS[1]] * 2, ["The capital of France is Paris.", "Paris the of France capital is The."]
    )
    assert fluent > scrambled + 1.0


def test_fluency_of_an_empty_response_is_none(embedded: LoadedModel, direct_scores: list[float]) -> None:
    scores = FluencyScorer(embedded).score(PROMPTS[:3], ["", RESPONSES[1], RESPONSES[2]])
    assert scores[0] is None
    assert scores[1:] == pytest.approx(direct_scores[1:3], abs=1e-4)
    assert FluencyScorer(embedded).score(PROMPTS[:1], [""]) == [None]


# --- fluency without a second pass: against the full forward it replaces ---------------------


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Path) -> LoadedModel:
    return load_model(str(tiny_checkpoint), device="cpu", dtype="float32")


def full_forward_fluency(loaded: LoadedModel, prompts: list[str], responses: list[str]) -> list[float | None]:
    """Fluency as one left-padded forward over each whole prompt and response, as it was computed before."""
    tokenizer, model = loaded.tokenizer, loaded.model
    prompt_ids = tokenizer([render_prompt(tokenizer, p) for p in prompts], add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    rows = [p + r for p, r in zip(prompt_ids, response_ids)]
    width, longest = max(len(row) for row in rows), max(len(ids) for ids in response_ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits.float()
    log_probs = logits[:, -longest - 1 : -1].log_softmax(-1).gather(-1, input_ids[:, width - longest :, None])[..., 0]
    return [float(log_probs[row, longest - len(ids) :].mean()) if ids else None for row, ids in enumerate(response_ids)]


# Trials sharing a prompt, prompts of different lengths (left padding), responses of different lengths, an empty one.
SHARED_PROMPTS = [PROMPTS[0], PROMPTS[3], PROMPTS[0], PROMPTS[1], PROMPTS[3], PROMPTS[2]]
SHARED_RESPONSES = [RESPONSES[0], RESPONSES[3], "Gulls.", RESPONSES[1], "", RESPONSES[2]]
TOLERANCE = 1e-5


@pytest.mark.parametrize("prompt_cache_bytes", [0, 2**30], ids=["nothing-kept", "prefills-kept"])
def test_responses_run_after_a_shared_prefill_score_as_the_full_forward(tiny: LoadedModel, prompt_cache_bytes: int) -> None:
    expected = full_forward_fluency(tiny, SHARED_PROMPTS, SHARED_RESPONSES)
    scorer = FluencyScorer(tiny, batch_size=3, prompt_cache_bytes=prompt_cache_bytes)
    for _ in range(2):  # the second call reuses the kept prefills, if any
        scores = scorer.score(SHARED_PROMPTS, SHARED_RESPONSES)
        assert scores[4] is None
        assert scores == pytest.approx(expected, abs=TOLERANCE)
    assert (scorer.from_generation, scorer.forwarded) == (0, 10)
    assert (len(scorer._prefills) == 4) == bool(prompt_cache_bytes)


def test_a_one_token_prompt_has_no_prefill_to_keep(tiny: LoadedModel) -> None:
    plain = LoadedModel(tiny.model, copy.deepcopy(tiny.tokenizer), tiny.fingerprint, tiny.device)
    plain.tokenizer.chat_template = None
    assert len(plain.tokenizer("Hi", add_special_tokens=False)["input_ids"]) == 1
    prompts, responses = ["Hi", "Hi", PROMPTS[1]], ["Hello there.", "Hey", RESPONSES[1]]
    assert FluencyScorer(plain).score(prompts, responses) == pytest.approx(full_forward_fluency(plain, prompts, responses), abs=TOLERANCE)
    assert FluencyScorer(plain).score(prompts[:2], responses[:2]) == pytest.approx(
        full_forward_fluency(plain, prompts[:2], responses[:2]), abs=TOLERANCE
    )


def scripted_decode(loaded: LoadedModel, prompts: list[str], prompt_of_row: list[int], scripts: list[list[int]], max_new_tokens: int):
    """The decode loop, with each row choosing its script's tokens (the row is passed as its seed)."""
    texts = [render_prompt(loaded.tokenizer, p) for p in prompts]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def choose(scores: torch.Tensor, seeds: torch.Tensor, step: int) -> torch.Tensor:
        return torch.tensor([scripts[seed][step] for seed in seeds.tolist()])

    with torch.inference_mode(), shared_kernels(loaded.model):
        return decode(
            loaded.model, batch["input_ids"], batch["attention_mask"], torch.tensor(prompt_of_row), torch.arange(len(scripts)),
            max_new_tokens=max_new_tokens, eos_ids={loaded.tokenizer.eos_token_id}, choose=choose, logprobs=True,
        )  # fmt: skip


def test_unsteered_responses_score_from_their_generation_as_the_full_forward(tiny: LoadedModel) -> None:
    tokenizer, eos = tiny.tokenizer, tiny.tokenizer.eos_token_id
    distinct = [PROMPTS[0], PROMPTS[3], PROMPTS[1]]  # left-padded in the prefill
    prompt_of_row = [0, 0, 1, 2, 1]  # trials sharing a prompt
    texts = ["Waves fold into foam.", "Salt wind carries gull voices, the tide keeps its time.", RESPONSES[3], "Paris.", "Hi"]
    scripts = [tokenizer(text, add_special_tokens=False)["input_ids"] + [eos] for text in texts]
    max_new_tokens = 12  # rows 1 and 2 are cut, the others end early with their end-of-sequence token
    tokens, log_probs = scripted_decode(tiny, distinct, prompt_of_row, scripts, max_new_tokens)
    assert tokens == [script[:max_new_tokens] for script in scripts]
    assert [len(row) for row in log_probs] == [len(row) for row in tokens]
    prompts = [distinct[p] for p in prompt_of_row]
    responses = [tokenizer.decode(row, skip_special_tokens=True) for row in tokens]
    generated = [ScoredTokens(tuple(ids), tuple(values)) for ids, values in zip(tokens, log_probs)]
    scorer = FluencyScorer(tiny)
    assert scorer.score(prompts, responses, generated) == pytest.approx(full_forward_fluency(tiny, prompts, responses), abs=TOLERANCE)
    assert (scorer.from_generation, scorer.forwarded) == (5, 0)


def test_the_generation_log_probabilities_include_the_end_of_sequence_token(tiny: LoadedModel) -> None:
    eos = tiny.tokenizer.eos_token_id
    script = tiny.tokenizer("Paris.", add_special_tokens=False)["input_ids"] + [eos]
    tokens, log_probs = scripted_decode(tiny, [PROMPTS[1]], [0], [script], max_new_tokens=8)
    prompt_ids = tiny.tokenizer(render_prompt(tiny.tokenizer, PROMPTS[1]), add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = tiny.model(torch.tensor([prompt_ids + script])).logits[0].double()
    expected = logits.log_softmax(-1)[len(prompt_ids) - 1 : -1].gather(-1, torch.tensor(script)[:, None])[:, 0]
    assert tokens == [script]
    assert log_probs[0] == pytest.approx(expected.tolist(), abs=TOLERANCE)


def test_generated_tokens_that_the_text_does_not_tokenize_back_to_are_not_reused(tiny: LoadedModel) -> None:
    tokenizer = tiny.tokenizer
    word = tokenizer("Paris is lovely", add_special_tokens=False)["input_ids"]
    by_character = tokenizer.convert_tokens_to_ids(list("Paris")) + word[1:]  # the same text, tokenized apart
    special_inside = word[:1] + [tokenizer.convert_tokens_to_ids("<|im_start|>")] + word[1:]  # skipped when decoded
    rows = [by_character, special_inside]
    assert all(row != word and tokenizer.decode(row, skip_special_tokens=True) == "Paris is lovely" for row in rows)
    generated = [ScoredTokens(tuple(row), (0.0,) * len(row)) for row in rows]  # log-probabilities no model gives
    scorer = FluencyScorer(tiny)
    prompts, responses = [PROMPTS[1]] * 2, ["Paris is lovely"] * 2
    assert scorer.score(prompts, responses, generated) == pytest.approx(full_forward_fluency(tiny, prompts, responses), abs=TOLERANCE)
    assert (scorer.from_generation, scorer.forwarded) == (0, 2)


def test_other_responses_run_after_the_prefill_their_prompts_unsteered_generation_kept(tiny: LoadedModel) -> None:
    requests = [GenerationRequest(PROMPTS[0], 1), GenerationRequest(PROMPTS[3], 2), GenerationRequest(PROMPTS[0], 3)]
    generations = Engine(tiny, GenerationSettings(max_new_tokens=6)).generate(requests)
    kept = [generation.unsteered.prompt for generation in generations if generation.unsteered is not None]
    assert len(kept) == 3 and kept[0] is kept[2] and kept[0] is not kept[1]  # one prefill per prompt, shared by its trials
    prompts = [request.prompt for request in requests]
    scorer = FluencyScorer(tiny)
    scorer.score(prompts, [generation.text for generation in generations], [generation.unsteered for generation in generations])
    forwarded = scorer.forwarded
    others = ["Waves fold into foam.", RESPONSES[3], "Hi"]  # as a steered config would answer
    assert scorer.score(prompts, others) == pytest.approx(full_forward_fluency(tiny, prompts, others), abs=TOLERANCE)
    assert (scorer.prefilled, scorer.forwarded - forwarded) == (0, 3)  # no prompt prefilled a second time


def test_create_scorer_picks_by_spec(embedded: LoadedModel) -> None:
    assert isinstance(create_scorer(SteerSettings(quality="none"), embedded), NoQualityScorer)
    assert create_scorer(SteerSettings(quality="none"), embedded).score(PROMPTS, RESPONSES) == [None] * 4
    fluency = create_scorer(SteerSettings(), embedded)
    assert isinstance(fluency, FluencyScorer) and fluency.loaded is embedded  # no second copy of the model


# --- reward models -----------------------------------------------------------------------


def save_classifier(directory: Path, *, num_labels: int = 1, head: bool = True) -> Path:
    """A tiny DeBERTa-v2 (v3-style relative attention) reward model with the embedded tokenizer."""
    tokenizer = load_tokenizer(EMBEDDED)
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        relative_attention=True,
        position_buckets=32,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
        id2label=LABELS if num_labels == 3 else None,
    )
    torch.manual_seed(0)
    model = (DebertaV2ForSequenceClassification if head else DebertaV2Model)(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def single_logit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("reward1"))


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("reward3"), num_labels=3)


def direct_logits(path: Path, max_length: int = 1024) -> torch.Tensor:
    """Each pair alone, unpadded, straight through transformers."""
    model = DebertaV2ForSequenceClassification.from_pretrained(path).eval()
    tokenizer = load_tokenizer(str(path))
    rows = []
    for prompt, response in zip(PROMPTS, RESPONSES):
        encoded = tokenizer(prompt, response, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            rows.append(model(**encoded).logits[0])
    return torch.stack(rows)


def test_reward_identity_matches_the_model_head(single_logit: Path) -> None:
    scorer = RewardModelScorer.load(str(single_logit), device=CPU, dtype="float32", batch_size=3)
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(direct_logits(single_logit)[:, 0].tolist(), abs=1e-5)
    assert scorer.model.dtype == torch.float32 and scorer.device == CPU


def test_reward_sigmoid(single_logit: Path) -> None:
    scorer = RewardModelScorer.load(str(single_logit), device=CPU, dtype="float32", transform="sigmoid")
    expected = direct_logits(single_logit)[:, 0].sigmoid().tolist()
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-6)


def test_reward_truncates_to_max_length(single_logit: Path) -> None:
    scorer = RewardModelScorer.load(str(single_logit), device=CPU, dtype="float32", max_length=12)
    expected = direct_logits(single_logit, max_length=12)[:, 0].tolist()
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)
    untruncated = direct_logits(single_logit)[:, 0].tolist()
    assert scorer.score(PROMPTS, RESPONSES) != pytest.approx(untruncated, abs=1e-5)


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        ("softmax:good", lambda logits: logits.softmax(-1)[:, 2]),
        ("softmax:0", lambda logits: logits.softmax(-1)[:, 0]),
        ("log_softmax:neutral", lambda logits: logits.log_softmax(-1)[:, 1]),
    ],
)
def test_reward_labelled_transforms(three_labels: Path, transform: str, expected) -> None:
    scorer = RewardModelScorer.load(str(three_labels), device=CPU, dtype="float32", transform=transform, batch_size=2)
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(expected(direct_logits(three_labels)).tolist(), abs=1e-6)


@pytest.mark.parametrize(
    ("fixture", "transform", "message"),
    [
        ("three_labels", "identity", r"has 3 output labels \(0=bad, 1=neutral, 2=good\).*softmax:<label>"),
        ("three_labels", "softmax:excellent", r"has no label 'excellent'; its labels are 0=bad, 1=neutral, 2=good"),
        ("three_labels", "log_softmax:3", "has no label '3'"),
        ("single_logit", "softmax:0", "single-logit head.*identity or sigmoid"),
    ],
)
def test_reward_transform_must_fit_the_head(request: pytest.FixtureRequest, fixture: str, transform: str, message: str) -> None:
    path = request.getfixturevalue(fixture)
    with pytest.raises(QualityError, match=message):
        RewardModelScorer.load(str(path), device=CPU, transform=transform)


def test_reward_through_settings_uses_the_generator_device_and_dtype_policy(single_logit: Path) -> None:
    loaded = LoadedModel(model=None, tokenizer=None, fingerprint=None, device=CPU)  # a reward model needs no generator weights
    settings = SteerSettings(quality=f"reward:{single_logit}", dtype="bfloat16", reward_batch_size=2, reward_max_length=64)
    scorer = create_scorer(settings, loaded)
    assert isinstance(scorer, RewardModelScorer)
    assert (scorer.model.dtype, scorer.batch_size, scorer.max_length) == (torch.bfloat16, 2, 64)
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(direct_logits(single_logit)[:, 0].tolist(), abs=0.1)


def test_a_causal_lm_is_not_a_reward_model() -> None:
    with pytest.raises(QualityError, match=r"is not a sequence-classification reward model \(its architectures: LlamaForCausalLM\)"):
        RewardModelScorer.load(str(embedded_checkpoint()), device=CPU)


def test_a_checkpoint_without_its_head_is_refused(tmp_path: Path) -> None:
    save_classifier(tmp_path, head=False)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["DebertaV2ForSequenceClassification"]}))
    with pytest.raises(QualityError, match=r"lacks weights for classifier\..*would be random"):
        RewardModelScorer.load(str(tmp_path), device=CPU)


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(QualityError, match="reward model path .* does not exist"):
        RewardModelScorer.load(str(tmp_path / "no-such-model"), device=CPU)


def test_an_uncached_hub_id_fails_offline_with_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match=r"cannot load reward model 'pytest-steer-tests/no-such-reward'.*--steer-quality fluency"):
        RewardModelScorer.load("pytest-steer-tests/no-such-reward", device=CPU)


def test_an_uncached_hub_id_fails_when_the_hub_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("pytest_steer.store.hub.hub_reachable", lambda: False)
    with pytest.raises(HubUnavailableError, match="cannot be reached"):
        RewardModelScorer.load("pytest-steer-tests/no-such-reward", device=CPU)


# --- the runner ---------------------------------------------------------------------------


def run_all(settings: SteerSettings) -> tuple[CaseRunner, list]:
    plan = plan_cases(settings)
    runner = runner_for(settings, plan)
    return runner, [runner.record(case) for case in plan.cases]


def runner_settings(model: Path, quality: str) -> SteerSettings:
    return SteerSettings(model=str(model), device="cpu", dtype="float32", limit=3, max_new_tokens=6, batch_size=2, quality=quality)


def test_runner_records_fluency_of_each_response(tiny_checkpoint: Path) -> None:
    runner, records = run_all(runner_settings(tiny_checkpoint, "fluency"))
    assert len(records) == 3 and all(record.error is None for record in records)
    expected = [direct_fluency(runner.loaded, record.prompt, record.response) for record in records]
    assert [record.quality for record in records] == pytest.approx(expected, abs=1e-4)


def test_runner_fluency_of_baseline_and_steered_trials_equals_the_full_forward(tiny_checkpoint: Path) -> None:
    settings = dataclasses.replace(runner_settings(tiny_checkpoint, "fluency"), trials=2, batch_size=4, method=(("emphasis", ()),))
    runner, records = run_all(settings)
    assert len(records) == 12 and all(record.error is None and record.response for record in records)
    expected = [full_forward_fluency(runner.loaded, [record.prompt], [record.response])[0] for record in records]
    assert [record.quality for record in records] == pytest.approx(expected, abs=TOLERANCE)
    scorer = runner.scorer
    assert scorer.from_generation > 0  # baseline responses scored from their generation
    assert scorer.forwarded >= 6 and scorer.from_generation + scorer.forwarded == 12  # every emphasis response, after a prefill


def test_a_cached_response_without_its_score_is_scored_without_generating(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = runner_settings(tiny_checkpoint, "none")
    plan = plan_cases(settings)
    first = [runner_for(settings, plan, cache_dir=tmp_path).record(case) for case in plan.cases]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("generated although every response was cached")

    monkeypatch.setattr(Engine, "generate", refuse)
    settings = dataclasses.replace(settings, quality="fluency")
    runner = runner_for(settings, plan_cases(settings), cache_dir=tmp_path)
    records = [runner.record(case) for case in plan_cases(settings).cases]
    assert [record.response for record in records] == [record.response for record in first]
    expected = [full_forward_fluency(runner.loaded, [record.prompt], [record.response])[0] for record in records]
    assert [record.quality for record in records] == pytest.approx(expected, abs=TOLERANCE)
    assert runner.scorer.from_generation == 0


def test_runner_without_quality_records_none(tiny_checkpoint: Path) -> None:
    _, records = run_all(runner_settings(tiny_checkpoint, "none"))
    assert [record.quality for record in records] == [None] * 3
    assert all(record.error is None for record in records)


def test_a_scorer_that_cannot_load_makes_error_records_once(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    create = quality_module.create_scorer

    def counting(settings: SteerSettings, loaded: LoadedModel) -> object:
        attempts.append(settings.quality)
        return create(settings, loaded)

    monkeypatch.setattr(quality_module, "create_scorer", counting)  # the runner imports it when it first scores
    _, records = run_all(runner_settings(tiny_checkpoint, f"reward:{embedded_checkpoint()}"))  # a causal LM: refused
    assert len(attempts) == 1  # two batches, one load attempt
    assert all(record.error and record.error.startswith("quality scoring failed: QualityError:") for record in records)
    assert all(record.strict == [] and record.quality is None for record in records)
    assert any(record.response for record in records)  # the generated text is kept for inspection


def test_source_revision_names_the_weights_without_loading_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    copy = save_classifier(tmp_path / "copy")
    before = source_revision(str(copy))
    assert before.startswith("local:") and source_revision(str(copy)) == before
    save_classifier(copy)  # saved again: the weights may have changed
    assert source_revision(str(copy)) != before
    snapshot = tmp_path / "hub" / "models--org--reward" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert source_revision("org/reward") == "0123abcd"
    assert source_revision("org/uncached") == "unresolved"
    assert source_revision(str(snapshot / "config.json")) == "unknown"  # a file, not a checkpoint folder


def test_cached_reward_scores_are_reused_until_the_reward_model_changes(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reward = save_classifier(tmp_path / "reward")
    loads = []

    create = quality_module.create_scorer

    def counting(settings: SteerSettings, loaded: LoadedModel) -> object:
        loads.append(settings.quality)
        return create(settings, loaded)

    monkeypatch.setattr(quality_module, "create_scorer", counting)  # the runner imports it when it first scores
    settings = runner_settings(tiny_checkpoint, f"reward:{reward}")

    def run() -> list:
        plan = plan_cases(settings)
        runner = runner_for(settings, plan, cache_dir=tmp_path / "cache")
        return [runner.record(case) for case in plan.cases]

    first = run()
    assert len(loads) == 1 and all(record.quality is not None for record in first)
    assert [record.quality for record in run()] == [record.quality for record in first]
    assert len(loads) == 1  # every score came from the cache; the reward model was not loaded
    save_classifier(reward)  # the same path now holds a newly saved checkpoint
    assert [record.quality for record in run()] == pytest.approx([record.quality for record in first])
    assert len(loads) == 2  # rescored, not trusted
