#!/usr/bin/env bash
# The main job on a fresh machine: install, synthetic data set, training, inference on the
# held-out test split, LiTS-style evaluation and report, quality bars. The one
# post-processing choice (the smallest predicted tumour kept) is made on the validation split.
#
# DEMO_BUDGET trades time for quality (wall times measured on 2 CPU cores, no GPU):
#   quick     16 small cases at 6 mm, tiny network, about 1 minute: a smoke run
#   standard  60 cases at 2 mm (42 train / 6 validation / 12 test), 64^3 patches, 65 epochs
#             capped at DEMO_TRAIN_MINUTES (default 22) of training: under 30 minutes in
#             all with the install (the measured time is in the bundle README)
#   long      100 cases, 150 epochs capped at 60 minutes
# DEMO_DIR sets where outputs go (default ./runs/demo). With DEMO_RECORD=1 (default for
# standard and long) the figures are written into the bundle's metadata.json and
# docs/README.md by `liver-tumor record`.
set -euo pipefail
START=$(date +%s)
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
DEMO_DIR="${DEMO_DIR:-$ROOT/runs/demo}"
DEMO_BUDGET="${DEMO_BUDGET:-standard}"
CONFIGS=bundles/liver_tumor/configs
case "$DEMO_BUDGET" in
  quick)
    CASES=16; SHAPE="96 96 64"; SPACING=""; OVERLAY="$CONFIGS/quick.yaml"
    EPOCHS=20; VAL_INTERVAL=5; MINUTES="${DEMO_TRAIN_MINUTES:-5}"; RECORD="${DEMO_RECORD:-0}" ;;
  standard)
    CASES=60; SHAPE="204 204 144"; SPACING="2 2 2"; OVERLAY="$CONFIGS/demo.yaml"
    EPOCHS=65; VAL_INTERVAL=10; MINUTES="${DEMO_TRAIN_MINUTES:-22}"; RECORD="${DEMO_RECORD:-1}" ;;
  long)
    CASES=100; SHAPE="204 204 144"; SPACING="2 2 2"; OVERLAY="$CONFIGS/demo.yaml"
    EPOCHS=150; VAL_INTERVAL=10; MINUTES="${DEMO_TRAIN_MINUTES:-60}"; RECORD="${DEMO_RECORD:-1}" ;;
  *) echo "DEMO_BUDGET must be quick, standard or long, got '$DEMO_BUDGET'" >&2; exit 2 ;;
esac
DEMO_EPOCHS="${DEMO_EPOCHS:-$EPOCHS}"
DATA="$DEMO_DIR/data"
TRAIN="$DEMO_DIR/train"
echo "[demo] budget $DEMO_BUDGET: $CASES synthetic cases ($SHAPE voxels), up to $DEMO_EPOCHS epochs or $MINUTES min of training"

echo "[demo] 1/6 generating the synthetic data set (train / validation / test split in datalist.json)"
liver-tumor synth --out "$DATA" --cases "$CASES" --seed 0 --shape $SHAPE \
  ${SPACING:+--spacing $SPACING} --val-fraction 0.1 --test-fraction 0.2

echo "[demo] 2/6 training (per-epoch liver / tumour Dice in $TRAIN/metrics.csv)"
python -m monai.bundle run training \
  --config_file "['$CONFIGS/common.yaml','$CONFIGS/train.yaml','$OVERLAY']" \
  --dataset_dir "$DATA" --epochs "$DEMO_EPOCHS" --val_interval "$VAL_INTERVAL" \
  --time_limit_minutes "$MINUTES" --output_dir "$TRAIN" --ckpt_dir "$TRAIN/models"
cat "$TRAIN/metrics.csv"

echo "[demo] 3/6 choosing the tumour size filter on the validation split"
python -m monai.bundle run tuning \
  --config_file "['$CONFIGS/common.yaml','$CONFIGS/train.yaml','$OVERLAY','$CONFIGS/evaluate.yaml']" \
  --dataset_dir "$DATA" --output_dir "$TRAIN" --ckpt_dir "$TRAIN/models" \
  --eval_dir "$DEMO_DIR/eval"
MIN_TUMOUR=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['min_tumour_mm3'])" \
  "$DEMO_DIR/eval/postprocess_tuning/postprocess.json")

echo "[demo] 4/6 inference on the held-out test split"
python -m monai.bundle run inference \
  --config_file "['$CONFIGS/common.yaml','$CONFIGS/inference.yaml','$OVERLAY']" \
  --input_dir "$DATA/datalist.json" --output_dir "$DEMO_DIR/eval/predictions" \
  --ckpt "$TRAIN/models/model.pt" --overwrite True --min_tumour_mm3 "$MIN_TUMOUR"
cat "$DEMO_DIR/eval/predictions/quantification.csv"

# The evaluation scores the masks just written (same checkpoint and settings).
echo "[demo] 5/6 evaluation of the test split and report"
python -m monai.bundle run evaluating \
  --config_file "['$CONFIGS/common.yaml','$CONFIGS/train.yaml','$OVERLAY','$CONFIGS/evaluate.yaml']" \
  --dataset_dir "$DATA" --output_dir "$TRAIN" --ckpt_dir "$TRAIN/models" \
  --eval_dir "$DEMO_DIR/eval" --min_tumour_mm3 "$MIN_TUMOUR" --reuse_predictions True

echo "[demo] 6/6 quality bars"
# Which test lesions of 10 mm or more were found, by size and contrast-to-noise ratio.
# Informative only: a failure here must not keep the bars from being recorded.
liver-tumor visibility --report "$DEMO_DIR/eval/report" --data "$DATA" \
  || echo "[demo] the lesion visibility table could not be made (see the error above)" >&2
SECONDS_USED=$(( $(date +%s) - START ))
RECORD_ARGS=()
if [ "$RECORD" = 1 ]; then
  RECORD_ARGS=(--metadata "$CONFIGS/metadata.json" --card bundles/liver_tumor/docs/README.md)
fi
liver-tumor record --report "$DEMO_DIR/eval/report" "${RECORD_ARGS[@]}" --run \
  "budget=$DEMO_BUDGET" "cases=$CASES" "min_tumour_mm3=$MIN_TUMOUR" "date=$(date -u +%Y-%m-%d)" \
  "demo_minutes_before_report=$(( SECONDS_USED / 60 ))" \
  "cpus=$(nproc)" "device=$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
echo "[demo] done in $(( ($(date +%s) - START) / 60 )) min $(( ($(date +%s) - START) % 60 )) s"
echo "[demo] report: $DEMO_DIR/eval/report/report.html"
echo "[demo] TensorBoard: tensorboard --logdir $TRAIN"
