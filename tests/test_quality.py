"""Quality scorers: fluency against a direct per-row computation on the embedded model,
reward models built tiny from a config and read back through the real loading path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Model

from pytest_steer import quality as quality_module
from pytest_steer import runner as runner_module
from pytest_steer.collection import plan_cases
from pytest_steer.hub import HubUnavailableError
from pytest_steer.models import EMBEDDED, LoadedModel, embedded_checkpoint, load_model, load_tokenizer, source_revision
from pytest_steer.options import OPTIONS, SteerSettings
from pytest_steer.quality import FluencyScorer, NoQualityScorer, QualityError, RewardModelScorer, create_scorer
from pytest_steer.runner import CaseRunner, runner_for
from pytest_steer.spec import quality_spec

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
    monkeypatch.setattr("pytest_steer.hub.hub_reachable", lambda: False)
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


def test_runner_without_quality_records_none(tiny_checkpoint: Path) -> None:
    _, records = run_all(runner_settings(tiny_checkpoint, "none"))
    assert [record.quality for record in records] == [None] * 3
    assert all(record.error is None for record in records)


def test_a_scorer_that_cannot_load_makes_error_records_once(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    def counting(settings: SteerSettings, loaded: LoadedModel) -> object:
        attempts.append(settings.quality)
        return quality_module.create_scorer(settings, loaded)

    monkeypatch.setattr(runner_module, "create_scorer", counting)
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

    def counting(settings: SteerSettings, loaded: LoadedModel) -> object:
        loads.append(settings.quality)
        return quality_module.create_scorer(settings, loaded)

    monkeypatch.setattr(runner_module, "create_scorer", counting)
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
