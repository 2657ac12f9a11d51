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
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pytest_steer.model.config import HEAD_COUNT, LAYER_COUNT, config_size, config_value
from pytest_steer.steering.errors import SteeringError
from pytest_steer.steering.method import PromptBatch, SteeringMethod
from pytest_steer.steering.parameters import Parameter
from pytest_steer.steering.pasta.family import check_model_family
from pytest_steer.steering.pasta.heads import default_head_layers, normalize_head_config, parse_heads, resolve_heads

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pytest_steer.steering.pasta.steered import SteeredRun


ScalePosition = Literal["include", "exclude", "generation"]
SCALE_POSITIONS: tuple[str, ...] = ("include", "exclude", "generation")


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
        from pytest_steer.steering.pasta.steered import steer_batch  # why: imports torch; describing PASTA needs none

        selection, alpha, position = self.layer_selection, self.alpha, self.scale_position
        return steer_batch(selection, alpha, position, model, tokenizer, input_ids, attention_mask, substrings, texts)

    @classmethod
    def steer_together(cls, parts: Sequence[tuple[SteeringMethod, Sequence[int]]], batch: PromptBatch) -> SteeredRun:
        """Several PASTA configs (alphas, head sets, scale positions) on their own prompt rows of one batch; the other
        rows get no bias at all. Each steered row gets exactly the bias ``apply`` gives it alone."""
        from pytest_steer.steering.pasta.steered import steer_parts  # why: as in apply

        assert all(isinstance(method, PASTA) for method, _ in parts)
        return steer_parts(parts, batch)


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
