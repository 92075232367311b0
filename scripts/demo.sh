#!/usr/bin/env bash
# The main job on a fresh machine: install, generate the synthetic dataset, train.
# DEMO_DIR sets where outputs go (default: ./runs/demo), DEMO_CASES the number of cases,
# DEMO_EPOCHS the training epochs (CPU budget: about 10 s per epoch here at the defaults).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
DEMO_DIR="${DEMO_DIR:-$ROOT/runs/demo}"
DEMO_CASES="${DEMO_CASES:-16}"
echo "[demo] generating $DEMO_CASES synthetic CT cases"
liver-tumor synth --out "$DEMO_DIR/data" --cases "$DEMO_CASES" --seed 0 --shape 96 96 64
echo "[demo] dataset ready in $DEMO_DIR/data (datalist.json holds the train / validation / test split)"
DEMO_EPOCHS="${DEMO_EPOCHS:-20}"
echo "[demo] training the 3D U-Net for $DEMO_EPOCHS epochs on the CPU/GPU (quick settings)"
python -m monai.bundle run training \
  --config_file "['bundles/liver_tumor/configs/train.yaml','bundles/liver_tumor/configs/quick.yaml']" \
  --dataset_dir "$DEMO_DIR/data" --epochs "$DEMO_EPOCHS" --val_interval 5 \
  --output_dir "$DEMO_DIR/train" --ckpt_dir "$DEMO_DIR/train/models"
echo "[demo] per-epoch liver / tumour Dice: $DEMO_DIR/train/metrics.csv"
cat "$DEMO_DIR/train/metrics.csv"
echo "[demo] TensorBoard: tensorboard --logdir $DEMO_DIR/train"
