"""Batched, seeded generation.

Each response samples with random numbers derived from its own case seed
(:mod:`pytest_steer.engine.sampling`) and is decoded by :func:`pytest_steer.engine.decoding.decode`, which
prefills each distinct prompt of a batch once and drops rows as they end. A response
therefore depends only on its prompt, its seed and the model, never on the other rows of
its batch or on the order in which batches run.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pytest_steer.engine.decoding import decode
from pytest_steer.engine.sampling import RowSampler, greedy
from pytest_steer.model.loading import LoadedModel
from pytest_steer.model.prompts import prompt_lengths, render_prompt
from pytest_steer.plan.batches import MAX_BATCH_SIZE
from pytest_steer.steering.errors import SteeringWarning
from pytest_steer.steering.method import PreparedPrompt, PromptBatch, SteeringMethod
from pytest_steer.steering.pasta.attention import shared_kernels

# Bumped whenever a change here alters the text generated for the same inputs; part of
# the response cache key, so cached responses of an older engine are not reused.
ENGINE_VERSION = 5
COMPILED_STEPS = 64  # under --steer-compile: compiled variants of the decode step kept before the rest run uncompiled


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    greedy: bool = False
    temperature: float = 0.7
    top_p: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "greedy": self.greedy, "temperature": self.temperature, "top_p": self.top_p}


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    seed: int
    highlights: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class PromptPrefill:
    """A prompt's unsteered KV cache over all its tokens but the last, unpadded.

    What the fluency score runs a response after: the last prompt token is run again with
    the response, so that its logits predict the response's first token.
    """

    ids: tuple[int, ...]  # the prompt's tokens as the model received them (chat template applied)
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer: keys and values, (kv heads, len(ids) - 1, head dim)

    @property
    def length(self) -> int:
        return len(self.ids) - 1

    @property
    def last(self) -> int:
        return self.ids[-1]

    @property
    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.layers)


@dataclass(frozen=True)
class ScoredTokens:
    """The new tokens of an unsteered response, each with its log-probability under the model
    (raw logits: temperature 1, no filtering) given the prompt and the tokens before it, and
    the prompt's prefill where the generation could keep it (shared by the prompt's responses)."""

    ids: tuple[int, ...]
    log_probs: tuple[float, ...]
    prompt: PromptPrefill | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Generation:
    text: str
    n_new_tokens: int
    missing_spans: tuple[str, ...] = ()
    prompt: str | None = None  # the prompt as the steering method prepared it, before the chat template
    # Set when generated without steering, for the fluency score; not part of the response, not kept in the cache.
    unsteered: ScoredTokens | None = field(default=None, compare=False, repr=False)


def memory_batch_limit(loaded: LoadedModel, prompt_tokens: int, max_new_tokens: int) -> int:
    """On a GPU: how many rows a third of its free memory holds as KV cache."""
    config = loaded.model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    bytes_per_row = 2 * config.num_hidden_layers * kv_heads * head_dim * (prompt_tokens + max_new_tokens)
    bytes_per_row *= loaded.model.dtype.itemsize
    free, _ = torch.cuda.mem_get_info(loaded.device)
    return max(1, min(MAX_BATCH_SIZE, int(free / 3 // bytes_per_row)))


class Engine:
    """Generates responses for batches of requests with one loaded model.

    With ``compile_mode`` (a ``torch.compile`` mode) the decode steps run the model's forward
    compiled in that mode, on a fixed-shape KV cache (see :mod:`pytest_steer.engine.decoding`); it is
    compiled once per batch shape, and per steering configuration that changes what attention
    computes (a steered head set), the first time that shape or configuration runs.
    """

    def __init__(self, loaded: LoadedModel, settings: GenerationSettings, *, compile_mode: str | None = None) -> None:
        self.loaded = loaded
        self.settings = settings
        self.step_forward = None if compile_mode is None else compiled_forward(loaded.model, compile_mode)
        eos = loaded.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else loaded.tokenizer.eos_token_id])
        self.choose = greedy if settings.greedy else RowSampler(settings.temperature, settings.top_p)

    def prompt_lengths(self, prompts: Sequence[str]) -> list[int]:
        return prompt_lengths(self.loaded.tokenizer, prompts)

    def generate(self, requests: Sequence[GenerationRequest], steering: SteeringMethod | None = None) -> list[Generation]:
        """One batch, unsteered (``steering`` None) or under a steering method.

        Requests with the same prompt and highlights share one prefill; under greedy
        decoding they also share one response, since their seeds are not used.
        """
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        prepared = [steering.prepare(r.prompt, r.highlights) if steering else PreparedPrompt(r.prompt) for r in requests]
        prompts = [(render_prompt(tokenizer, p.text), r.highlights) for p, r in zip(prepared, requests)]
        distinct = list(dict.fromkeys(prompts))
        prompt_index = {prompt: i for i, prompt in enumerate(distinct)}
        responses = [(prompt, None if self.settings.greedy else r.seed) for prompt, r in zip(prompts, requests)]
        rows = list(dict.fromkeys(responses))
        row_index = {response: i for i, response in enumerate(rows)}
        prompt_of_row = torch.tensor([prompt_index[prompt] for prompt, _ in rows])
        seeds = torch.tensor([seed or 0 for _, seed in rows], dtype=torch.int64)
        texts = [text for text, _ in distinct]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.loaded.device)
        missing: list[list[str]] = [[] for _ in distinct]
        log_probs: list[list[float]] | None = None
        prefills: list[PromptPrefill | None] = [None] * len(distinct)
        with torch.inference_mode(), shared_kernels(model):  # the same attention kernels, steered or not
            if steering is None:  # the unsteered model's log-probabilities and prompt prefills serve the fluency score

                def keep_prefills(cache: Any) -> None:
                    prefills[:] = prompt_prefills(cache, batch["input_ids"], batch["attention_mask"])

                tokens, log_probs = self._decode(batch, prompt_of_row, seeds, logprobs=True, prefilled=keep_prefills)
            else:
                highlights = [list(row_highlights) for _, row_highlights in distinct]
                prompt_batch = PromptBatch(model, tokenizer, batch["input_ids"], batch["attention_mask"], texts, highlights)
                with warnings.catch_warnings():  # the runner reports missing highlights per case, by prompt key
                    warnings.simplefilter("ignore", SteeringWarning)
                    with steering.steer(prompt_batch) as steered:
                        missing = steered.missing
                        tokens = self._decode(batch, prompt_of_row, seeds, steered.select_rows)
        generations = []
        for response, ready in zip(responses, prepared):
            row = row_index[response]
            row_tokens = tokens[row]
            row_missing = missing[prompt_index[response[0]]]
            text = self.loaded.tokenizer.decode(row_tokens, skip_special_tokens=True)
            missing_spans = (*ready.missing, *row_missing)
            prefill = prefills[prompt_index[response[0]]]
            unsteered = None if log_probs is None else ScoredTokens(tuple(row_tokens), tuple(log_probs[row]), prefill)
            generations.append(
                Generation(text=text, n_new_tokens=len(row_tokens), missing_spans=missing_spans, prompt=ready.text, unsteered=unsteered)
            )
        return generations

    def _decode(
        self,
        batch: Any,
        prompt_of_row: torch.Tensor,
        seeds: torch.Tensor,
        rows_changed: Any = None,
        *,
        logprobs: bool = False,
        prefilled: Any = None,
    ) -> Any:
        # every (batch shape, steered head set) is one compiled step; past torch's default of 8 it would run uncompiled
        limit = contextlib.nullcontext() if self.step_forward is None else torch._dynamo.config.patch(recompile_limit=COMPILED_STEPS)
        with limit:
            return decode(
                self.loaded.model,
                batch["input_ids"],
                batch["attention_mask"],
                prompt_of_row,
                seeds,
                max_new_tokens=self.settings.max_new_tokens,
                eos_ids=self.eos_ids,
                choose=self.choose,
                rows_changed=rows_changed,
                logprobs=logprobs,
                prefilled=prefilled,
                step_forward=self.step_forward,
            )


def compiled_forward(model: Any, mode: str) -> Any:
    """The model's forward under ``torch.compile`` in ``mode``, for fixed shapes; it compiles on its first call."""
    with warnings.catch_warnings():  # torch's compiler imports a deprecated API of torch's own
        warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated", DeprecationWarning)
        return torch.compile(model.forward, mode=mode, dynamic=False)


def prompt_prefills(cache: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[PromptPrefill | None]:
    """Each left-padded prompt's KV cache after a prefill, cut to its own tokens but the last and copied.

    None for every prompt when a layer does not hold every position (a sliding window that
    dropped keys), or for a prompt of one token (nothing before its last token).
    """
    width = input_ids.shape[1]
    if any(layer.keys is None or layer.keys.shape[-2] != width for layer in cache.layers):
        return [None] * input_ids.shape[0]
    prefills: list[PromptPrefill | None] = []
    for row, padding in enumerate((attention_mask == 0).sum(dim=1).tolist()):
        if width - padding < 2:
            prefills.append(None)
            continue
        layers = tuple((layer.keys[row, :, padding:-1].clone(), layer.values[row, :, padding:-1].clone()) for layer in cache.layers)
        prefills.append(PromptPrefill(tuple(input_ids[row, padding:].tolist()), layers))
    return prefills
