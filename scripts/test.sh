#!/usr/bin/env bash
# The project's tests: unit tests on tiny models plus end-to-end runs on the embedded model.
# Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "${STEER_VENV:-$root/.venv}/bin/pytest" "$@"  # no path given: the testpaths of pyproject.toml
