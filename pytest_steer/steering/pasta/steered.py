"""PASTA's bias on a batch: where the highlighted spans land in the tokens, the bias of every prompt key, and the context
in which the model runs steered (:class:`SteeredRun`)."""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
from torch import nn

from pytest_steer.steering.errors import SteeringError, SteeringWarning
from pytest_steer.steering.method import PromptBatch, SteeringMethod
from pytest_steer.steering.pasta.attention import HeadSet, PromptKeyBias, steerable_attention
from pytest_steer.steering.pasta.heads import LayerHeads, resolve_heads
from pytest_steer.steering.pasta.spans import TokenSpan, locate_spans

# Models inside an apply() block; a second block on the same model would stack its bias.
_STEERED_MODELS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def prompt_key_bias(highlight: torch.Tensor, real: torch.Tensor, alpha: float, scale_position: str) -> torch.Tensor:
    """The additive logit bias of every prompt key, (batch, prompt_length) float32.

    ``highlight`` marks keys inside the union of a row's spans, ``real`` its unpadded
    tokens. Rows without any highlighted key get zeros.
    """
    log_alpha = math.log(alpha)
    if scale_position == "include":
        values = (real & ~highlight).float() * -log_alpha
    elif scale_position == "exclude":
        values = (real & ~highlight).float() * log_alpha
    else:
        values = real.float() * log_alpha
    return values * highlight.any(dim=1, keepdim=True)


def steer_batch(
    layer_selection: LayerHeads,
    alpha: float,
    scale_position: str,
    model: nn.Module,
    tokenizer: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    substrings: Sequence[Sequence[str] | str],
    texts: Sequence[str] | None,
) -> SteeredRun:
    """The context manager that steers ``model`` on this batch with one PASTA config (what ``PASTA.apply`` returns)."""
    if model in _STEERED_MODELS:
        raise SteeringError("this model is already inside a PASTA.apply() block; leave it before opening another")
    attention, num_heads = steerable_attention(model)
    layer_heads = resolve_heads(layer_selection, len(attention), num_heads)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    rows = input_ids.shape[0]
    groups = [[group] if isinstance(group, str) else list(group) for group in substrings]
    if len(groups) != rows:
        raise ValueError(f"substrings must hold one list per row: got {len(groups)} lists for {rows} rows")
    if texts is not None and len(texts) != rows:
        raise ValueError(f"texts must hold one string per row: got {len(texts)} for {rows} rows")

    highlight, spans, missing = _locate(tokenizer, input_ids, attention_mask, groups, texts, range(rows))
    key_bias = prompt_key_bias(highlight, attention_mask.bool(), alpha, scale_position)
    return SteeredRun(
        spans=spans,
        missing=missing,
        key_bias=key_bias,
        real=attention_mask.bool(),
        _model=model,
        _attention=attention,
        _bias=PromptKeyBias(key_bias, input_ids, {layer: (heads,) * rows for layer, heads in layer_heads.items()}, num_heads),
    )


def steer_parts(parts: Sequence[tuple[SteeringMethod, Sequence[int]]], batch: PromptBatch) -> SteeredRun:
    """Several PASTA configs (each part's method a PASTA) on their own prompt rows of one batch (what
    ``PASTA.steer_together`` returns)."""
    model, input_ids, attention_mask = batch.model, batch.input_ids, batch.attention_mask
    if model in _STEERED_MODELS:
        raise SteeringError("this model is already inside a PASTA.apply() block; leave it before opening another")
    attention, num_heads = steerable_attention(model)
    rows = input_ids.shape[0]
    groups = [list(highlights) for highlights in batch.highlights]
    key_bias = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    spans: list[list[TokenSpan]] = [[] for _ in range(rows)]
    missing: list[list[str]] = [[] for _ in range(rows)]
    row_heads: dict[int, list[HeadSet]] = {}
    real = attention_mask.bool()
    for method, prompt_rows in parts:
        highlight, part_spans, part_missing = _locate(batch.tokenizer, input_ids, attention_mask, groups, batch.texts, prompt_rows)
        index = torch.tensor(list(prompt_rows), device=input_ids.device)
        key_bias[index] = prompt_key_bias(highlight[index], real[index], method.alpha, method.scale_position)
        for row in prompt_rows:
            spans[row], missing[row] = part_spans[row], part_missing[row]
        for layer, heads in resolve_heads(method.layer_selection, len(attention), num_heads).items():
            per_row = row_heads.setdefault(layer, [()] * rows)
            for row in prompt_rows:
                per_row[row] = heads
    bias = PromptKeyBias(key_bias, input_ids, {layer: tuple(heads) for layer, heads in row_heads.items()}, num_heads)
    return SteeredRun(spans=spans, missing=missing, key_bias=key_bias, real=real, _model=model, _attention=attention, _bias=bias)


