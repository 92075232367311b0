#!/usr/bin/env bash
# Shared install step of scripts/test.sh and scripts/demo.sh (sourced, not run).
# Creates .venv when missing, installs torch (keeps one that is already there; the CPU
# build 2.13.0 when no CUDA GPU is visible, the default build otherwise), then the
# package with its [dev] extra. Re-runs are quick: the package install is skipped while
# setup.cfg and pyproject.toml are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PY="$VENV/bin/python"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] CUDA GPU found: installing the default torch build"
    "$PY" -m pip install --quiet "torch>=2.4"
  else
    echo "[setup] no CUDA GPU: installing the CPU torch build 2.13.0"
    "$PY" -m pip install --quiet "torch==2.13.0"
  fi
fi

STAMP="$VENV/.liver-tumor-installed"
WANT="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! "$PY" -c "import pipeline" >/dev/null 2>&1; then
  echo "[setup] installing the package and its dependencies"
  # setuptools' build backend warns on every editable install that a folder named like the
  # package may shadow it; here that folder is the package itself, so nothing to act on.
  PYTHONWARNINGS="ignore:Editable installation" "$PY" -m pip install --quiet -e "$ROOT[dev]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
