"""The decode loop: one prefill per distinct prompt, one row per response, rows dropped as they end.

transformers' ``generate`` prefills every row it is given and runs every row to the last
step. Here the responses of a batch that continue the same prompt (the trials of a case)
share that prompt's prefill: the prompts' KV cache is computed once, then selected into
one row per response. A row that emits an end-of-sequence token leaves the batch and the
KV cache at once, so each later step costs only the rows still running; rows that end are
replaced by rows from the end of the batch, so only as many rows move as ended. The KV
cache (:mod:`pytest_steer.engine.kv_cache`) is written in place, and the decode steps receive one
additive padding mask built per batch and sliced to the step's keys, instead of a mask
built by the model at each step.

With a ``step_forward`` (``--steer-compile``: the model's forward compiled) the steps run on
a fixed-shape cache instead: every row runs to the last step (a row that ended is fed its
end token again and its output dropped) and every step attends over the whole buffer, the
unwritten slots masked in a mask updated in place. The step's shapes and buffers never
change, so the compiled step is traced once per batch shape and replays as one graph. The
prefill stays eager. The model is still called as a module, so steering hooks run.

The loop (:func:`decode`) is the same for every cache; what a kind of cache does at each
point of it is one :class:`DecodeSteps`: :class:`PreallocatedSteps` (the default),
:class:`FixedShapeSteps` (the fixed shape above) and :class:`DynamicSteps` (transformers'
own cache, kept for models whose layers are not all plain full attention).

The model is driven through its documented forward (``input_ids``, ``attention_mask``,
``position_ids``, the cache, ``logits_to_keep``), the cache API (``Cache`` of
``CacheLayerMixin`` layers, ``batch_select_indices``) and the model's acceptance of a
prepared 4D mask. The cache argument is named ``cache`` from transformers 5.24 and
``past_key_values`` before; the name is read from the forward's signature.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any, Literal, Protocol, overload

import torch

from pytest_steer.engine.kv_cache import CacheKind, advance, row_cache
from pytest_steer.engine.prefix import SharedPrefix, fill_prefix
from pytest_steer.steering.errors import UnsupportedModelError

# (scores of the running rows, their seeds, the step: one, or each row's own) -> the next token of each row
ChooseToken = Callable[[torch.Tensor, torch.Tensor, "int | torch.Tensor"], torch.Tensor]
# Called with the prompt row of every running row, before each forward whose rows changed.
RowsChanged = Callable[[torch.Tensor], None]
# Called once with the KV cache right after the prompts' prefill, one row per distinct prompt.
Prefilled = Callable[[Any], None]

CACHE_ARGUMENTS = ("cache", "past_key_values")
FIXED_CAPACITY_STEP = 64  # a fixed-shape cache holds a multiple of this many positions


def forward_parameters(model: Any) -> frozenset[str]:
    """The argument names of the model's forward, as documented by its signature."""
    return _forward_parameters(type(model))


@functools.cache
def _forward_parameters(forward_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(forward_class.forward).parameters)


def cache_argument(model: Any) -> str:
    """The name under which this model's forward takes its KV cache."""
    parameters = forward_parameters(model)
    for name in CACHE_ARGUMENTS:
        if name in parameters:
            return name
    raise UnsupportedModelError(
        f"{type(model).__name__}.forward takes its KV cache under none of the names {', '.join(CACHE_ARGUMENTS)}; "
        "install a transformers release within the tested range (see the README's 'Tested versions')"
    )


def compaction(running: torch.Tensor) -> torch.Tensor:
    """The new order of the rows once the ``running`` (boolean) ones stay: survivors past the
    new end fill the slots of the rows that ended before it; the others keep their place."""
    kept = int(running.sum())
    order = torch.arange(kept, device=running.device)
    order[(~running[:kept]).nonzero()[:, 0]] = running[kept:].nonzero()[:, 0] + kept
    return order


def padding_bias(attention_mask: torch.Tensor, capacity: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, 1, capacity): 0 over the keys a decode step sees, the dtype's minimum over the padding."""
    bias = torch.zeros(attention_mask.shape[0], 1, 1, capacity, dtype=dtype, device=attention_mask.device)
    bias[:, 0, 0, : attention_mask.shape[1]].masked_fill_(attention_mask == 0, torch.finfo(dtype).min)
    return bias


def prefill_mask(attention_mask: torch.Tensor, capacity: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, prompt length, capacity): 0 where a prompt token sees a key (itself and the real tokens before it),
    the dtype's minimum elsewhere."""
    length = attention_mask.shape[1]
    slots = torch.arange(capacity, device=attention_mask.device)
    causal = slots[None, :] <= torch.arange(length, device=attention_mask.device)[:, None]
    real = torch.zeros(attention_mask.shape[0], capacity, dtype=torch.bool, device=attention_mask.device)
    real[:, :length] = attention_mask.bool()
    visible = causal[None] & real[:, None, :]
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, torch.finfo(dtype).min)[:, None]


