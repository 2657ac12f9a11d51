"""``actadd``: activation addition, a steering vector added to the residual stream of one decoder layer.

``ActAdd(layer, coeff, ...)`` adds ``coeff × vector`` to the output (the hidden states) of
decoder layer ``layer`` (0-based), through a forward hook on that layer. Where it adds:

- ``scope="all"`` (default): every real position of the prompt and every generated token;
- ``scope="generated"``: the generated tokens and the last prompt position, whose output is
  the first new token, so that every new token is steered.

Padding is never touched: the positions of a forward are read off the attention mask the
model receives (a decode step holds one new position per row).

Where the vector comes from (one per prompt row):

- ``vector=PATH``: a ``.safetensors``, ``.npy`` or ``.pt`` file (read with
  ``torch.load(weights_only=True)``) holding one vector of the model's hidden size;
- ``pairs=PATH``: a JSONL file of ``{"positive": ..., "negative": ...}`` texts; the vector is
  the mean difference of layer ``layer``'s output at the last real token of each text, chat
  template applied (CAA, DiffMean);
- neither (the default): instruction vectors (Stolfo et al., ICLR 2025). For each instruction
  of a prompt, the difference of layer ``layer``'s output at the last prompt token between
  the prompt and the prompt with that instruction's text (the ``instructions`` column of
  Split-IFEval rows) cut out. A prompt is steered by the sum, over its instruction ids, of
  the mean difference of the run's *other* prompts with that id (leave-one-out: no prompt
  is steered by a vector built from itself). An instruction id no other prompt holds adds
  nothing. The run's prompts reach the method through ``bind_run``.

Vectors are the raw mean differences (not normalized), as in CAA, so ``coeff`` is in units
of the measured difference. What the model computes (the pairs' mean, the instruction
differences) is cached under the response cache directory, keyed by the model's
fingerprint, the layer and the source, so each worker computes it once per run and a fully
cached run loads no model. ``coeff == 0`` is the identity: nothing is installed.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pytest_steer.steering.attention import check_prompt_rows, shared_kernels
from pytest_steer.steering.errors import SteeringError, UnsupportedModelError
from pytest_steer.steering.method import PromptBatch, RunContext, SteeringMethod
from pytest_steer.steering.parameters import REQUIRED, Parameter

Scope = Literal["all", "generated"]
SCOPES: tuple[str, ...] = ("all", "generated")
VECTOR_SUFFIXES = (".safetensors", ".npy", ".pt", ".pth")
VECTOR_CACHE = "actadd-vectors"
ACTIVATION_BATCH = 16

# Models inside an apply() block; a second block on the same model would add its vector twice.
_STEERED_MODELS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class ActAdd(SteeringMethod):
    """Activation addition at the output of decoder layer ``layer``; see the module docstring."""

    name = "actadd"
    # What --steer-method gives: file paths as text (the constructor also takes a tensor).
    parameters = (
        Parameter("layer", int, REQUIRED),
        Parameter("coeff", float, REQUIRED),
        Parameter("scope", Scope, "all"),
        Parameter("vector", str | None, None),
        Parameter("pairs", str | None, None),
    )

    @classmethod
    def create(cls, params: Mapping[str, Any], model_config: Any) -> ActAdd:
        """From ``--steer-method actadd:layer=L,coeff=C[,scope=generated][,vector=PATH|pairs=PATH]``,
        checked and converted at collection against ``parameters``."""
        method = cls(
            layer=params["layer"], coeff=params["coeff"], scope=params.get("scope", "all"),
            vector=params.get("vector"), pairs=params.get("pairs"),
        )
        if model_config is not None:
            method.check_model_config(model_config)
        return method

    def __init__(
        self,
        layer: int,
        coeff: float,
        *,
        vector: str | os.PathLike[str] | torch.Tensor | Any | None = None,
        pairs: str | os.PathLike[str] | None = None,
        scope: Scope = "all",
    ) -> None:
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ValueError(f"actadd layer must be a decoder layer index >= 0, got {layer!r}")
        if isinstance(coeff, bool) or not isinstance(coeff, (int, float)) or not math.isfinite(coeff):
            raise ValueError(f"actadd coeff must be a finite number, got {coeff!r}")
        if scope not in SCOPES:
            raise ValueError(f"actadd scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if vector is not None and pairs is not None:
            raise ValueError("actadd takes a vector or pairs, not both: vector=PATH is the steering vector, pairs=PATH computes one")
        self.layer = layer
        self.coeff = float(coeff)
        self.scope: Scope = scope
        self.vector_path = None if vector is None or isinstance(vector, torch.Tensor) or hasattr(vector, "shape") else Path(vector)
        self._fixed: torch.Tensor | None = None
        if vector is not None:
            self._fixed = read_vector(self.vector_path) if self.vector_path is not None else _one_vector(torch.as_tensor(vector), "vector")
        self.pairs_path = None if pairs is None else Path(pairs)
        self._pairs = read_pairs(self.pairs_path) if self.pairs_path is not None else None
        self._run: RunContext | None = None
        self._instruction: InstructionVectors | None = None

    @property
    def source(self) -> str:
        return "vector" if self._fixed is not None else "pairs" if self._pairs is not None else "instructions"

    def __repr__(self) -> str:
        where = {"vector": f", vector={str(self.vector_path or 'tensor')!r}", "pairs": f", pairs={str(self.pairs_path)!r}"}
        return f"ActAdd(layer={self.layer}, coeff={self.coeff:g}, scope={self.scope!r}{where.get(self.source, '')})"

    @property
    def is_identity(self) -> bool:
        return self.coeff == 0.0

    def check_model_config(self, model_config: Any) -> None:
        model_type = _config_value(model_config, "model_type")
        layers = _config_value(model_config, "num_hidden_layers")
        if layers is not None and self.layer >= int(layers):
            raise SteeringError(f"actadd layer {self.layer} does not exist: this {model_type} model has layers 0-{int(layers) - 1}")
        hidden = _config_value(model_config, "hidden_size")
        if self._fixed is not None and hidden is not None and self._fixed.numel() != int(hidden):
            raise SteeringError(
                f"the actadd vector {self.vector_path or ''} holds {self._fixed.numel()} values; this {model_type} model's "
                f"hidden size is {int(hidden)}: give a vector computed on this model"
            )

    def bind_run(self, run: RunContext) -> None:
        self._run = run

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"layer": self.layer, "coeff": self.coeff, "scope": self.scope, "source": self.source}
        if self.is_identity:
            return params
        if self.source == "instructions":
            params["vectors"] = self._instruction_vectors().digests()
        else:
            params["vector"] = vector_digest(self._single_vector())
        return params

    def steer(self, batch: PromptBatch) -> ActAddRun:
        return self.apply(batch.model, batch.tokenizer, batch.input_ids, batch.attention_mask, texts=batch.texts)

    def apply(
        self,
        model: nn.Module,
        tokenizer: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> ActAddRun:
        """The context manager that steers ``model`` on this batch (left- or right-padded).

        Inside the ``with`` block every forward and ``generate`` call on this batch is
        steered; leaving it removes the hooks. ``texts`` (the exact strings tokenized into
        ``input_ids``, chat template applied) pick each row's instruction vector; other
        sources use one vector for every row.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        rows = input_ids.shape[0]
        hidden = int(model.config.hidden_size)
        if self.is_identity:
            vectors = torch.zeros(rows, hidden)
        elif self.source == "instructions":
            if texts is None or len(texts) != rows:
                raise ValueError("instruction vectors are chosen by each row's text: pass texts=, one templated prompt per row")
            vectors = self._instruction_vectors(model, tokenizer).for_texts(texts, tokenizer, hidden)
        else:
            vectors = self._single_vector(model, tokenizer).expand(rows, -1)
        return steer_rows(model, input_ids, attention_mask, vectors, coeff=self.coeff, layer=self.layer, scope=self.scope)

    def _single_vector(self, model: nn.Module | None = None, tokenizer: Any = None) -> torch.Tensor:
        if self._fixed is None:
            assert self._pairs is not None and self.pairs_path is not None
            source = {"pairs": hashlib.sha256(self.pairs_path.read_bytes()).hexdigest()}
            stored = self._cached(source, lambda m, t: pair_vector(m, t, self._pairs or [], self.layer)[None], model, tokenizer)
            self._fixed = stored[0]
        return self._fixed

    def _instruction_vectors(self, model: nn.Module | None = None, tokenizer: Any = None) -> InstructionVectors:
        if self._instruction is None:
            if self._run is None:
                raise SteeringError(
                    "actadd's default instruction vectors are built from the run's prompts: call bind_run(RunContext(...)) "
                    "first, or give a vector (vector=PATH) or contrast pairs (pairs=PATH)"
                )
            measures = instruction_measures(self._run.prompts)
            if not measures:
                raise SteeringError(
                    "actadd's instruction vectors need rows with an 'instructions' column (the text of each instruction, as in "
                    "Split-IFEval) whose text occurs in the prompt; none of this run's prompts has one. Use Split-IFEval rows, "
                    "or give a vector (vector=PATH) or contrast pairs (pairs=PATH)"
                )
            source = {"instructions": [[m.prompt, m.instruction_id, m.without] for m in measures]}
            differences = self._cached(source, lambda m, t: instruction_differences(m, t, measures, self.layer), model, tokenizer)
            self._instruction = InstructionVectors(measures, differences)
        return self._instruction

    def _cached(self, source: Mapping[str, Any], compute: Any, model: nn.Module | None, tokenizer: Any) -> torch.Tensor:
        """What ``compute(model, tokenizer)`` returns for ``source``, read from the run's cache when there."""
        run = self._run
        path = None
        if run is not None and run.cache_dir is not None:
            key = _digest({"model": dict(run.model_key), "layer": self.layer, "source": source})
            path = Path(run.cache_dir) / VECTOR_CACHE / key[:2] / f"{key}.safetensors"
            stored = _read_cached(path)
            if stored is not None:
                return stored
        if model is None:
            if run is None:
                raise SteeringError("actadd needs the model to compute its vector: call apply(), or bind_run() first")
            model, tokenizer = run.load_model()
        values = compute(model, tokenizer).float().cpu()
        if path is not None:
            _write_cached(path, values)
        return values


