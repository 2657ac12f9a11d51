"""Batched, seeded generation.

Each row of a batch samples with random numbers derived from its own case seed, drawn
inside a logits processor that leaves only the sampled token for the library's greedy
search to take. A response therefore depends only on its prompt, its seed and the model,
never on the other rows of its batch or on the order in which batches run.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from pytest_steer.models import LoadedModel
from pytest_steer.steering.errors import SteeringWarning
from pytest_steer.steering.method import PreparedPrompt, PromptBatch, SteeringMethod

# Bumped whenever a change here alters the text generated for the same inputs; part of
# the response cache key, so cached responses of an older engine are not reused.
ENGINE_VERSION = 2
CPU_BATCH_SIZE = 32  # benchmarks/bench_batch_size.py: 1.22x the tokens/s of 16 rows at 64 new tokens, 1.27x at 32
MAX_BATCH_SIZE = 64


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


@dataclass(frozen=True)
class Generation:
    text: str
    n_new_tokens: int
    missing_spans: tuple[str, ...] = ()


class PerRowSampler(LogitsProcessor):
    """Temperature, nucleus filtering, then one inverse-CDF draw per row.

    The uniform numbers come from a counter-based hash of (row seed, step), computed for
    the whole batch at once: no per-row Python work, and a row's draws depend on its seed
    alone. The returned scores keep only the drawn token, so greedy search emits it.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device) -> None:
        self.seeds = torch.tensor(list(seeds), dtype=torch.int64, device=device)
        self.temperature = temperature
        self.top_p = top_p
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            scores = _nucleus(scores, self.top_p)
        cdf = scores.softmax(dim=-1).double().cumsum(dim=-1)
        target = uniform(self.seeds, self.step).to(cdf.device) * cdf[:, -1]
        self.step += 1
        choice = torch.searchsorted(cdf, target[:, None]).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, choice, 0.0)


_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def uniform(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One float64 in (0, 1) per seed for this step (SplitMix64 of seed and step)."""
    z = _splitmix64(_splitmix64(seeds) ^ _splitmix64(torch.full_like(seeds, step)))
    return (_shift_right(z, 11).double() + 0.5) * 2.0**-53


def _nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - sorted_scores.softmax(dim=-1) >= top_p  # keep the token that crosses top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def render_prompt(tokenizer: Any, prompt: str) -> str:
    """The text the model sees: the chat template with a generation prompt, when there is one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt


def planned_batch_size(device_type: str) -> int:
    """Rows per planned batch when ``--steer-batch-size`` is auto: a CPU's size, or a GPU's upper bound."""
    return MAX_BATCH_SIZE if device_type == "cuda" else CPU_BATCH_SIZE


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
    """Generates responses for batches of requests with one loaded model."""

    def __init__(self, loaded: LoadedModel, settings: GenerationSettings) -> None:
        self.loaded = loaded
        self.settings = settings
        tokenizer = loaded.tokenizer
        eos = loaded.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id])
        self.generation_config = GenerationConfig(
            do_sample=False,  # sampling happens in PerRowSampler; see the module docstring
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
            temperature=None,
            top_p=None,
            top_k=None,
        )

    def prompt_lengths(self, prompts: Sequence[str]) -> list[int]:
        texts = [render_prompt(self.loaded.tokenizer, p) for p in prompts]
        encoded = self.loaded.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def generate(self, requests: Sequence[GenerationRequest], steering: SteeringMethod | None = None) -> list[Generation]:
        """One batch, unsteered (``steering`` None) or under a steering method."""
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        prepared = [steering.prepare(r.prompt, r.highlights) if steering else PreparedPrompt(r.prompt) for r in requests]
        texts = [render_prompt(tokenizer, p.text) for p in prepared]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.loaded.device)
        processors = LogitsProcessorList()
        if not self.settings.greedy:
            seeds = [r.seed for r in requests]
            processors.append(PerRowSampler(seeds, self.settings.temperature, self.settings.top_p, self.loaded.device))
        missing: list[list[str]] = [[] for _ in requests]
        with torch.inference_mode():
            if steering is None:
                output = self._generate(batch, processors)
            else:
                highlights = [list(r.highlights) for r in requests]
                prompt_batch = PromptBatch(model, tokenizer, batch["input_ids"], batch["attention_mask"], texts, highlights)
                with warnings.catch_warnings():  # the runner reports missing highlights per case, by prompt key
                    warnings.simplefilter("ignore", SteeringWarning)
                    with steering.steer(prompt_batch) as steered:
                        missing = steered.missing
                        output = self._generate(batch, processors)
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        return [
            Generation(text=self._decode(tokens), n_new_tokens=self._length(tokens), missing_spans=(*ready.missing, *row_missing))
            for tokens, ready, row_missing in zip(new_tokens, prepared, missing)
        ]

    def _generate(self, batch: Any, processors: LogitsProcessorList) -> torch.Tensor:
        return self.loaded.model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            generation_config=self.generation_config,
            logits_processor=processors,
        )

    def _length(self, tokens: list[int]) -> int:
        """New tokens up to and including the first end-of-sequence token."""
        for index, token in enumerate(tokens):
            if token in self.eos_ids:
                return index + 1
        return len(tokens)

    def _decode(self, tokens: list[int]) -> str:
        return self.loaded.tokenizer.decode(tokens[: self._length(tokens)], skip_special_tokens=True)


def batch_indices(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar prompt length (longest first), to limit padding.

    Ties keep their input order, so the plan is a pure function of the case list.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

