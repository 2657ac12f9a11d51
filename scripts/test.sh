#!/usr/bin/env bash
# The project's tests: unit tests on tiny models plus end-to-end runs on the embedded model.
# Extra arguments go to pytest. The tests run on one xdist worker per CPU core (-n auto): most of
# them start pytest processes of their own, whose imports keep one core busy; -n 0 runs them in one process.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "${STEER_VENV:-$root/.venv}/bin/pytest" -n auto "$@"  # no path given: the testpaths of pyproject.toml
