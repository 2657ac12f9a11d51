#!/usr/bin/env bash
# The demo: the shipped IFEval suite on the embedded model, baseline vs PASTA alpha 10,
# on every prompt of the built-in sample suite, with two CI gates: steering may not cost
# more than 0.15 strict prompt accuracy nor 1 nat of fluency, each judged on its 95% CI.
# Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "${STEER_VENV:-$root/.venv}/bin/pytest" suites/ifeval --steer-alpha 10 --steer-max-new-tokens 64 \
  --steer-gate "strict_prompt_accuracy - baseline >= -0.15" --steer-gate "quality - baseline >= -1" "$@"