@contextlib.contextmanager
def forward_replaced(model: Any, forward: Callable[..., Any] | None) -> Any:
    """Calls of ``model(...)`` run ``forward`` while inside (its hooks still run around it)."""
    if forward is None:
        yield
        return
    own = model.__dict__.get("forward")  # a forward already set on the instance (accelerate's device hooks) comes back after
    model.forward = forward
    try:
        yield
    finally:
        if own is None:
            del model.forward
        else:
            model.forward = own


@contextlib.contextmanager
def contiguous_head_input(model: Any) -> Any:
    """While inside, the output embedding (lm_head) receives its input contiguous.

    A prefill keeps the logits of its last position only (``logits_to_keep``): a strided
    (rows, 1, hidden) slice, which torch multiplies by expanding the whole output matrix once
    per row (a (rows, hidden, vocab) copy: 58% of a bfloat16 prefill of 64 prompts on a CPU).
    Made contiguous (rows x hidden values), it is one plain matmul.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Module):
        yield
        return
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]) if args else None)
    try:
        yield
    finally:
        handle.remove()


class DecodeSteps(Protocol):
    """How the decode loop runs the model over one kind of KV cache."""

    step_forward: Callable[..., Any] | None  # what ``model(...)`` runs for the steps; None: the model's own forward

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefilled: Prefilled | None, prefix: SharedPrefix | None = None
    ) -> torch.Tensor:
        """Run the left-padded prompts into the cache, then show it to ``prefilled``; each prompt's next-token logits.
        ``prefix``: keys and values every prompt starts with, computed once (:mod:`pytest_steer.engine.prefix`), which
        the kinds that can start a cache with them write instead of recomputing."""
        ...

    def fan_out(self, prompt_of_row: torch.Tensor) -> None:
        """Select the prompts' cache into one row per response, row ``r`` continuing prompt ``prompt_of_row[r]``."""
        ...

    def drop(self, ended: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Let go of the running rows whose ``chosen`` token ended them (``ended``); the indices of the running rows
        that go on, in their new order."""
        ...

    def step(self, chosen: torch.Tensor) -> torch.Tensor:
        """Feed each running row its ``chosen`` token; the scores of each one's next token."""
        ...


class _Steps:
    """What every kind shares: the prompts' prefill and the positions and keys of the steps."""

    step_forward: Callable[..., Any] | None = None

    def __init__(self, model: Any, cache: Any, capacity: int, rows_changed: RowsChanged) -> None:
        self.model = model
        self.cache = cache
        self.capacity = capacity
        self.rows_changed = rows_changed
        self.cache_name = cache_argument(model)
        self.forward_parameters = forward_parameters(model)

    def _run_prompts(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_mask: torch.Tensor, skip: int = 0, **extra: Any
    ) -> torch.Tensor:
        """The prompts' forward over their columns from ``skip`` (the cache holds the columns before it)."""
        self.attention_mask = attention_mask
        self.keys = input_ids.shape[1]  # the keys the next step sees
        self.positions = attention_mask.long().cumsum(-1) - 1
        self.positions.masked_fill_(attention_mask == 0, 1)
        if "logits_to_keep" in self.forward_parameters:
            extra = {"logits_to_keep": 1, **extra}
        out = self.model(
            input_ids=input_ids[:, skip:],
            attention_mask=prompt_mask,
            position_ids=self.positions[:, skip:],
            use_cache=True,
            **{self.cache_name: self.cache},
            **extra,
        )
        return out.logits[:, -1]


class _ShrinkingSteps(_Steps, abc.ABC):
    """Steps whose batch holds the running rows only: a row that ends leaves the batch and the cache."""

    starts_with_prefix = False  # whether its cache can begin with a shared prefix's keys and values

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefilled: Prefilled | None, prefix: SharedPrefix | None = None
    ) -> torch.Tensor:
        skip = 0
        if prefix is not None and self.starts_with_prefix:
            fill_prefix(self.cache, prefix, attention_mask)
            skip = prefix.length
        logits = self._run_prompts(input_ids, attention_mask, attention_mask, skip)
        if prefilled is not None:
            prefilled(self.cache)
        return logits

    def fan_out(self, prompt_of_row: torch.Tensor) -> None:
        self.cache.batch_select_indices(prompt_of_row)
        self.rows_changed(prompt_of_row)
        self.prompt_of_row = prompt_of_row
        self.mask = self._step_mask(self.attention_mask[prompt_of_row])
        self.position = self.positions[prompt_of_row, -1:]

    def drop(self, ended: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        keep = self._kept(~ended)
        self.mask, self.position, self.prompt_of_row = self.mask[keep], self.position[keep], self.prompt_of_row[keep]
        self.cache.batch_select_indices(keep)
        self.rows_changed(self.prompt_of_row)
        return keep

    def step(self, chosen: torch.Tensor) -> torch.Tensor:
        self.keys += 1
        self.position = self.position + 1
        inputs = {
            "input_ids": chosen[:, None],
            "attention_mask": self._next_mask(),
            "position_ids": self.position,
            self.cache_name: self.cache,
        }
        return self.model(**inputs, use_cache=True).logits[:, -1]

    @abc.abstractmethod
    def _step_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mask the steps start from, given the response rows' padding mask."""

    @abc.abstractmethod
    def _kept(self, goes_on: torch.Tensor) -> torch.Tensor:
        """The rows that stay in the batch, in their new order, given which of them go on."""

    @abc.abstractmethod
    def _next_mask(self) -> torch.Tensor:
        """The mask of the step about to run (``keys`` already counts its token)."""


class PreallocatedSteps(_ShrinkingSteps):
    """The default cache: one additive mask for every step, of which a step sees its first ``keys`` columns;
    rows that end are replaced by rows from the end of the batch."""

    starts_with_prefix = True

    def _step_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        return padding_bias(attention_mask, self.capacity, self.model.dtype)

    def _kept(self, goes_on: torch.Tensor) -> torch.Tensor:
        return compaction(goes_on)

    def _next_mask(self) -> torch.Tensor:
        return self.mask[..., : self.keys]


class DynamicSteps(_ShrinkingSteps):
    """transformers' own cache (sliding windows...): the model builds its masks from a padding mask grown by one per step."""

    def _step_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        return attention_mask

    def _kept(self, goes_on: torch.Tensor) -> torch.Tensor:
        return goes_on.nonzero()[:, 0]

    def _next_mask(self) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        return self.mask


class FixedShapeSteps(_Steps):
    """``--steer-compile``: every step runs every row over the whole cache, so its shapes and buffers never change.

    A row that ended is fed its end token again and its scores dropped; the slots not written
    yet stay masked until their step.
    """

    def __init__(self, model: Any, cache: Any, capacity: int, rows_changed: RowsChanged, step_forward: Callable[..., Any] | None) -> None:
        super().__init__(model, cache, capacity, rows_changed)
        self.step_forward = step_forward
        # transformers 5.0 reads a forward's slots from cache_position, else from the cache's length (a number a graph would bake in)
        self.slot_argument = "cache_position" in self.forward_parameters

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefilled: Prefilled | None, prefix: SharedPrefix | None = None
    ) -> torch.Tensor:
        extra = {"cache_position": torch.arange(input_ids.shape[1], device=input_ids.device)} if self.slot_argument else {}
        logits = self._run_prompts(input_ids, attention_mask, prefill_mask(attention_mask, self.capacity, self.model.dtype), **extra)
        advance(self.cache, input_ids.shape[1])
        if prefilled is not None:
            for layer in self.cache.layers:
                layer.filled()
            prefilled(self.cache)
        return logits

    def fan_out(self, prompt_of_row: torch.Tensor) -> None:
        self.cache.batch_select_indices(prompt_of_row)
        self.rows_changed(prompt_of_row)
        self.mask = padding_bias(self.attention_mask[prompt_of_row], self.capacity, self.model.dtype)
        self.mask[..., self.keys :] = torch.finfo(self.model.dtype).min
        self.position = self.positions[prompt_of_row, -1:]
        self.running = torch.arange(len(prompt_of_row), device=prompt_of_row.device)
        self.fed = torch.empty(len(prompt_of_row), dtype=torch.int64, device=prompt_of_row.device)  # the token each row is fed

    def drop(self, ended: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        self.fed[self.running[ended]] = chosen[ended]  # from now on, the end token each of these rows chose
        keep = (~ended).nonzero()[:, 0]
        self.running = self.running[keep]
        return keep

    def step(self, chosen: torch.Tensor) -> torch.Tensor:
        self.fed[self.running] = chosen
        self.keys += 1
        self.position = self.position + 1
        self.mask[..., self.keys - 1] = 0
        extra = {"cache_position": self.cache.layers[0].write_at.clone()} if self.slot_argument else {}
        inputs = {"input_ids": self.fed[:, None], "attention_mask": self.mask, "position_ids": self.position, self.cache_name: self.cache}
        out = self.model(**inputs, use_cache=True, **extra)
        advance(self.cache, 1)
        return out.logits[:, -1][self.running]


def decode_steps(
    model: Any,
    prompt_length: int,
    max_new_tokens: int,
    rows_changed: RowsChanged,
    *,
    fixed_shape: bool,
    step_forward: Callable[..., Any] | None,
) -> DecodeSteps:
    """The steps over the KV cache this model takes: fixed-shape ones where asked for and possible."""
    capacity = prompt_length + max_new_tokens
    if fixed_shape:  # batches of nearby prompt lengths share one step shape, so one compiled step
        capacity = -(-capacity // FIXED_CAPACITY_STEP) * FIXED_CAPACITY_STEP
    cache, kind = row_cache(model, capacity, fixed_shape=fixed_shape)
    if kind is CacheKind.FIXED_SHAPE:
        return FixedShapeSteps(model, cache, capacity, rows_changed, step_forward)
    if kind is CacheKind.PREALLOCATED:
        return PreallocatedSteps(model, cache, capacity, rows_changed)
    # uncompiled: transformers' own cache changes shape every step, so a compiled step would retrace each time
    return DynamicSteps(model, cache, capacity, rows_changed)


@overload
def decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_of_row: torch.Tensor, seeds: torch.Tensor, *,
    max_new_tokens: int, eos_ids: Collection[int], choose: ChooseToken, rows_changed: RowsChanged | None = None,
    prefilled: Prefilled | None = None, logprobs: Literal[False] = False, step_forward: Callable[..., Any] | None = None,
    fixed_shape: bool = False, prefix: SharedPrefix | None = None,
) -> list[list[int]]: ...  # fmt: skip


@overload
def decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_of_row: torch.Tensor, seeds: torch.Tensor, *,
    max_new_tokens: int, eos_ids: Collection[int], choose: ChooseToken, rows_changed: RowsChanged | None = None,
    prefilled: Prefilled | None = None, logprobs: Literal[True], step_forward: Callable[..., Any] | None = None,
    fixed_shape: bool = False, prefix: SharedPrefix | None = None,
) -> tuple[list[list[int]], list[list[float]]]: ...  # fmt: skip


