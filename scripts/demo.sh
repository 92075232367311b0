#!/usr/bin/env bash
# The main job on a fresh machine: install, then generate the synthetic dataset.
# DEMO_DIR sets where outputs go (default: ./runs/demo), DEMO_CASES the number of cases.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
DEMO_DIR="${DEMO_DIR:-$ROOT/runs/demo}"
DEMO_CASES="${DEMO_CASES:-16}"
echo "[demo] generating $DEMO_CASES synthetic CT cases"
liver-tumor synth --out "$DEMO_DIR/data" --cases "$DEMO_CASES" --seed 0 --shape 96 96 64
echo "[demo] dataset ready in $DEMO_DIR/data (datalist.json holds the train / validation / test split)"