@dataclass(frozen=True)
class InstructionMeasure:
    """One (prompt, instruction) pair: the prompt, and the prompt with that instruction's text cut out."""

    prompt: str
    instruction_id: str
    without: str


def instruction_measures(prompts: Sequence[Any]) -> list[InstructionMeasure]:
    """Every (prompt, instruction) of rows whose instruction text occurs in the prompt, once per distinct prompt."""
    measures, seen = [], set()
    for row in prompts:
        if row.prompt in seen or not row.instructions:
            continue
        seen.add(row.prompt)
        for instruction_id, text in zip(row.instruction_id_list, row.instructions):
            without = remove_text(row.prompt, text)
            if without is not None:
                measures.append(InstructionMeasure(row.prompt, instruction_id, without))
    return measures


def remove_text(prompt: str, text: str) -> str | None:
    """``prompt`` with the first occurrence of ``text`` cut out and the seam's spaces joined; None if absent or nothing is left."""
    start = prompt.find(text) if text.strip() else -1
    if start < 0:
        return None
    before, after = prompt[:start].rstrip(" \t"), prompt[start + len(text) :].lstrip(" \t")
    seam = " " if before and after and not before.endswith("\n") and not after.startswith("\n") else ""
    left = (before + seam + after).strip()
    return left or None


