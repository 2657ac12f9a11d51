"""Linear layers multiplied on weights packed once, where this CPU runs them faster that way.

torch multiplies a CPU ``nn.Linear`` through a BLAS call that lays the weight out for its kernel on every call.
A decode step calls each linear layer of the model once with a few dozen rows, so that layout work is a large
share of the step. oneDNN can hold each weight in its kernel's blocked layout once
(``torch.ops.mkldnn._reorder_linear_weight``, the packing torch's compiler applies to frozen CPU models) and
multiply it as it is (``torch.ops.mkldnn._linear_pointwise``). On a 2-core AMD EPYC Zen 4, the float32 weight
matmuls of a 64-row decode step of the embedded model took 0.75 of their plain time, and 0.7 at a prefill's
hundreds of rows.

Whether to pack is measured, like the number format (:mod:`pytest_steer.model.numerics`). A matmul of the measured
shape runs both ways in the run's dtype. The packed way is taken where it agrees with the plain one up to float
rounding and runs at least ``PACKED_GAIN`` times as fast. The decision is kept in ``linear-kernel.json`` beside the
response cache, per CPU, torch build and dtype. Under xdist the controller decides once for every worker, so every
worker rounds alike.

A packed layer follows its weight. When the weight is replaced, moved or changed in place (for example by a
steering method that edits weights), the layer packs it again before it multiplies. A call that needs gradients,
an input of another dtype or device, or a call traced by ``torch.compile`` takes the plain path.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_steer.model.numerics import MEASURED_SHAPE, machine_key
from pytest_steer.store.kept import keep, read_kept

PACKED_GAIN = 1.1  # below this, packing buys too little to double the weights' memory
PACKED_ROWS = 64  # the rows oneDNN lays the weights out for: a CPU's planned batch (any row count multiplies)
AGREEMENT = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 2e-3}  # packed against plain, relative to the output's scale
KERNEL_FILE = "linear-kernel.json"


@dataclass(frozen=True)
class LinearKernel:
    """How this machine's linear layers multiply in one dtype, and why."""

    dtype: str
    packed: bool
    plain_ms: float | None = None  # the measured shape's matmul; None where nothing was measured
    packed_ms: float | None = None
    note: str | None = None  # why no timing decided: asked for, not a CPU, no oneDNN, a failed or disagreeing packed matmul

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LinearKernel:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> LinearKernel:
        return cls(entry["dtype"], entry["packed"], entry["plain_ms"], entry["packed_ms"], entry["note"])

    @property
    def reason(self) -> str:
        """What the linear layers run on here and why, for the load line."""
        if self.note is not None:
            return f"{'packed weights (oneDNN)' if self.packed else 'plain'} ({self.note})"
        gain = (self.plain_ms or 0.0) / max(self.packed_ms or 0.0, 1e-9)
        if self.packed:
            return f"packed weights (oneDNN): a {self.dtype} matmul ran {gain:.2f}x the plain one here"
        return f"plain: packed weights ran {gain:.2f}x the plain matmul here, under {PACKED_GAIN}x"

    def described(self, packed_layers: int) -> str:
        """The load line's words on the linear layers of a model of which ``packed_layers`` were packed."""
        if self.packed and not packed_layers:
            return "plain (packed copies of the weights would take over half the available memory)"
        return self.reason


def choose_kernel(device_type: str, dtype: str, directory: Path | None = None) -> LinearKernel:
    """How linear layers multiply on a device of this type in ``dtype``: measured on a CPU (read back from ``directory``
    when kept there, without importing torch); elsewhere the device's own kernels."""
    if device_type != "cpu":
        return LinearKernel(dtype, False, note=f"{device_type} uses its own kernels")
    key = f"{machine_key()} | {dtype}"
    kept = read_kept(directory, KERNEL_FILE, key)
    if kept is not None:
        try:
            return LinearKernel.from_dict(kept)
        except (KeyError, TypeError):
            pass  # an older entry: measured again
    kernel = measured_kernel(dtype)
    if directory is not None:
        keep(directory, KERNEL_FILE, key, asdict(kernel))
    return kernel


