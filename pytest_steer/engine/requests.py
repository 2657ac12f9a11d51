"""What the engine is asked and what it answers: requests, decoding settings, generations, and the version of its
numerics. Free of torch at import, so that a run whose responses are all in the response cache reads them back without
it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from pytest_steer.steering.method import SteeringMethod

# Bumped whenever a change to the engine alters the text generated for the same inputs; part of
# the response cache key, so cached responses of an older engine are not reused.
ENGINE_VERSION = 7


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
    steering: SteeringMethod | None = field(default=None, compare=False)  # None: the unsteered baseline


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
