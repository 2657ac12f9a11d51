"""Quality scores of responses: a reward model, or fluency under the unsteered model.

Every scorer maps (prompt, response) pairs to one float per pair, or ``None`` where a
pair has no score. ``--steer-quality`` picks the scorer:

* ``fluency`` (default): :class:`FluencyScorer`, the mean log-likelihood per response
  token under the model under test without steering, in nats (0 is the maximum; higher
  is more fluent). It reuses the model already loaded for generation.
* ``reward:<model id or path>``: :class:`RewardModelScorer`, any Hugging Face
  sequence-classification reward model, read on the plain user prompt (not the chat
  template) and the response, with a transform of its head's output.
* ``none``: :class:`NoQualityScorer`, no score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from pytest_steer.engine.decoding import cache_argument, forward_parameters
from pytest_steer.engine.requests import PromptPrefill, ScoredTokens
from pytest_steer.model.loading import LoadedModel, load_pretrained, resolve_dtype
from pytest_steer.model.prompts import render_prompt
from pytest_steer.plan.option_values import (
    LABELLED_REWARD_TRANSFORMS,
    QUALITY_FLUENCY,
    QUALITY_NONE,
    REFERENCE_REWARD_MODEL,
    REWARD_PREFIX,
    reward_model_alternatives,
)
from pytest_steer.plan.options import SteerSettings
from pytest_steer.store.hub import looks_like_hub_id

FLUENCY_BATCH_SIZE = 8  # responses per forward
PROMPT_CACHE_BYTES = 256 * 2**20  # unsteered prompt prefills kept for the whole run, at most
CLASSIFIER_SUFFIX = "ForSequenceClassification"


class QualityError(RuntimeError):
    """A quality scorer cannot be built or used; the message says why and what to do."""


class QualityScorer(Protocol):
    description: str

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], generated: Sequence[ScoredTokens | None] | None = None
    ) -> list[float | None]:
        """One score per (prompt, response) pair, in order.

        ``generated`` may give, per pair, the tokens the unsteered model generated for that
        response with their log-probabilities; a scorer may use them or not.
        """
        ...


class NoQualityScorer:
    """``--steer-quality none``: every pair is left without a score."""

    description = QUALITY_NONE

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], generated: Sequence[ScoredTokens | None] | None = None
    ) -> list[float | None]:
        return [None] * len(responses)


def _chunks(count: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, count, size)]


class FluencyScorer:
    """Mean log-likelihood per response token under the unsteered model, in nats.

    The prompt is rendered with the chat template exactly as for generation; the
    response text is tokenized on its own (no special tokens) and appended. The score
    is the mean of ``log p(token | all tokens before it)`` over the response tokens.
    The end-of-sequence token is not scored, so the score depends on the response text
    alone: a response cut at ``--steer-max-new-tokens`` and one the model ended itself
    are scored alike. An empty response has no tokens and therefore no score (``None``).

    Two ways to the same number, neither a second pass over prompt and response:

    * an unsteered response whose tokenized text starts the generated tokens (the usual
      case) is scored from the log-probabilities its generation computed (``generated``);
    * any other response (steered, read from the cache, or whose text tokenizes apart from
      the generated tokens) runs through the model on its own, after its prompt's unsteered
      KV cache. That cache is the one the prompt's unsteered generation computed where this
      worker generated it (``ScoredTokens.prompt``), else one prefill of the prompt here.
      Prefills are kept up to ``prompt_cache_bytes`` for the whole run, so every config and
      trial of a prompt shares one.

    Rows are left-padded with position ids counted from each row's first real token, so
    a row's score does not depend on the other rows of its batch.
    """

    description = QUALITY_FLUENCY

    def __init__(self, loaded: LoadedModel, batch_size: int = FLUENCY_BATCH_SIZE, prompt_cache_bytes: int = PROMPT_CACHE_BYTES) -> None:
        self.loaded = loaded
        self.batch_size = batch_size
        self.prompt_cache_bytes = prompt_cache_bytes
        self.from_generation = 0  # responses scored from their generation's log-probabilities
        self.forwarded = 0  # responses run through the model after their prompt's prefill
        self.prefilled = 0  # prompts prefilled here, not kept from their unsteered generation
        self._prefills: dict[tuple[int, ...], PromptPrefill] = {}
        self._prefill_bytes = 0
        self._slices_logits = "logits_to_keep" in forward_parameters(loaded.model)

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], generated: Sequence[ScoredTokens | None] | None = None
    ) -> list[float | None]:
        if not responses:
            return []
        tokenizer = self.loaded.tokenizer
        prompt_ids = tokenizer([render_prompt(tokenizer, p) for p in prompts], add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        if any(not ids for ids in prompt_ids):
            raise QualityError("fluency needs a non-empty prompt to condition the first response token on")
        for known in generated or ():
            if known is not None and known.prompt is not None:
                self._keep(known.prompt)
        scores: list[float | None] = [None] * len(responses)
        to_run = []
        for i, ids in enumerate(response_ids):
            known = generated[i] if generated is not None else None
            if not ids:
                continue
            if known is not None and list(known.ids[: len(ids)]) == ids:
                # The scored tokens are the generated ones, after the same prompt: their log-probabilities are known.
                scores[i] = math.fsum(known.log_probs[: len(ids)]) / len(ids)
                self.from_generation += 1
            else:
                to_run.append(i)
        prompt_of = {i: tuple(prompt_ids[i]) for i in to_run}
        prefills = self._prefilled(list(prompt_of.values()))
        to_run.sort(key=lambda i: len(response_ids[i]))  # similar lengths share a forward: less padding
        for chunk in _chunks(len(to_run), self.batch_size):
            rows = to_run[chunk]
            row_scores = self._run_responses([prompt_of[i] for i in rows], prefills, [response_ids[i] for i in rows])
            for i, score in zip(rows, row_scores):
                scores[i] = score
        self.forwarded += len(to_run)
        return scores

    def _prefilled(self, prompts: list[tuple[int, ...]]) -> dict[tuple[int, ...], PromptPrefill]:
        """The prefill of each prompt: kept ones as they are, the others computed in batches.

        New prefills are kept while the byte budget allows and never evicted: configs visit
        the same prompts in the same order, where evicting the oldest would keep nothing that
        is asked for again.
        """
        found = {prompt: self._prefills[prompt] for prompt in prompts if prompt in self._prefills}
        missing = [prompt for prompt in dict.fromkeys(prompts) if prompt not in found]
        for chunk in _chunks(len(missing), self.batch_size):
            for prompt, prefill in zip(missing[chunk], self._prefill(missing[chunk])):
                found[prompt] = prefill
                self._keep(prefill)
                self.prefilled += 1
        return found

    def _keep(self, prefill: PromptPrefill) -> None:
        if prefill.ids not in self._prefills and self._prefill_bytes + prefill.nbytes <= self.prompt_cache_bytes:
            self._prefills[prefill.ids] = prefill
            self._prefill_bytes += prefill.nbytes

    def _prefill(self, prompts: list[tuple[int, ...]]) -> list[PromptPrefill]:
        """One forward over the prompts without their last tokens, left-padded."""
        from transformers import DynamicCache  # imported here: a run with every response cached never imports transformers

        heads = [prompt[:-1] for prompt in prompts]
        width = max(len(head) for head in heads)
        if width == 0:  # one-token prompts: nothing to cache
            return [PromptPrefill(prompt, ()) for prompt in prompts]
        model, device = self.loaded.model, self.loaded.device
        pad = self.loaded.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(head)) + list(head) for head in heads], device=device)
        mask = torch.tensor([[0] * (width - len(head)) + [1] * len(head) for head in heads], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()  # no config: every layer keeps every position, as a forward without a cache sees them
        arguments = {cache_argument(model): cache, **({"logits_to_keep": 1} if self._slices_logits else {})}
        with torch.inference_mode():
            model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **arguments)
        prefills = []
        for row, (prompt, head) in enumerate(zip(prompts, heads)):
            start = width - len(head)
            layers = tuple((layer.keys[row, :, start:].clone(), layer.values[row, :, start:].clone()) for layer in cache.layers)
            prefills.append(PromptPrefill(prompt, layers))
        return prefills

    def _run_responses(
        self, prompts: list[tuple[int, ...]], prefills: dict[tuple[int, ...], PromptPrefill], responses: list[list[int]]
    ) -> list[float]:
        """Mean log-probability of each response after its prompt's prefill, in one forward.

        Each row runs its prompt's last token and its response but the last token,
        right-padded, at positions continuing its prompt, after the prompt's KV cache.
        """
        model, device = self.loaded.model, self.loaded.device
        pad = self.loaded.tokenizer.pad_token_id
        rows = [prefills[prompt] for prompt in prompts]
        width = max(prefill.length for prefill in rows)
        longest = max(len(response) for response in responses)
        input_ids = torch.tensor([[p.last, *r[:-1]] + [pad] * (longest - len(r)) for p, r in zip(rows, responses)], device=device)
        targets = torch.tensor([r + [pad] * (longest - len(r)) for r in responses], device=device)
        mask = torch.tensor(
            [[0] * (width - p.length) + [1] * (p.length + len(r)) + [0] * (longest - len(r)) for p, r in zip(rows, responses)],
            device=device,
        )
        positions = torch.tensor([list(range(p.length, p.length + longest)) for p in rows], device=device)
        arguments = {cache_argument(model): _fanned_out(prompts, prefills, width), "use_cache": True} if width else {}
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, **arguments).logits.float()
            token_log_probs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        return [float(token_log_probs[row, : len(response)].mean()) for row, response in enumerate(responses)]


def _fanned_out(prompts: list[tuple[int, ...]], prefills: dict[tuple[int, ...], PromptPrefill], width: int) -> Any:
    """A KV cache with one row per prompt of ``prompts``: each distinct prefill left-padded to
    ``width`` once, then selected into the rows that continue it."""
    from transformers import DynamicCache  # imported here: a run with every response cached never imports transformers

    distinct = list(dict.fromkeys(prompts))
    shapes = next(prefills[prompt] for prompt in distinct if prefills[prompt].length).layers
    rows = torch.tensor([distinct.index(prompt) for prompt in prompts], device=shapes[0][0].device)
    cache = DynamicCache()
    for index, layer in enumerate(shapes):
        padded = [like.new_zeros(len(distinct), like.shape[0], width, like.shape[2]) for like in layer]
        for slot, prompt in enumerate(distinct):
            prefill = prefills[prompt]
            for tensor, part in zip(padded, prefill.layers[index] if prefill.length else ()):
                tensor[slot, :, width - prefill.length :] = part
        cache.update(padded[0][rows], padded[1][rows], index)
    return cache


@dataclass(frozen=True)
class RewardTransform:
    """How a reward head's logits become one score: ``identity`` and ``sigmoid`` take a
    single logit; ``softmax``/``log_softmax`` take one label of a multi-label head."""

    kind: str
    label: int | None = None

    @classmethod
    def resolve(cls, spec: str, config: Any, model_name: str) -> RewardTransform:
        """Check ``spec`` against the head described by ``config`` (labels by index or name)."""
        kind, _, label_text = spec.partition(":")
        num_labels = int(config.num_labels)
        id2label = {int(index): str(name) for index, name in (getattr(config, "id2label", None) or {}).items()}
        labels = ", ".join(f"{index}={name}" for index, name in sorted(id2label.items())) or "none named"
        if kind not in LABELLED_REWARD_TRANSFORMS:
            if num_labels != 1:
                raise QualityError(
                    f"reward model {model_name!r} has {num_labels} output labels ({labels}) but {kind} needs a single-logit head; "
                    "use the transform softmax:<label> or log_softmax:<label>"
                )
            return cls(kind)
        if num_labels < 2:
            raise QualityError(
                f"reward model {model_name!r} has a single-logit head, where {kind} is always constant; "
                "use the transform identity or sigmoid"
            )
        if label_text.isdigit():
            index = int(label_text)
        else:
            index = next((i for i, name in id2label.items() if name == label_text), -1)
        if not 0 <= index < num_labels:
            raise QualityError(
                f"reward model {model_name!r} has no label {label_text!r}; its labels are {labels}: "
                f"use the transform {kind}:<index or name>"
            )
        return cls(kind, index)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``(batch, num_labels)`` logits -> ``(batch,)`` scores."""
        if self.kind == "identity":
            return logits[:, 0]
        if self.kind == "sigmoid":
            return logits[:, 0].sigmoid()
        if self.kind == "softmax":
            return logits.softmax(-1)[:, self.label]
        return logits.log_softmax(-1)[:, self.label]