@functools.cache
def measured_kernel(dtype: str, repeats: int = 7) -> LinearKernel:
    """Multiply the measured shape plainly and on a packed weight, alternating (best of ``repeats`` each; tens of
    milliseconds), check that the two agree, and choose."""
    import torch  # why: a kept decision is read without torch

    if not torch.backends.mkldnn.is_available():
        return LinearKernel(dtype, False, note="this torch build has no oneDNN")
    rows, inputs, outputs = MEASURED_SHAPE
    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, inputs, generator=generator).to(torch_dtype)
    weight = (torch.randn(outputs, inputs, generator=generator) / inputs**0.5).to(torch_dtype)
    with torch.inference_mode():
        plain = torch.nn.functional.linear(x, weight)
        try:
            packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_ROWS)
            packed = packed_linear(x, packed_weight, None)
        except (RuntimeError, AttributeError, NotImplementedError) as exc:
            return LinearKernel(dtype, False, note=f"packing failed: {type(exc).__name__}: {str(exc)[:120]}")
        scale = float(plain.float().abs().max()) or 1.0
        difference = float((packed.float() - plain.float()).abs().max())
        if not difference <= AGREEMENT.get(dtype, 1e-4) * scale:
            return LinearKernel(dtype, False, note=f"packed and plain matmuls differ by {difference / scale:.1e} of the output")
        best = {"plain": float("inf"), "packed": float("inf")}
        work = {"plain": lambda: torch.nn.functional.linear(x, weight), "packed": lambda: packed_linear(x, packed_weight, None)}
        for _ in range(repeats):
            for name, run in work.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
    plain_ms, packed_ms = best["plain"] * 1e3, best["packed"] * 1e3
    return LinearKernel(dtype, plain_ms >= PACKED_GAIN * packed_ms, round(plain_ms, 3), round(packed_ms, 3))


def packed_linear(x: Any, packed_weight: Any, bias: Any) -> Any:
    import torch  # why: as in measured_kernel

    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, "none", [], "")


class PackedForward:
    """A linear layer's forward on its weight in oneDNN's layout, packed again whenever the weight is not the one
    packed (replaced, moved, cast or changed in place); a weight that cannot be packed or followed (another dtype, a
    tensor made under ``torch.inference_mode``, which keeps no version count) is multiplied plainly."""

    def __init__(self, module: Any) -> None:
        import torch  # why: as in measured_kernel

        self.module = module
        self.torch = torch  # a layer's forward runs hundreds of times a step: no import there
        self.state: tuple[Any, ...] | None = None
        self.packed: Any = None  # the weight in oneDNN's layout; None: multiplied plainly
        self._pack()
        if self.packed is None:
            raise ValueError("this layer's weight cannot be packed")

    @staticmethod
    def _state(weight: Any) -> tuple[Any, ...] | None:
        """What identifies the weight's values: None for one that keeps no version count (never packed)."""
        if weight.is_inference():
            return None
        return id(weight), weight.data_ptr(), weight._version, weight.dtype

    def _pack(self) -> None:
        weight = self.module.weight
        self.state, self.packed = self._state(weight), None
        if self.state is not None:
            try:
                self.packed = self.torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKED_ROWS)
            except (RuntimeError, NotImplementedError):
                pass  # a dtype oneDNN does not pack: multiplied plainly until the weight changes

    def __call__(self, x: Any) -> Any:
        torch, module = self.torch, self.module
        weight = module.weight
        if torch.compiler.is_compiling():  # a compiled graph multiplies plainly (its compiler lays weights out itself)
            return torch.nn.functional.linear(x, weight, module.bias)
        same_kind = x.dtype == weight.dtype and x.device.type == weight.device.type == "cpu"
        if same_kind and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
            if self._state(weight) != self.state:
                self._pack()
            if self.packed is not None:
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, module.bias, "none", [], "")
        return torch.nn.functional.linear(x, weight, module.bias)


def pack_linears(model: Any, available: int | None = None) -> int:
    """Give each plain ``torch.nn.Linear`` of ``model`` whose weight is on the CPU a forward on its packed weight
    (:class:`PackedForward`); how many layers now multiply packed. Subclasses (quantized layers, adapters' own
    layers) and layers whose weight cannot be packed keep their forward. The packed copies take as much memory as
    the weights: none is made where they would take over half of the ``available`` bytes (by default the memory
    the system has available; unknown off Linux)."""
    import torch  # why: as in measured_kernel

    layers = [module for module in model.modules() if type(module) is torch.nn.Linear and "forward" not in vars(module)]
    layers = [layer for layer in layers if layer.weight.device.type == "cpu"]
    available = available_memory() if available is None else available
    if available is not None and 2 * sum(layer.weight.nbytes for layer in layers) > available:
        return 0
    count = 0
    for module in layers:
        try:
            module.forward = PackedForward(module)
        except ValueError:
            continue  # a dtype oneDNN does not pack, or a weight made under inference mode
        count += 1
    return count


def available_memory() -> int | None:
    """Bytes of memory the system has available (``MemAvailable`` of /proc/meminfo); None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def unpack_linears(model: Any) -> None:
    """Give every packed layer of ``model`` its plain forward back (and free the packed weights)."""
    for module in model.modules():
        if isinstance(vars(module).get("forward"), PackedForward):
            del module.forward