class InstructionVectors:
    """Leave-one-out instruction vectors of a run, from each (prompt, instruction) difference."""

    def __init__(self, measures: Sequence[InstructionMeasure], differences: torch.Tensor) -> None:
        self.measures = list(measures)
        self.differences = differences
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        for measure, difference in zip(self.measures, differences):
            self._sums[measure.instruction_id] = self._sums.get(measure.instruction_id, 0) + difference
            self._counts[measure.instruction_id] = self._counts.get(measure.instruction_id, 0) + 1
        self._by_prompt: dict[str, list[tuple[str, torch.Tensor]]] = {}
        for measure, difference in zip(self.measures, differences):
            self._by_prompt.setdefault(measure.prompt, []).append((measure.instruction_id, difference))

    def vector(self, prompt: str) -> torch.Tensor | None:
        """The prompt's vector: per instruction id, the mean difference of the other prompts; None when it has none."""
        total = None
        for instruction_id, own in self._by_prompt.get(prompt, []):
            others = self._counts[instruction_id] - 1
            if others:
                mean = (self._sums[instruction_id] - own) / others
                total = mean if total is None else total + mean
        return total

    def for_texts(self, texts: Sequence[str], tokenizer: Any, hidden: int) -> torch.Tensor:
        """(rows, hidden): each templated text's vector, zeros for a text that is none of the run's prompts."""
        from pytest_steer.generation import render_prompt

        rendered = {render_prompt(tokenizer, prompt): prompt for prompt in self._by_prompt}
        vectors = torch.zeros(len(texts), hidden)
        for row, text in enumerate(texts):
            prompt = rendered.get(text)
            vector = None if prompt is None else self.vector(prompt)
            if vector is not None:
                vectors[row] = vector
        return vectors

    def digests(self) -> dict[str, str]:
        """Per instruction id, a digest of the differences its leave-one-out vectors are built from."""
        return {instruction_id: vector_digest(torch.cat([total, torch.tensor([float(self._counts[instruction_id])])]))
                for instruction_id, total in sorted(self._sums.items())}


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM (``model.model.layers`` and its kin), found by the config's layer count."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    count = getattr(config, "num_hidden_layers", None)
    base = getattr(model, "base_model", model)
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, nn.ModuleList) and (count is None or len(layers) == count):
            return layers
    if count is not None:
        for _, module in base.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == count:
                return module
    raise UnsupportedModelError(
        f"actadd cannot find the decoder layers of this {model_type} model ({type(model).__name__}): no list of "
        f"{count} layers under model.{'model' if base is not model else ''}; pass the causal LM itself (e.g. LlamaForCausalLM)"
    )