class RewardModelScorer:
    """A Hugging Face sequence-classification reward model on (user prompt, response) pairs.

    Pairs are scored in batches of ``batch_size``, right-padded, truncated to
    ``max_length`` tokens (the longer of prompt and response is cut first).
    """

    def __init__(
        self, name: str, model: Any, tokenizer: Any, transform: RewardTransform, *, batch_size: int, max_length: int, device: torch.device
    ) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.transform = transform
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.description = f"reward model {name} ({transform.kind}{'' if transform.label is None else f':{transform.label}'})"

    @classmethod
    def load(
        cls,
        name: str,
        *,
        device: torch.device,
        dtype: str = "auto",
        transform: str = "identity",
        batch_size: int = 8,
        max_length: int = 1024,
    ) -> RewardModelScorer:
        """Load a reward model on ``device`` with the generator's dtype policy (``--steer-dtype``).

        Its configuration is checked before any weights are read: it must be a sequence
        classifier whose head fits ``transform``. A hub id that is neither cached nor
        reachable fails within seconds with :class:`~pytest_steer.store.hub.HubUnavailableError`.
        """
        # imported here: a run with every score cached never imports transformers
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        if not looks_like_hub_id(name) and not Path(name).expanduser().exists():
            raise QualityError(f"reward model path {name!r} does not exist; check the path, or score {QUALITY_FLUENCY} instead")
        where = {"what": "reward model", "alternatives": reward_model_alternatives()}
        try:
            config = load_pretrained(AutoConfig, name, **where)
        except (OSError, ValueError) as exc:
            raise QualityError(f"cannot read the configuration of reward model {name!r}: {exc}") from exc
        architectures = list(getattr(config, "architectures", None) or [])
        if not any(arch.endswith(CLASSIFIER_SUFFIX) for arch in architectures):
            raise QualityError(
                f"{name!r} is not a sequence-classification reward model (its architectures: {', '.join(architectures) or 'none listed'}); "
                f"pass a model with a classification head, e.g. {REFERENCE_REWARD_MODEL}, or score {QUALITY_FLUENCY} instead"
            )
        resolved = RewardTransform.resolve(transform, config, name)
        torch_dtype = resolve_dtype(dtype, device)
        try:
            model, info = load_pretrained(
                AutoModelForSequenceClassification, name, **where, config=config, dtype=torch_dtype, output_loading_info=True
            )
            tokenizer = load_pretrained(AutoTokenizer, name, **where)
        except (OSError, ValueError) as exc:
            raise QualityError(f"cannot load reward model {name!r}: {exc}") from exc
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise QualityError(
                f"reward model {name!r} lacks weights for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}, "
                "which would be random; pass a checkpoint saved with its trained classification head"
            )
        tokenizer.padding_side = "right"  # the head reads the first token or the last real one; right padding suits both
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # decoder classifiers locate the last real token by it
        model.to(device).eval()
        model.requires_grad_(False)
        return cls(name, model, tokenizer, resolved, batch_size=batch_size, max_length=max_length, device=device)

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], generated: Sequence[ScoredTokens | None] | None = None
    ) -> list[float | None]:
        scores: list[float | None] = []
        for chunk in _chunks(len(responses), self.batch_size):
            encoded = self.tokenizer(
                list(prompts[chunk]),
                list(responses[chunk]),
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                logits = self.model(**encoded).logits.float()
            scores.extend(float(value) for value in self.transform(logits))
        return scores


def create_scorer(settings: SteerSettings, loaded: LoadedModel) -> QualityScorer:
    """The scorer ``--steer-quality`` names; a reward model goes on the generator's device."""
    if settings.quality == QUALITY_NONE:
        return NoQualityScorer()
    if settings.quality == QUALITY_FLUENCY:
        return FluencyScorer(loaded)
    name = settings.reward_model
    if name is None:
        raise QualityError(
            f"--steer-quality {settings.quality!r} is not a scorer; use {QUALITY_FLUENCY}, {QUALITY_NONE} or {REWARD_PREFIX}<id or path>"
        )
    return RewardModelScorer.load(
        name,
        device=loaded.device,
        dtype=settings.dtype,
        transform=settings.reward_transform,
        batch_size=settings.reward_batch_size,
        max_length=settings.reward_max_length,
    )
