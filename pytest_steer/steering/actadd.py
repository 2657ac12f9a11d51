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
  nothing, so a prompt none of whose ids another prompt holds runs unsteered: ``unsteered``
  names those prompts (their cases' records say so) and collection refuses a run where
  that is every prompt. The run's prompts reach the method through ``bind_run``.

Vectors are the raw mean differences (not normalized), as in CAA, so ``coeff`` is in units
of the measured difference. What the model computes (the pairs' mean, the instruction
differences) is cached under the response cache directory, keyed by the model's
fingerprint, the layer and the source, so each worker computes it once per run and a fully
cached run loads no model. An entry is read back only when it names its key, matches its
checksum and holds finite values of the expected shape; any other is computed again, with
a warning. ``coeff == 0`` is the identity: nothing is installed.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import tempfile
import warnings
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pytest_steer.model.prompts import render_prompt
from pytest_steer.steering.attention import check_prompt_rows, shared_kernels
from pytest_steer.steering.errors import SteeringError, SteeringWarning, UnsupportedModelError
from pytest_steer.steering.method import PromptBatch, RunContext, SteeringMethod
from pytest_steer.steering.parameters import REQUIRED, FilePath, Parameter

Scope = Literal["all", "generated"]
SCOPES: tuple[str, ...] = ("all", "generated")
VECTOR_SUFFIXES = (".safetensors", ".npy", ".pt", ".pth")
VECTOR_CACHE = "actadd-vectors"
VECTOR_CACHE_FORMAT = "1"
ACTIVATION_BATCH = 16
# A config's sizes under the names families give them (a config.json is read as is; transformers' configs map them).
LAYER_COUNT = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HIDDEN_SIZE = ("hidden_size", "n_embd", "d_model")
# Why instruction vectors leave a prompt unsteered, as case records and report lines say it.
NO_SHARED_ID = "the prompt shares no instruction id with another prompt of the run (instruction vectors are leave-one-out)"
NO_INSTRUCTION_TEXT = "the prompt holds none of its instruction texts (the 'instructions' column), so no instruction is measured"
_NO_INSTRUCTIONS = (
    "actadd's instruction vectors need rows with an 'instructions' column (the text of each instruction, as in "
    "Split-IFEval) whose text occurs in the prompt; none of this run's prompts has one. Use Split-IFEval rows, "
    "or give a vector (vector=PATH) or contrast pairs (pairs=PATH)"
)

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
        Parameter("vector", FilePath | None, None),
        Parameter("pairs", FilePath | None, None),
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
        layers = config_size(model_config, LAYER_COUNT)
        if layers is not None and self.layer >= layers:
            raise SteeringError(f"actadd layer {self.layer} does not exist: this {model_type} model has layers 0-{layers - 1}")
        hidden = config_size(model_config, HIDDEN_SIZE)
        if self._fixed is not None and hidden is not None and self._fixed.numel() != hidden:
            raise SteeringError(
                f"the actadd vector {self.vector_path or ''} holds {self._fixed.numel()} values; this {model_type} model's "
                f"hidden size is {hidden}: give a vector computed on this model"
            )

    def unsteered(self, prompts: Sequence[Any]) -> dict[str, str]:
        """With instruction vectors: the prompts none of whose instruction ids another prompt holds, by key, and why."""
        if self.is_identity or self.source != "instructions":
            return {}
        return unsteered_prompts(prompts)

    def check_prompts(self, prompts: Sequence[Any]) -> None:
        """Refuse instruction vectors that would steer none of the run's prompts."""
        if not prompts or len(self.unsteered(prompts)) < len(prompts):
            return
        if not instruction_measures(prompts):
            raise SteeringError(_NO_INSTRUCTIONS)
        raise SteeringError(
            f"actadd's instruction vectors steer none of the run's {len(prompts)} prompt(s): no two of them share an instruction "
            "id, and a prompt is steered only by the other prompts' differences for its ids (leave-one-out). Run more prompts "
            "per instruction id (a larger --steer-limit, or --steer-per-instruction 2 or more), or give a vector (vector=PATH) "
            "or contrast pairs (pairs=PATH)"
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
        hidden = hidden_size(model)
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
            stored = self._cached(source, 1, lambda m, t: pair_vector(m, t, self._pairs or [], self.layer)[None], model, tokenizer)
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
                raise SteeringError(_NO_INSTRUCTIONS)
            source = {"instructions": [[m.prompt, m.instruction_id, m.without] for m in measures]}

            def compute(model: nn.Module, tokenizer: Any) -> torch.Tensor:
                return instruction_differences(model, tokenizer, measures, self.layer)

            differences = self._cached(source, len(measures), compute, model, tokenizer)
            self._instruction = InstructionVectors(measures, differences)
        return self._instruction

    def _cached(self, source: Mapping[str, Any], rows: int, compute: Any, model: nn.Module | None, tokenizer: Any) -> torch.Tensor:
        """What ``compute(model, tokenizer)`` returns for ``source`` (``rows`` vectors), read from the run's cache when there."""
        run = self._run
        path = key = None
        if run is not None and run.cache_dir is not None:
            key = _digest({"model": dict(run.model_key), "layer": self.layer, "source": source})
            path = Path(run.cache_dir) / VECTOR_CACHE / key[:2] / f"{key}.safetensors"
            stored, problem = _read_cached(path, key, rows)
            if stored is not None:
                return stored
            if problem is not None:
                warnings.warn(SteeringWarning(f"actadd vector cache entry {path} {problem}; computing it again"), stacklevel=2)
        if model is None:
            if run is None:
                raise SteeringError("actadd needs the model to compute its vector: call apply(), or bind_run() first")
            model, tokenizer = run.load_model()
        values = compute(model, tokenizer).float().cpu()
        if not bool(torch.isfinite(values).all()):
            raise SteeringError(
                f"actadd's vectors computed at layer {self.layer} hold non-finite values: the model overflows there in "
                f"{next(model.parameters()).dtype}; run it in float32 (--steer-dtype float32) or give a vector (vector=PATH)"
            )
        if path is not None and key is not None:
            _write_cached(path, key, values)
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


def unsteered_prompts(prompts: Sequence[Any]) -> dict[str, str]:
    """Key -> why, of the prompt rows that instruction vectors leave unsteered (see ``InstructionVectors.vector``)."""
    measures = instruction_measures(prompts)
    holders = Counter(instruction_id for instruction_id, _ in {(m.instruction_id, m.prompt) for m in measures})
    measured: dict[str, set[str]] = {}
    for measure in measures:
        measured.setdefault(measure.prompt, set()).add(measure.instruction_id)
    unsteered = {}
    for row in prompts:
        ids = measured.get(row.prompt)
        if not ids:
            unsteered[row.key] = NO_INSTRUCTION_TEXT
        elif all(holders[instruction_id] < 2 for instruction_id in ids):
            unsteered[row.key] = NO_SHARED_ID
    return unsteered


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
        # per prompt and instruction id: the sum and number of the prompt's own differences (an id may repeat in a prompt)
        self._by_prompt: dict[str, dict[str, tuple[torch.Tensor, int]]] = {}
        for measure, difference in zip(self.measures, differences):
            own = self._by_prompt.setdefault(measure.prompt, {})
            total, count = own.get(measure.instruction_id, (0, 0))
            own[measure.instruction_id] = (total + difference, count + 1)

    def vector(self, prompt: str) -> torch.Tensor | None:
        """The prompt's vector: per instruction id, the mean difference of the other prompts; None when it has none."""
        total = None
        for instruction_id, (own, count) in self._by_prompt.get(prompt, {}).items():
            others = self._counts[instruction_id] - count
            if others:
                mean = (self._sums[instruction_id] - own) / others
                total = mean if total is None else total + mean
        return total

    def for_texts(self, texts: Sequence[str], tokenizer: Any, hidden: int) -> torch.Tensor:
        """(rows, hidden): each templated text's vector, zeros for a text that is none of the run's prompts."""

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


def config_size(model_config: Any, names: Sequence[str]) -> int | None:
    """A size of the model's text decoder, under the first of ``names`` set: in a config.json dict, in its
    ``text_config`` then at the top; in a transformers config, in ``get_text_config()`` then the config itself
    (its ``attribute_map`` gives GPT-2's ``n_layer`` as ``num_hidden_layers``). None when none is set."""
    if model_config is None:
        return None
    if isinstance(model_config, Mapping):
        scopes = [model_config.get("text_config"), model_config]
    else:
        get_text_config = getattr(model_config, "get_text_config", None)
        scopes = [get_text_config() if callable(get_text_config) else None, model_config]
    for scope in scopes:
        for name in names:
            value = _config_value(scope, name) if scope is not None else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM (``model.model.layers`` and its kin), found by the config's layer count."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    count = config_size(config, LAYER_COUNT)
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


def checked_layer(model: nn.Module, layer: int) -> nn.ModuleList:
    """The model's decoder layers, once ``layer`` is known to be one of them."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise SteeringError(f"actadd layer {layer} does not exist: this model has layers 0-{len(layers) - 1}")
    return layers


def hidden_size(model: nn.Module) -> int:
    size = config_size(getattr(model, "config", None), HIDDEN_SIZE)
    if size is None:
        raise UnsupportedModelError(f"actadd cannot read the hidden size of this {type(model).__name__} from its config")
    return size


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
    layers = checked_layer(model, layer)
    rows, hidden = input_ids.shape[0], hidden_size(model)
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

    layers = checked_layer(model, layer)
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
    files = ", ".join(VECTOR_SUFFIXES)
    if path.is_dir():
        raise ValueError(f"actadd vector {path} is a directory; give the path of the vector file itself (a {files} file)")
    if path.suffix not in VECTOR_SUFFIXES:
        raise ValueError(f"actadd vector {path}: unsupported file type {path.suffix!r}; use one of {files}")
    if not path.is_file():
        raise ValueError(f"actadd vector {path} does not exist; give the path of a {files} file")
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
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):  # torch advises weights_only=False: never
            raise ValueError(
                f"actadd vector {path} holds pickled objects besides tensors, which are not loaded (loading them could run "
                "code); save the vector with safetensors (safetensors.torch.save_file({'vector': v}, PATH)) or as a plain "
                "tensor (torch.save(v, PATH)), which loads with weights_only=True"
            ) from None
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
    from pytest_steer.store.jsonl import JsonLinesError, read_json_lines

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
    from pytest_steer.store.responses import digest

    return digest(value)


def _config_value(model_config: Any, name: str) -> Any:
    return model_config.get(name) if isinstance(model_config, Mapping) else getattr(model_config, name, None)


def _read_cached(path: Path, key: str, rows: int) -> tuple[torch.Tensor | None, str | None]:
    """(the values stored under ``key``, None), or (None, what is wrong with the entry); (None, None) when there is none."""
    from safetensors import safe_open

    if not path.is_file():
        return None, None
    try:
        with safe_open(str(path), framework="pt") as stored:
            metadata = stored.metadata() or {}
            values = stored.get_tensor("values")
    except Exception as exc:  # partial or foreign: computed again and rewritten
        return None, f"cannot be read ({type(exc).__name__}: {exc})"
    if metadata.get("format") != VECTOR_CACHE_FORMAT or metadata.get("key") != key:
        return None, "does not name this entry's key (overwritten, or written by another version)"
    if values.dtype != torch.float32 or values.ndim != 2 or values.shape[0] != rows:
        return None, f"holds {values.dtype} values of shape {tuple(values.shape)}, not {rows} float32 vectors"
    if metadata.get("checksum") != _values_checksum(values):
        return None, "does not match its checksum"
    if not bool(torch.isfinite(values).all()):
        return None, "holds non-finite values"
    return values, None


def _values_checksum(values: torch.Tensor) -> str:
    return hashlib.sha256(values.contiguous().numpy().tobytes()).hexdigest()


def _write_cached(path: Path, key: str, values: torch.Tensor) -> None:
    from safetensors.torch import save_file

    values = values.contiguous()
    metadata = {"format": VECTOR_CACHE_FORMAT, "key": key, "checksum": _values_checksum(values)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        os.close(handle)
        try:
            save_file({"values": values}, temporary, metadata=metadata)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError:  # a read-only cache costs a recomputation, not the run
        pass
