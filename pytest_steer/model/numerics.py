"""The number format ``--steer-dtype auto`` computes in: bfloat16 where this machine multiplies it fast, else float32.

On a GPU that supports bfloat16 it is bfloat16. On a CPU the choice is measured, not read off a
list of CPU names: a matmul of a decode step's shape is timed in both formats, and bfloat16 is
chosen where it runs at least ``BFLOAT16_GAIN`` times float32 (CPUs that multiply bfloat16 natively,
avx512_bf16 or AMX, run it 2-4x faster; elsewhere it is emulated and slower). The decision is kept
in ``number-format.json`` beside the response cache, per CPU and torch build, so that every rerun
of a machine decides alike (a response cached under one dtype is not another's); under xdist the
controller decides once and hands its decision to every worker.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_steer.store.kept import keep, read_kept

BFLOAT16_GAIN = 1.5  # below this, bfloat16's lost precision buys too little speed
MEASURED_SHAPE = (64, 1024, 2048)  # rows x in x out: a 64-row decode step's projection of a small model
NUMBER_FORMAT_FILE = "number-format.json"
CPU_FEATURES = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")  # named in the decision's reason, never used to decide


@dataclass(frozen=True)
class FormatChoice:
    """What ``auto`` resolved to on this machine, and why."""

    dtype: str  # "bfloat16" or "float32"
    float32_gflops: float | None = None  # measured on a CPU; None where nothing was measured (a GPU)
    bfloat16_gflops: float | None = None
    features: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FormatChoice:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> FormatChoice:
        return cls(entry["dtype"], entry["float32_gflops"], entry["bfloat16_gflops"], tuple(entry["features"]))

    @property
    def reason(self) -> str:
        """Why ``auto`` chose ``dtype`` here, for the load line."""
        if self.float32_gflops is None or self.bfloat16_gflops is None:
            return "the GPU computes in bfloat16" if self.dtype == "bfloat16" else f"{self.dtype} on this device"
        gain = self.bfloat16_gflops / self.float32_gflops
        flags = ", ".join(self.features) or "none of " + ", ".join(CPU_FEATURES)
        verdict = "at least" if self.dtype == "bfloat16" else "under"
        return f"a bfloat16 matmul ran {gain:.2f}x float32's here, {verdict} {BFLOAT16_GAIN}x; CPU flags: {flags}"


def choose_format(device_type: str, directory: Path | None = None) -> FormatChoice:
    """The format ``auto`` stands for on a device of this type: measured on a CPU (read back from ``directory`` when kept
    there, without importing torch)."""
    if device_type == "cuda":
        import torch  # why: this module decides a CPU's kept format without torch

        return FormatChoice("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    if device_type != "cpu":
        return FormatChoice("float32")
    key = machine_key()
    kept = read_kept(directory, NUMBER_FORMAT_FILE, key)
    if kept is not None:
        try:
            return FormatChoice.from_dict(kept)
        except (KeyError, TypeError):
            pass  # an older entry: measured again
    choice = measured_choice()
    if directory is not None:
        keep(directory, NUMBER_FORMAT_FILE, key, asdict(choice))
    return choice


@functools.cache
def measured_choice(repeats: int = 7) -> FormatChoice:
    """Time the measured shape in float32 and bfloat16, alternating (best of ``repeats`` each; tens of milliseconds),
    and choose. Alternating and keeping the best lets a busy machine slow both formats alike."""
    import torch  # why: this module decides a CPU's kept format without torch

    rows, inputs, outputs = MEASURED_SHAPE
    dtypes = (torch.float32, torch.bfloat16)
    operands = {dtype: (torch.randn(rows, inputs, dtype=dtype), torch.randn(outputs, inputs, dtype=dtype)) for dtype in dtypes}
    best = dict.fromkeys(dtypes, float("inf"))
    with torch.inference_mode():
        for x, w in operands.values():
            torch.nn.functional.linear(x, w)  # first call: kernel selection and packing
        for _ in range(repeats):
            for dtype, (x, w) in operands.items():
                start = time.perf_counter()
                torch.nn.functional.linear(x, w)
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    rates = {dtype: 2 * rows * inputs * outputs / max(seconds, 1e-9) / 1e9 for dtype, seconds in best.items()}
    return decide(rates[torch.float32], rates[torch.bfloat16], cpu_features())


def decide(float32_gflops: float, bfloat16_gflops: float, features: tuple[str, ...] = ()) -> FormatChoice:
    dtype = "bfloat16" if bfloat16_gflops >= BFLOAT16_GAIN * float32_gflops else "float32"
    return FormatChoice(dtype, round(float32_gflops, 1), round(bfloat16_gflops, 1), features)


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""  # not Linux: no flags, the platform's processor name


def _cpuinfo_field(name: str) -> str | None:
    return next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith(name)), None)


@functools.cache
def cpu_features() -> tuple[str, ...]:
    """Of ``CPU_FEATURES``, those /proc/cpuinfo lists (empty where it cannot be read)."""
    flags = (_cpuinfo_field("flags") or "").split()
    return tuple(feature for feature in CPU_FEATURES if feature in flags)


@functools.cache
def machine_key() -> str:
    """The CPU and torch build a decision holds for (the installed torch's version, local build label included)."""
    model = _cpuinfo_field("model name") or platform.processor() or platform.machine()
    return f"{model} | {','.join(cpu_features())} | torch {metadata.version('torch')}"
