#!/usr/bin/env bash
# Install everything needed (see scripts/setup_env.sh) and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k synthetic -x`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
ruff check .
# The layer contract of pyproject.toml: lower layers never import upper ones, no cycles.
lint-imports
python -m pytest "$@"