def steer_rows(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    vectors: torch.Tensor,
    *,
    coeff: float,
    layer: int,
    scope: Scope = "all",
) -> ActAddRun:
    """The context manager that adds ``coeff × vectors[row]`` to layer ``layer``'s output of each row of this batch."""
    if model in _STEERED_MODELS:
        raise SteeringError("this model is already inside an ActAdd.apply() block; leave it before opening another")
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise SteeringError(f"actadd layer {layer} does not exist: this model has layers 0-{len(layers) - 1}")
    rows, hidden = input_ids.shape[0], int(model.config.hidden_size)
    if vectors.shape != (rows, hidden):
        raise ValueError(f"vectors must be (rows, hidden size) = ({rows}, {hidden}), got {tuple(vectors.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    return ActAddRun(
        missing=[[] for _ in range(rows)],
        _model=model,
        _layer=layers[layer],
        _addition=_Addition(input_ids, attention_mask, (coeff * vectors.float()).to(input_ids.device), scope),
    )


class _Addition:
    """What the hooks share: the batch's prompt, each row's addition, and the current forward's mask and rows."""

    def __init__(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, additions: torch.Tensor, scope: Scope) -> None:
        self.prompt_ids = prompt_ids
        self.prompt_mask = prompt_mask
        self.additions = additions  # (prompt rows, hidden), coeff applied
        self.scope = scope
        self.rows: torch.Tensor | None = None  # prompt row of each forward row; None: the batch as given
        self.mask: torch.Tensor | None = None  # the attention mask of the forward under way

    def select_rows(self, prompt_rows: torch.Tensor) -> None:
        self.rows = prompt_rows.to(self.prompt_ids.device)

    def before_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Keep the forward's 2-D attention mask; refuse a forward that holds the prompt's length but not the prompt."""
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self.mask = mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        prompt_ids = self.prompt_ids if self.rows is None else self.prompt_ids[self.rows]
        check_prompt_rows(input_ids, prompt_ids, self.prompt_ids.shape, "ActAdd")

    def after_layer(self, module: nn.Module, args: tuple, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        batch, length, _ = hidden.shape
        additions = self.additions if self.rows is None else self.additions[self.rows]
        if batch != additions.shape[0]:
            if batch % additions.shape[0]:
                raise SteeringError(
                    f"a forward of {batch} rows cannot be matched to the {additions.shape[0]} steered prompts; run the batch "
                    "given to ActAdd.apply() (generate may repeat each row, e.g. num_return_sequences)"
                )
            additions = additions.repeat_interleave(batch // additions.shape[0], dim=0)
        steered = self._steered_positions(batch, length, hidden.device)
        hidden = hidden + steered[..., None].to(hidden.dtype) * additions[:, None, :].to(device=hidden.device, dtype=hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def _steered_positions(self, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """(batch, length) bool: the real positions of this forward inside the scope.

        The forward's positions are the last ``length`` columns of its attention mask (past
        and new tokens); without a mask every position is real, and a forward shorter than
        the prompt continues it.
        """
        prompt_length = self.prompt_ids.shape[1]
        if self.mask is not None and self.mask.shape == (batch, self.mask.shape[1]) and self.mask.shape[1] >= length:
            real = self.mask[:, -length:].to(device).bool()
            first = self.mask.shape[1] - length
        else:
            real = torch.ones(batch, length, dtype=torch.bool, device=device)
            first = 0 if length >= prompt_length else prompt_length
        if self.scope == "generated":
            columns = first + torch.arange(length, device=device)
            real = real & (columns >= prompt_length - 1)[None, :]
        return real


@dataclass
class ActAddRun:
    """One batch's activation addition: the hooks' lifetime, and the row selection of the decode loop."""

    missing: list[list[str]]  # per prompt row: nothing is ever missing; kept for the steer() interface
    _model: nn.Module = field(repr=False)
    _layer: nn.Module = field(repr=False)
    _addition: _Addition = field(repr=False)
    _handles: list[RemovableHandle] = field(default_factory=list, repr=False)

    def select_rows(self, prompt_rows: torch.Tensor) -> None:
        """The forwards that follow run these prompt rows (see ``SteeredBatch.select_rows``)."""
        self._addition.select_rows(prompt_rows)

    def __enter__(self) -> ActAddRun:
        if self._model in _STEERED_MODELS:
            raise SteeringError("this model is already inside an ActAdd.apply() block; leave it before opening another")
        if bool(self._addition.additions.any()):
            base = getattr(self._model, "base_model", self._model)
            self._handles = [
                base.register_forward_pre_hook(self._addition.before_forward, with_kwargs=True),
                self._layer.register_forward_hook(self._addition.after_layer),
            ]
        _STEERED_MODELS.add(self._model)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._addition.rows = self._addition.mask = None
        _STEERED_MODELS.discard(self._model)


def last_token_activations(model: nn.Module, tokenizer: Any, prompts: Sequence[str], layer: int) -> torch.Tensor:
    """(prompts, hidden) float32: layer ``layer``'s output at the last token of each prompt, chat template applied."""
    from pytest_steer.generation import render_prompt

    layers = decoder_layers(model)
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple, output: Any) -> None:
        captured.append((output[0] if isinstance(output, tuple) else output).detach())

    device = next(model.parameters()).device
    results = []
    handle = layers[layer].register_forward_hook(keep)
    try:
        for start in range(0, len(prompts), ACTIVATION_BATCH):
            texts = [render_prompt(tokenizer, prompt) for prompt in prompts[start : start + ACTIVATION_BATCH]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            mask = batch["attention_mask"]
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            captured.clear()
            with torch.inference_mode(), shared_kernels(model):  # the kernels generation runs on
                model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=False)
            last = mask.shape[1] - 1 - mask.flip(-1).long().argmax(-1)  # last real token, whichever side pads
            results.append(captured[0][torch.arange(mask.shape[0], device=device), last].float().cpu())
    finally:
        handle.remove()
    return torch.cat(results)


