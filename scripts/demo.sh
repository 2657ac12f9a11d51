#!/usr/bin/env bash
# The demo: the shipped IFEval suite on the embedded model, baseline vs PASTA alpha 10,
# on every prompt of the built-in sample suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "${STEER_VENV:-$root/.venv}/bin/pytest" suites/ifeval --steer-alpha 10 --steer-max-new-tokens 64 "$@"