def decode(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_of_row: torch.Tensor,
    seeds: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: Collection[int],
    choose: ChooseToken,
    rows_changed: RowsChanged | None = None,
    prefilled: Prefilled | None = None,
    logprobs: bool = False,
    step_forward: Callable[..., Any] | None = None,
    fixed_shape: bool = False,
    prefix: SharedPrefix | None = None,
) -> list[list[int]] | tuple[list[list[int]], list[list[float]]]:
    """New tokens of each response row, up to and including its first end-of-sequence token.

    ``input_ids``/``attention_mask`` hold the distinct prompts, left-padded;
    ``prompt_of_row[r]`` is the prompt that response row ``r`` continues and ``seeds[r]``
    its seed. ``rows_changed`` lets a steering block follow the rows (see
    ``SteeredBatch.select_rows``); ``prefilled`` sees the prompts' cache before it is
    selected into response rows. With ``logprobs``, also each chosen token's log
    probability under the model's raw (temperature 1) distribution. ``step_forward``
    (the model's forward, compiled) runs the decode steps on a fixed-shape cache;
    ``fixed_shape`` runs them so without one. The tokens are the same either way. ``prefix``: the keys and values
    every prompt starts with, computed once, where the cache can start with them.
    """
    device = input_ids.device
    steps = decode_steps(
        model, input_ids.shape[1], max_new_tokens, rows_changed or (lambda rows: None),
        fixed_shape=fixed_shape or step_forward is not None, step_forward=step_forward,
    )  # fmt: skip
    prompt_of_row = prompt_of_row.to(device)
    with contiguous_head_input(model):  # the steps' inputs are contiguous already
        scores = steps.prefill(input_ids, attention_mask, prefilled, prefix)[prompt_of_row]
    steps.fan_out(prompt_of_row)
    seeds = seeds.to(device)
    eos = torch.tensor(sorted(eos_ids), device=device)
    rows = len(prompt_of_row)
    running = torch.arange(rows, device=device)  # the rows still generating, by their index in `tokens`
    tokens: list[list[int]] = [[] for _ in range(rows)]
    chosen_logprobs: list[list[float]] = [[] for _ in range(rows)]
    with forward_replaced(model, steps.step_forward):
        for step in range(max_new_tokens):
            chosen = choose(scores, seeds[running], step)
            running_rows = running.tolist()
            for row, token in zip(running_rows, chosen.tolist()):
                tokens[row].append(token)
            if logprobs:
                values = scores.float().log_softmax(dim=-1).gather(-1, chosen[:, None])[:, 0]
                for row, value in zip(running_rows, values.tolist()):
                    chosen_logprobs[row].append(value)
            if step == max_new_tokens - 1:
                break
            ended = torch.isin(chosen, eos)
            if bool(ended.any()):
                if bool(ended.all()):
                    break
                keep = steps.drop(ended, chosen)
                running, chosen = running[keep], chosen[keep]
            scores = steps.step(chosen)
    return (tokens, chosen_logprobs) if logprobs else tokens
