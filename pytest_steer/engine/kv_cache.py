"""The KV caches the decode loop writes in place, sized once per batch for the prompt and every new token.

- :class:`PreallocatedLayer` (the default): attention reads views of the filled part, so a
  step's keys grow by one per step and rows that end leave the batch. This suits CPUs and
  eager GPUs, where a step costs about what its rows and keys cost.
- :class:`FixedShapeLayer` (``--steer-compile``): every forward returns the whole buffer,
  the unwritten slots masked by the caller, and the slot to write is read from a tensor.
  A decode step then has the same shapes and the same buffer addresses from the first
  step to the last, which is what graph capture (``torch.compile``, CUDA graphs) needs.

transformers' dynamic cache concatenates every layer's keys and values at each step, a copy
of the whole cache per step; both layers here write into buffers allocated once. Models
whose cache layers are not plain full attention (sliding windows, shared or linear layers)
keep transformers' own dynamic cache.
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import Any

import torch


class CacheKind(Enum):
    DYNAMIC = "dynamic"  # transformers' own: the model builds its masks
    PREALLOCATED = "preallocated"  # keys grow by one per step, rows that end leave
    FIXED_SHAPE = "fixed shape"  # every step sees every slot and every row


@functools.cache
def _layer_classes() -> tuple[type, type, type]:
    from transformers.cache_utils import CacheLayerMixin  # imported here: a run with every response cached never imports transformers

    class PreallocatedLayer(CacheLayerMixin):
        """One layer's keys and values in buffers sized for the whole decode, written in place.

        ``update`` returns views of the filled part, so attention reads the cache without
        copying it; the mask sizes follow the filled length, as with a dynamic cache, so a
        key's index stays its position in the sequence.
        """

        is_compileable = False
        is_sliding = False

        def __init__(self, capacity: int, start: int = 0) -> None:
            super().__init__()
            self.capacity = capacity
            self.length = start  # a prefill may start past columns that are padding for all its rows: they hold zeros
            self.rows = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.rows = key_states.shape[0]
            allocate = key_states.new_zeros if self.length else key_states.new_empty
            self._keys = allocate(*key_states.shape[:2], self.capacity, key_states.shape[-1])
            self._values = allocate(*value_states.shape[:2], self.capacity, value_states.shape[-1])
            self.device = key_states.device
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"the preallocated KV cache holds {self.capacity} tokens; a forward asked for {end}")
            self._keys[: self.rows, :, self.length : end] = key_states
            self._values[: self.rows, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = self._keys[: self.rows, :, :end], self._values[: self.rows, :, :end]
            return self.keys, self.values

        def start_from(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            """Begin, before any forward, with these (rows, kv heads, n, head dim) keys and values as the first n columns."""
            self.length = 0
            self.lazy_initialization(keys, values)
            self.length = keys.shape[-2]
            self._keys[:, :, : self.length] = keys
            self._values[:, :, : self.length] = values
            self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

        def get_mask_sizes(self, query: int | torch.Tensor) -> tuple[int, int]:
            # the query's length (transformers 5.0 passes the query's cache positions instead)
            query_length = query if isinstance(query, int) else query.shape[0]
            return self.length + query_length, 0

        def get_seq_length(self) -> int:
            return self.length

        def get_max_length(self) -> int:
            return self.capacity

        get_max_cache_shape = get_max_length  # its name in transformers 5.0

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Row ``i`` becomes row ``indices[i]``: in place when the batch does not grow, copying only the rows that move."""
            if not self.is_initialized:
                return
            if len(indices) > self._keys.shape[0]:
                self._keys, self._values = self._keys[indices], self._values[indices]
            else:
                moved = (indices != torch.arange(len(indices), device=indices.device)).nonzero()[:, 0]
                if moved.numel():
                    sources = indices[moved]
                    for buffer in (self._keys, self._values):
                        buffer[moved, :, : self.length] = buffer[sources, :, : self.length]
            self.rows = len(indices)
            self.keys, self.values = self._keys[: self.rows, :, : self.length], self._values[: self.rows, :, : self.length]

    class FixedShapeLayer(CacheLayerMixin):
        """One layer's keys and values in buffers of one shape for the whole decode, (rows, kv heads, capacity, head dim).

        ``update`` writes at the slots that start at ``write_at``, a one-element tensor shared by
        the layers and advanced by the decode loop (:func:`advance`), and returns the whole
        buffers. Unwritten slots hold zeros, so the masked keys weigh exactly nothing. Rows are
        selected once, after the prefill; the buffers then keep their address.
        """

        is_compileable = True
        is_sliding = False

        def __init__(self, capacity: int, write_at: torch.Tensor) -> None:
            super().__init__()
            self.capacity = capacity
            self.write_at = write_at
            self.length = 0  # what write_at holds, for the callers that read the length as a number

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self._keys = key_states.new_zeros(*key_states.shape[:2], self.capacity, key_states.shape[-1])
            self._values = value_states.new_zeros(*value_states.shape[:2], self.capacity, value_states.shape[-1])
            self.device = key_states.device
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            slots = self.write_at + torch.arange(key_states.shape[-2], device=self.write_at.device)
            self._keys.index_copy_(2, slots, key_states)
            self._values.index_copy_(2, slots, value_states)
            return self._keys, self._values

        def get_mask_sizes(self, query: int | torch.Tensor) -> tuple[int, int]:
            return self.capacity, 0

        def get_seq_length(self) -> int:
            return self.length

        def get_max_length(self) -> int:
            return self.capacity

        get_max_cache_shape = get_max_length

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if not self.is_initialized:
                return
            self._keys, self._values = self._keys[indices], self._values[indices]
            for buffer in (self._keys, self._values):  # a captured step may rely on these addresses
                torch._dynamo.mark_static_address(buffer)
            self.filled()

        def filled(self) -> None:
            """Point ``keys`` and ``values`` at the written slots (what a prefill's reader expects)."""
            self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

    class StreamLayer(CacheLayerMixin):
        """One layer of a running batch (:mod:`pytest_steer.engine.stream`): ``slots`` rows of ``prompt`` columns (each
        row's padded prompt) and then its own new tokens, the t-th written at column ``prompt + t``.

        Rows at different steps share a forward: before each step the loop sets ``columns``, the column each running
        row writes, and ``length``, the columns the step's keys span (``get_seq_length`` answers one less, so that a
        steering method reads key ``j`` as position ``j``). Unwritten columns hold zeros and are masked by the caller.
        """

        is_compileable = False
        is_sliding = False

        def __init__(self, slots: int, capacity: int) -> None:
            super().__init__()
            self.slots = slots
            self.capacity = capacity
            self.length = 0
            self.columns: torch.Tensor | None = None

        def allocate(self, like: torch.Tensor) -> None:
            """Zeroed buffers shaped after a prefill's keys (rows, kv heads, length, head dim)."""
            self._keys = like.new_zeros(self.slots, like.shape[1], self.capacity, like.shape[-1])
            self._values = like.new_zeros(self.slots, like.shape[1], self.capacity, like.shape[-1])
            self.device = like.device
            self.is_initialized = True

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.allocate(key_states)

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
            assert self.columns is not None, "the stream sets the columns before each step"
            rows = key_states.shape[0]
            index = torch.arange(rows, device=key_states.device)
            self._keys[index, :, self.columns] = key_states[:, :, 0]
            self._values[index, :, self.columns] = value_states[:, :, 0]
            return self._keys[:rows, :, : self.length], self._values[:rows, :, : self.length]

        def get_mask_sizes(self, query: int | torch.Tensor) -> tuple[int, int]:
            return self.length, 0

        def get_seq_length(self) -> int:
            return self.length - 1

        def get_max_length(self) -> int:
            return self.capacity

        get_max_cache_shape = get_max_length

        def place(self, slots: torch.Tensor, prefill: Any, rows: torch.Tensor) -> None:
            """Copy the prompt columns of ``prefill``'s rows ``rows`` (a prefill layer) into ``slots``."""
            width = prefill._keys.shape[2]
            self._keys[slots, :, :width] = prefill._keys[rows]
            self._values[slots, :, :width] = prefill._values[rows]
            self._keys[slots, :, width:] = 0
            self._values[slots, :, width:] = 0

        def move(self, targets: torch.Tensor, sources: torch.Tensor, columns: int) -> None:
            """Rows ``sources`` take the slots ``targets`` (their first ``columns`` columns)."""
            for buffer in (self._keys, self._values):
                buffer[targets, :, :columns] = buffer[sources, :, :columns]

    return PreallocatedLayer, FixedShapeLayer, StreamLayer


