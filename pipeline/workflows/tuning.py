"""Choose the smallest kept tumour size on the validation split, never on the test split.

A network trained briefly marks specks of noise as tumour. On a tumour-free liver a single
false-positive voxel turns the case's tumour Dice from 1 into 0 (LiTS policy), so the
size below which predicted tumour components are dropped (``min_tumour_mm3`` of
``configs/common.yaml``) matters, and it is a choice that must be made on data the
test score does not see. The validation scans are segmented once with the step disabled;
each candidate size is then applied to those masks by the same
:func:`pipeline.transforms.postprocess.postprocess_labels` that inference runs, and scored.

    python -m monai.bundle run tuning \
        --config_file "['.../common.yaml','.../train.yaml','.../evaluate.yaml']"

writes ``<eval_dir>/postprocess_tuning/postprocess.json`` with the table and the choice;
pass the chosen value on as ``--min_tumour_mm3`` (to evaluating and inference alike).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.metrics import dice_score
from pipeline.evaluation.pairing import pairs_from_datalist
from pipeline.evaluation.scoring import load_pair
from pipeline.inference.predictor import ScanPredictor
from pipeline.io import write_json
from pipeline.labels import TUMOUR
from pipeline.transforms.postprocess import (
    PostprocessConfig,
    PostprocessLabelsd,
    postprocess_labels,
)
from pipeline.workflows.checkpoint_evaluation import segment_records

# Equivalent sphere diameters 0, 2.7, 3.9, 5.0, 6.2, 7.8 and 9.8 mm: all below the 10 mm
# that the lesion-recall bar counts, so no candidate can remove a lesion it scores.
DEFAULT_CANDIDATES_MM3 = (0.0, 10.0, 30.0, 65.0, 125.0, 250.0, 500.0)


def size_filter_table(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[float]]],
    candidates_mm3: Sequence[float] = DEFAULT_CANDIDATES_MM3,
) -> list[dict[str, Any]]:
    """Tumour Dice per case after dropping predicted tumours under each candidate size.

    Args:
        cases: ``(case_id, predicted labels, reference labels, spacing in mm)``; the
            predictions were made with the size filter off.
        candidates_mm3: sizes to try (mm^3); 0 keeps every component.

    Returns:
        One row per candidate: ``min_tumour_mm3``, ``tumour_dice_per_case`` (mean) and
        ``per_case`` (``{case_id: Dice}``).
    """
    rows = []
    for size in candidates_mm3:
        # The other steps already ran at inference; only the size filter is varied.
        config = PostprocessConfig(
            keep_largest_liver=False,
            fill_liver_holes=False,
            tumour_inside_liver=False,
            min_tumour_mm3=float(size),
        )
        per_case = {
            case_id: dice_score(postprocess_labels(pred, spacing, config) == TUMOUR, ref == TUMOUR)
            for case_id, pred, ref, spacing in cases
        }
        rows.append(
            {
                "min_tumour_mm3": float(size),
                "tumour_dice_per_case": float(np.mean(list(per_case.values()))),
                "per_case": per_case,
            }
        )
    return rows


def choose_min_tumour_size(rows: Sequence[Mapping[str, Any]]) -> float:
    """The candidate with the best mean tumour Dice; the smallest size among ties."""
    if not rows:
        raise ValueError("no candidate sizes were scored")
    best = max(row["tumour_dice_per_case"] for row in rows)
    # 1e-9: means of equal per-case values may differ in the last bit.
    return min(
        float(row["min_tumour_mm3"]) for row in rows if row["tumour_dice_per_case"] >= best - 1e-9
    )


def _with_size_filter_off(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded settings, saying what the masks were made with."""
    postprocess = {**settings.get("postprocess", {}), "min_tumour_mm3": 0.0}
    return {**settings, "min_tumour_mm3": 0.0, "postprocess": postprocess}


def tune_min_tumour_size(
    predictor: ScanPredictor,
    datalist: Mapping[str, Sequence[Mapping[str, Any]]],
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    settings: Mapping[str, Any] | None = None,
    label_map: Mapping[int, int] | None = None,
    candidates_mm3: Sequence[float] = DEFAULT_CANDIDATES_MM3,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment the validation split with the size filter off and choose the size.

    Args:
        predictor: the inference pipeline (common.yaml's ``predictor``); its
            post-processing runs with ``min_tumour_mm3`` 0, everything else unchanged.
        datalist: records with ``image`` and ``label``; its ``validation`` split is used.
        out_dir: gets ``predictions/`` and ``postprocess.json``.
        checkpoint: the weights' file, recorded in ``postprocess.json``.
        settings: the inference settings to record with the predictions.
        label_map: remapping of the reference labels (e.g. ``{5: 1}``).
        candidates_mm3: sizes to try.
        progress: show progress bars.

    Returns:
        What ``postprocess.json`` holds: the chosen ``min_tumour_mm3``, the table, the
        split, the cases and the checkpoint.

    Raises:
        ValueError: the data set has no validation split.
    """
    records = list(datalist.get("validation") or [])
    if not records:
        raise ValueError("the data set has no validation split to tune post-processing on")
    out = Path(out_dir)
    post = predictor.postprocessing
    unfiltered = predictor.with_postprocessing(
        post.with_config(min_tumour_mm3=0.0) if isinstance(post, PostprocessLabelsd) else post
    )
    predictions = out / "predictions"
    segment_records(
        unfiltered,
        records,
        predictions,
        checkpoint=checkpoint,
        settings=_with_size_filter_off(settings or {}),
        progress=progress,
    )
    cases = []
    for pair in pairs_from_datalist(records, predictions):
        if not pair.complete:
            raise RuntimeError(f"validation case {pair.case_id} could not be segmented")
        loaded = load_pair(pair, label_map=label_map)
        cases.append((pair.case_id, loaded.pred, loaded.ref, loaded.spacing))
    rows = size_filter_table(cases, candidates_mm3)
    chosen = choose_min_tumour_size(rows)
    result = {
        "min_tumour_mm3": chosen,
        "chosen_by": "mean tumour Dice per case on the validation split (smallest size among ties)",
        "split": "validation",
        "cases": [name for name, *_ in cases],
        "checkpoint": str(checkpoint) if checkpoint else None,
        "table": rows,
    }
    write_json(result, out / "postprocess.json")
    print("min_tumour_mm3  validation tumour Dice per case")
    for row in rows:
        mark = "  <- chosen" if row["min_tumour_mm3"] == chosen else ""
        print(f"{row['min_tumour_mm3']:>14g}  {row['tumour_dice_per_case']:.3f}{mark}")
    print(f"written: {out / 'postprocess.json'}")
    return result