def pair_vector(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]], layer: int) -> torch.Tensor:
    """The mean over pairs of (positive − negative) activation at the last token (CAA, DiffMean)."""
    positive = last_token_activations(model, tokenizer, [p for p, _ in pairs], layer)
    negative = last_token_activations(model, tokenizer, [n for _, n in pairs], layer)
    return (positive - negative).mean(0)


def instruction_differences(model: nn.Module, tokenizer: Any, measures: Sequence[InstructionMeasure], layer: int) -> torch.Tensor:
    """(measures, hidden): activation with the instruction − without it, per (prompt, instruction)."""
    prompts = list(dict.fromkeys(m.prompt for m in measures))
    with_text = dict(zip(prompts, last_token_activations(model, tokenizer, prompts, layer)))
    without = last_token_activations(model, tokenizer, [m.without for m in measures], layer)
    return torch.stack([with_text[m.prompt] for m in measures]) - without


def read_vector(path: Path) -> torch.Tensor:
    """The one vector a ``.safetensors``, ``.npy`` or weights-only ``.pt`` file holds, as float32."""
    if path.suffix not in VECTOR_SUFFIXES:
        raise ValueError(f"actadd vector {path}: unsupported file type {path.suffix!r}; use one of {', '.join(VECTOR_SUFFIXES)}")
    if not path.is_file():
        raise ValueError(f"actadd vector {path} does not exist; give the path of a {', '.join(VECTOR_SUFFIXES)} file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path))
        elif path.suffix == ".npy":
            import numpy as np

            loaded = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # each reader raises its own types; the file is unusable either way
        raise ValueError(f"actadd vector {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    if isinstance(loaded, Mapping):
        tensors = [value for value in loaded.values() if isinstance(value, torch.Tensor)]
        if len(tensors) != 1 or len(loaded) != 1:
            raise ValueError(f"actadd vector {path} holds {len(loaded)} entries ({', '.join(map(str, loaded))}); save exactly one vector")
        loaded = tensors[0]
    if not isinstance(loaded, torch.Tensor):
        raise ValueError(f"actadd vector {path} holds a {type(loaded).__name__}, not a tensor; save exactly one vector")
    return _one_vector(loaded, f"vector {path}")


def _one_vector(values: torch.Tensor, what: str) -> torch.Tensor:
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(f"actadd {what} has shape {tuple(values.shape)}; it must hold one vector (hidden size,)")
    if not values.is_floating_point() or not bool(torch.isfinite(values).all()):
        raise ValueError(f"actadd {what} must hold finite floating-point values")
    return values.detach().float().cpu()


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """The (positive, negative) texts of a JSONL file of ``{"positive": ..., "negative": ...}`` objects."""
    from pytest_steer.jsonl import JsonLinesError, read_json_lines

    pairs = []
    try:
        for number, row in read_json_lines(path):
            texts = row.get("positive"), row.get("negative")
            if not all(isinstance(text, str) and text.strip() for text in texts):
                raise ValueError(f"{path}:{number}: each line needs non-empty 'positive' and 'negative' strings")
            pairs.append((str(texts[0]), str(texts[1])))
    except JsonLinesError as exc:
        raise ValueError(f"actadd pairs: {exc}") from None
    except OSError as exc:
        raise ValueError(f"actadd pairs {path} cannot be read: {exc}") from None
    if not pairs:
        raise ValueError(f"actadd pairs {path} holds no pairs; give one JSON object per line")
    return pairs


def vector_digest(vector: torch.Tensor) -> str:
    """A short digest of a vector's float32 values."""
    return hashlib.sha256(vector.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _digest(value: Any) -> str:
    from pytest_steer.cache import digest

    return digest(value)


def _config_value(model_config: Any, name: str) -> Any:
    return model_config.get(name) if isinstance(model_config, Mapping) else getattr(model_config, name, None)


def _read_cached(path: Path) -> torch.Tensor | None:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["values"]
    except Exception:  # absent, partial or foreign: a miss, computed again and rewritten
        return None


def _write_cached(path: Path, values: torch.Tensor) -> None:
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        os.close(handle)
        try:
            save_file({"values": values.contiguous()}, temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError:  # a read-only cache costs a recomputation, not the run
        pass