def _dynamic_layers(model: Any) -> tuple[Any, bool]:
    """transformers' own cache for this model, and whether its layers are all plain full attention (the layers
    the engine's caches replace)."""
    # imported here: a run with every response cached never imports transformers
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    dynamic = DynamicCache(config=model.config)
    return dynamic, bool(dynamic.layers) and all(type(layer) is DynamicLayer for layer in dynamic.layers)


def prefill_cache(model: Any, capacity: int, start: int) -> Any:
    """A cache for a prefill of ``capacity`` columns whose first ``start`` columns are padding for every row."""
    from transformers.cache_utils import Cache

    preallocated = _layer_classes()[0]
    return Cache(layers=[preallocated(capacity, start) for _ in _dynamic_layers(model)[0].layers])


def stream_cache(model: Any, slots: int, capacity: int) -> Any | None:
    """The cache of a running batch, or None for models whose layers are not all plain full attention."""
    from transformers.cache_utils import Cache

    dynamic, plain = _dynamic_layers(model)
    if not plain:
        return None
    stream = _layer_classes()[2]
    return Cache(layers=[stream(slots, capacity) for _ in dynamic.layers])


def row_cache(model: Any, capacity: int, *, fixed_shape: bool = False) -> tuple[Any, CacheKind]:
    """A KV cache for one decode of at most ``capacity`` positions, and its kind.

    Models whose dynamic cache is anything but plain full-attention layers keep that cache,
    even when ``fixed_shape`` is asked for.
    """
    from transformers.cache_utils import Cache

    dynamic, plain = _dynamic_layers(model)
    if not plain:
        return dynamic, CacheKind.DYNAMIC
    preallocated, fixed, _ = _layer_classes()
    if not fixed_shape:
        return Cache(layers=[preallocated(capacity) for _ in dynamic.layers]), CacheKind.PREALLOCATED
    write_at = torch.zeros(1, dtype=torch.int64, device=model.device)
    return Cache(layers=[fixed(capacity, write_at) for _ in dynamic.layers]), CacheKind.FIXED_SHAPE


def advance(cache: Any, tokens: int) -> None:
    """Move a fixed-shape cache's write position past ``tokens`` written slots."""
    layers = cache.layers
    layers[0].write_at.add_(tokens)
    for layer in layers:
        layer.length += tokens
