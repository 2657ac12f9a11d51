#!/usr/bin/env bash
# The demo: the shipped IFEval suite on the embedded model, on every prompt of the built-in
# sample suite: the unsteered baseline, PASTA at alpha 10, and the emphasis prompt baseline
# (the highlighted instructions marked in the prompt). Two CI checks, judged together with
# Holm's correction: a gate that passes only when each steered config is shown to lose less
# than 0.15 strict prompt accuracy, and a fail-if that fails when one is shown to lose more
# than 1 nat of fluency. It computes in float32, so that its table is the same on every CPU (the default,
# --steer-dtype auto, computes in bfloat16 where the CPU multiplies it fast: add --steer-dtype auto to see it).
# Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "${STEER_VENV:-$root/.venv}/bin/pytest" suites/ifeval --steer-dtype float32 --steer-alpha 10 --steer-method emphasis --steer-max-new-tokens 64 \
  --steer-gate "strict_prompt_accuracy - baseline >= -0.15" --steer-fail-if "quality - baseline < -1" "$@"
