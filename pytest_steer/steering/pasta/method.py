"""PASTA (post-hoc attention steering, Zhang et al. 2023) with AISteer360's parameters.

``PASTA(head_config, alpha, scale_position)`` takes the same three parameters as
AISteer360's PASTA control, so the reference study's configuration (all heads of layers
8-23, ``alpha`` 5..30, ``include``) ports unchanged.

Bias semantics, read off AISteer360 v0.3 (``state_control/pasta/control.py``) and the
original ``pastalib/pasta.py``: both add values to the attention mask of the selected heads
for every query, at key positions inside the prompt only (keys of generated tokens are never
biased). With ``log_alpha = log(alpha)``, per prompt key:

- ``include``: the references add +log_alpha on each highlighted span and then -log_alpha on
  the whole prompt, so highlighted keys net 0 and the other prompt keys -log_alpha. That is
  what is applied here: -log(alpha) on non-highlighted prompt keys, nothing on highlighted
  keys or generated keys. Inside the prompt this equals +log(alpha) on the highlights; during
  generation it also weighs the highlights up against the prompt but not against generated
  tokens, exactly as in the references.
- ``exclude``: +log(alpha) on the non-highlighted prompt keys (alpha < 1 suppresses them).
- ``generation``: +log(alpha) on every prompt key.

Deliberate departures from the references:

- Several spans of one prompt act as their union: each key is biased once. The references add
  the bias once per span, so overlapping spans compound (include), every span boosts the
  others' tokens (exclude) and k spans give k*log(alpha) (generation).
- Spans are located on the exact tokens the model receives (chat template, BOS, left padding)
  by offset mapping over the text that produced them. AISteer360 decodes with
  ``skip_special_tokens`` and re-tokenizes, which shifts positions whenever the prompt holds
  special tokens such as a chat template's.
- "Prompt keys" are the real (unpadded) tokens of ``input_ids``, BOS and template included.
  Padding keys stay masked and get no bias.
- A row with no located span is not steered at all (AISteer360 does the same; the original
  library still subtracted log(alpha) on such rows under ``include``).
- Under SDPA the padding mask is kept (AISteer360 casts SDPA's boolean mask to 0/1 floats,
  which stops masking padding on left-padded batches).

``alpha == 1`` is the identity: no hook is installed and the model runs untouched.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn

from pytest_steer.model.config import HEAD_COUNT, LAYER_COUNT, config_size, config_value
from pytest_steer.steering.errors import SteeringError, SteeringWarning
from pytest_steer.steering.method import PromptBatch, SteeringMethod
from pytest_steer.steering.parameters import Parameter
from pytest_steer.steering.pasta.attention import HeadSet, PromptKeyBias, check_model_family, steerable_attention
from pytest_steer.steering.pasta.heads import default_head_layers, normalize_head_config, parse_heads, resolve_heads
from pytest_steer.steering.pasta.spans import TokenSpan, locate_spans

ScalePosition = Literal["include", "exclude", "generation"]
SCALE_POSITIONS: tuple[str, ...] = ("include", "exclude", "generation")

# Models inside an apply() block; a second block on the same model would stack its bias.
_STEERED_MODELS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def prompt_key_bias(highlight: torch.Tensor, real: torch.Tensor, alpha: float, scale_position: ScalePosition) -> torch.Tensor:
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


class PASTA(SteeringMethod):
    """Attention steering towards highlighted prompt spans.

    ``head_config``: a list of layers (all their heads) or ``{layer: [heads]}``; ``alpha`` > 0,
    where alpha > 1 steers harder towards the highlights under ``include``;
    ``scale_position``: ``include``, ``exclude`` or ``generation`` (see the module docstring).
    """

    name = "pasta"
    version = 1
    parameters = (Parameter("alpha", float), Parameter("heads", str | None, None), Parameter("scale_position", ScalePosition, "include"))

    @classmethod
    def create(cls, params: Mapping[str, Any], model_config: Any) -> PASTA:
        """From a run's parameters: ``alpha``, ``heads`` (None: the middle layers of this model, see
        ``default_head_layers``; or a head configuration, or its text form) and ``scale_position``."""
        unknown = set(params) - {"alpha", "heads", "scale_position"}
        if unknown:
            raise ValueError(f"PASTA takes the parameters alpha, heads and scale_position, not {', '.join(sorted(unknown))}")
        if "alpha" not in params:
            raise ValueError("PASTA needs an alpha, e.g. pasta:alpha=10")
        _check_family(model_config)
        num_layers = _size(model_config, LAYER_COUNT, "layer count")
        heads = params.get("heads")
        if heads is None:
            head_config: Any = default_head_layers(num_layers)
        elif isinstance(heads, str):
            head_config = parse_heads(heads, num_layers)
        else:
            head_config = heads
        return cls(head_config, params["alpha"], params.get("scale_position", "include"))

    def params(self) -> dict[str, Any]:
        layers = [[layer, None if heads is None else list(heads)] for layer, heads in self.layer_selection.items()]
        return {"alpha": self.alpha, "layers": layers, "scale_position": self.scale_position}

    @property
    def is_identity(self) -> bool:
        return self.alpha == 1.0

    def steer(self, batch: PromptBatch) -> SteeredRun:
        return self.apply(batch.model, batch.tokenizer, batch.input_ids, batch.attention_mask, batch.highlights, texts=batch.texts)

    def check_model_config(self, model_config: Mapping[str, Any]) -> None:
        _check_family(model_config)
        resolve_heads(self.layer_selection, _size(model_config, LAYER_COUNT, "layer count"), _size(model_config, HEAD_COUNT, "head count"))

    def __init__(
        self,
        head_config: Iterable[int] | Mapping[int | str, Iterable[int]],
        alpha: float,
        scale_position: ScalePosition = "include",
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"PASTA alpha must be a finite number > 0, got {alpha!r}")
        if scale_position not in SCALE_POSITIONS:
            raise ValueError(f"PASTA scale_position must be one of {', '.join(SCALE_POSITIONS)}, got {scale_position!r}")
        self.layer_selection = normalize_head_config(head_config)
        self.alpha = float(alpha)
        self.scale_position: ScalePosition = scale_position

    def __repr__(self) -> str:
        return f"PASTA(layers={list(self.layer_selection)}, alpha={self.alpha:g}, scale_position={self.scale_position!r})"

    def apply(
        self,
        model: nn.Module,
        tokenizer: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        substrings: Sequence[Sequence[str] | str],
        *,
        texts: Sequence[str] | None = None,
    ) -> SteeredRun:
        """Locate each row's substrings and return the context manager that steers ``model``.

        ``substrings`` holds one list of strings per row (an empty list leaves that row
        unsteered). ``texts``, when given, are the exact strings (after the chat template)
        that were tokenized into ``input_ids``; otherwise each row is decoded. Inside the
        ``with`` block every forward and ``generate`` call on this batch is steered; leaving
        it removes every hook. Substrings that cannot be found are listed per row in
        ``.missing`` and reported with a SteeringWarning.
        """
        if model in _STEERED_MODELS:
            raise SteeringError("this model is already inside a PASTA.apply() block; leave it before opening another")
        attention, num_heads = steerable_attention(model)
        layer_heads = resolve_heads(self.layer_selection, len(attention), num_heads)
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
        key_bias = prompt_key_bias(highlight, attention_mask.bool(), self.alpha, self.scale_position)
        return SteeredRun(
            spans=spans,
            missing=missing,
            key_bias=key_bias,
            real=attention_mask.bool(),
            _model=model,
            _attention=attention,
            _bias=PromptKeyBias(key_bias, input_ids, {layer: (heads,) * rows for layer, heads in layer_heads.items()}, num_heads),
        )

    @classmethod
    def steer_together(cls, parts: Sequence[tuple[SteeringMethod, Sequence[int]]], batch: PromptBatch) -> SteeredRun:
        """Several PASTA configs (alphas, head sets, scale positions) on their own prompt rows of one batch; the other
        rows get no bias at all. Each steered row gets exactly the bias ``apply`` gives it alone."""
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
            assert isinstance(method, PASTA)
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
            f"PASTA did not find these substrings in their prompts, so they are not steered: {listed}", SteeringWarning, stacklevel=3
        )
    return highlight, spans, missing


def _check_family(model_config: Any) -> None:
    check_model_family(config_value(model_config, "model_type"), is_encoder_decoder=bool(config_value(model_config, "is_encoder_decoder")))


def _size(model_config: Any, names: tuple[str, ...], what: str) -> int:
    """The model's layer or head count under whichever name its family uses; SteeringError when its config holds none."""
    size = config_size(model_config, names)
    if size is None:
        raise SteeringError(
            f"PASTA cannot read the {what} of this {config_value(model_config, 'model_type')} model from its config "
            f"(none of {', '.join(names)} is set)"
        )
    return size


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
