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
  ``torch.load(weights_only=True)``) holding one vector of the model's hidden size
  (:mod:`pytest_steer.steering.vectors` reads it, and the pairs);
- ``pairs=PATH``: a JSONL file of ``{"positive": ..., "negative": ...}`` texts; the vector is
  the mean difference of layer ``layer``'s output at the last real token of each text, chat
  template applied (CAA, DiffMean);
- neither (the default): instruction vectors (Stolfo et al., ICLR 2025;
  :mod:`pytest_steer.steering.actadd.instruction_vectors`). For each instruction
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
differences, :mod:`pytest_steer.steering.activations`) is cached under the response cache
directory (:mod:`pytest_steer.store.vector_cache`), keyed by the model's
fingerprint, the layer and the source, so each worker computes it once per run and a fully
cached run loads no model. An entry is read back only when it names its key, matches its
checksum and holds finite values of the expected shape; any other is computed again, with
a warning. ``coeff == 0`` is the identity: nothing is installed.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pytest_steer.model.config import HIDDEN_SIZE, LAYER_COUNT, config_size, config_value
from pytest_steer.steering.actadd.instruction_vectors import InstructionVectors, instruction_measures, unsteered_prompts
from pytest_steer.steering.activations import instruction_differences, pair_vector
from pytest_steer.steering.decoder import checked_layer, hidden_size
from pytest_steer.steering.errors import SteeringError, SteeringWarning
from pytest_steer.steering.method import PromptBatch, RunContext, SteeringMethod
from pytest_steer.steering.parameters import REQUIRED, FilePath, Parameter
from pytest_steer.steering.rows import check_prompt_rows
from pytest_steer.steering.vectors import checked_vector, read_pairs, read_vector, vector_digest
from pytest_steer.store.responses import digest
from pytest_steer.store.vector_cache import read_vectors, vector_cache_path, write_vectors

Scope = Literal["all", "generated"]
SCOPES: tuple[str, ...] = ("all", "generated")
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
    version = 1
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
            layer=params["layer"],
            coeff=params["coeff"],
            scope=params.get("scope", "all"),
            vector=params.get("vector"),
            pairs=params.get("pairs"),
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
        if self.vector_path is not None:
            self._fixed = read_vector(self.vector_path)
        elif vector is not None:
            self._fixed = checked_vector(torch.as_tensor(vector), "vector")
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
        model_type = config_value(model_config, "model_type")
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
        if self.source == "instructions" and (texts is None or len(texts) != rows):
            raise ValueError("instruction vectors are chosen by each row's text: pass texts=, one templated prompt per row")
        vectors = self._vectors(model, tokenizer, rows, texts)
        return steer_rows(model, input_ids, attention_mask, vectors, coeff=self.coeff, layer=self.layer, scope=self.scope)

    @classmethod
    def steer_together(cls, parts: Sequence[tuple[SteeringMethod, Sequence[int]]], batch: PromptBatch) -> ActAddRun:
        """Several actadd configs on their own prompt rows of one batch: one addition per (layer, scope), each row's
        own ``coeff × vector`` on its rows and exactly nothing on the others."""
        model, input_ids = batch.model, batch.input_ids
        rows, hidden = input_ids.shape[0], hidden_size(model)
        additions: dict[tuple[int, str], torch.Tensor] = {}
        for method, prompt_rows in parts:
            assert isinstance(method, ActAdd)
            vectors = method._vectors(model, batch.tokenizer, len(prompt_rows), [batch.texts[row] for row in prompt_rows])
            added = additions.setdefault((method.layer, method.scope), torch.zeros(rows, hidden))
            added[list(prompt_rows)] = method.coeff * vectors.float()
        attention_mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(input_ids)
        steps = [
            (checked_layer(model, layer)[layer], _Addition(input_ids, attention_mask, added.to(input_ids.device), scope))
            for (layer, scope), added in additions.items()
        ]
        return ActAddRun(missing=[[] for _ in range(rows)], _model=model, _steps=steps)

    def _vectors(self, model: nn.Module, tokenizer: Any, rows: int, texts: Sequence[str] | None) -> torch.Tensor:
        """(rows, hidden): the vector each row is steered along (zeros for the identity)."""
        hidden = hidden_size(model)
        if self.is_identity:
            return torch.zeros(rows, hidden)
        if self.source == "instructions":
            return self._instruction_vectors(model, tokenizer).for_texts(texts or [], tokenizer, hidden)
        return self._single_vector(model, tokenizer).expand(rows, -1)

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
            key = digest({"model": dict(run.model_key), "layer": self.layer, "source": source})
            path = vector_cache_path(run.cache_dir, key)
            stored, problem = read_vectors(path, key, rows)
            if stored is not None:
                return torch.from_numpy(stored)
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
            write_vectors(path, key, values.numpy())
        return values


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
    addition = _Addition(input_ids, attention_mask, (coeff * vectors.float()).to(input_ids.device), scope)
    return ActAddRun(missing=[[] for _ in range(rows)], _model=model, _steps=[(layers[layer], addition)])


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
    """One batch's activation additions (one per steered layer and scope): the hooks' lifetime, and the row selection
    of the decode loop."""

    missing: list[list[str]]  # per prompt row: nothing is ever missing; kept for the steer() interface
    _model: nn.Module = field(repr=False)
    _steps: list[tuple[nn.Module, _Addition]] = field(repr=False)  # (decoder layer, what is added to its output)
    _handles: list[RemovableHandle] = field(default_factory=list, repr=False)

    def select_rows(self, prompt_rows: torch.Tensor) -> None:
        """The forwards that follow run these prompt rows (see ``SteeredBatch.select_rows``)."""
        for _, addition in self._steps:
            addition.select_rows(prompt_rows)

    def __enter__(self) -> ActAddRun:
        if self._model in _STEERED_MODELS:
            raise SteeringError("this model is already inside an ActAdd.apply() block; leave it before opening another")
        base = getattr(self._model, "base_model", self._model)
        for layer, addition in self._steps:
            if bool(addition.additions.any()):
                self._handles += [
                    base.register_forward_pre_hook(addition.before_forward, with_kwargs=True),
                    layer.register_forward_hook(addition.after_layer),
                ]
        _STEERED_MODELS.add(self._model)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for _, addition in self._steps:
            addition.rows = addition.mask = None
        _STEERED_MODELS.discard(self._model)
