"""GPU discovery without importing torch, for decisions made on the xdist controller and by runs that generate nothing."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

# Device nodes of the GPU drivers torch can use on Linux: NVIDIA (CUDA), AMD (ROCm) and WSL's GPU. Without any of them
# torch finds no GPU, whatever its build.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def visible_gpu_count() -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([device for device in visible.split(",") if device.strip() and device.strip() != "-1"])
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return 0
    try:
        listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def device_type_without_torch(spec: str) -> str | None:
    """The device type ``--steer-device spec`` resolves to where that is certain without importing torch: ``cpu`` when
    asked for, or for ``auto`` on a Linux machine with no GPU driver's device node; None where torch must decide
    (a GPU may be there, or macOS, whose Apple GPU only torch can see)."""
    if spec == "cpu":
        return "cpu"
    if spec == "auto" and platform.system() == "Linux" and not any(Path(node).exists() for node in GPU_DEVICE_NODES):
        return "cpu"
    return None