def _locate(
    tokenizer: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    groups: Sequence[Sequence[str]],
    texts: Sequence[str] | None,
    rows: Iterable[int],
) -> tuple[torch.Tensor, list[list[TokenSpan]], list[list[str]]]:
    """The highlighted keys (batch, length) of ``rows`` (False elsewhere), and each row's spans and missing substrings;
    warns of the missing ones."""
    highlight = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    spans: list[list[TokenSpan]] = [[] for _ in range(input_ids.shape[0])]
    missing: list[list[str]] = [[] for _ in range(input_ids.shape[0])]
    for row in rows:
        spans[row], missing[row] = locate_spans(
            tokenizer, input_ids[row], groups[row], text=None if texts is None else texts[row], attention_mask_row=attention_mask[row]
        )
        for start, end in spans[row]:
            highlight[row, start:end] = True
    if any(missing):
        listed = "; ".join(f"row {row}: {', '.join(map(repr, lost))}" for row, lost in enumerate(missing) if lost)
        warnings.warn(
            f"PASTA did not find these substrings in their prompts, so they are not steered: {listed}", SteeringWarning, stacklevel=4
        )
    return highlight, spans, missing


@dataclass
class SteeredRun:
    """One batch's steering: where the spans landed, what was missing, and the hooks' lifetime."""

    spans: list[list[TokenSpan]]  # per row: [start, end) token spans found, in padded positions
    missing: list[list[str]]  # per row: substrings not found
    key_bias: torch.Tensor  # (batch, prompt_length): logit bias of each prompt key on steered heads
    real: torch.Tensor  # (batch, prompt_length): the rows' real (unpadded) prompt keys
    _model: nn.Module = field(repr=False)
    _attention: list[nn.Module] = field(repr=False)
    _bias: PromptKeyBias = field(repr=False)

    @property
    def steered_rows(self) -> list[bool]:
        return [bool(row.any()) for row in self.key_bias]

    def select_rows(self, prompt_rows: torch.Tensor) -> None:
        """The forwards that follow run these prompt rows (see ``SteeredBatch.select_rows``)."""
        self._bias.select_rows(prompt_rows)

    def unsteered_tokens(self) -> list[int]:
        """Per prompt row, its tokens before the first key whose bias differs from its first real key's: a query
        before that key sees one bias on every key it attends to, which the softmax cancels (the chat template's
        prefix, under ``include``, unless a highlight lies in it)."""
        first = self.real.int().argmax(dim=1)
        differs = self.real & (self.key_bias != self.key_bias.gather(1, first[:, None]))
        end = torch.where(differs.any(dim=1), differs.int().argmax(dim=1), self.real.shape[1])
        return (end - first).tolist()

    def __enter__(self) -> SteeredRun:
        if self._model in _STEERED_MODELS:
            raise SteeringError("this model is already inside a PASTA.apply() block; leave it before opening another")
        if bool(self.key_bias.any()):
            self._bias.install(self._model, self._attention)
        _STEERED_MODELS.add(self._model)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self._bias.uninstall()
        _STEERED_MODELS.discard(self._model)
