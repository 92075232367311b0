"""Choose the false-tumour controls on the validation split, never on the test split.

A network trained briefly marks specks of noise, and unsure structures next to the liver,
as tumour. On a tumour-free liver a single false-positive voxel turns the case's tumour
Dice from 1 into 0 (LiTS policy), so four controls of ``configs/common.yaml`` matter:
the smallest kept tumour (``min_tumour_mm3``, post-processing on the scan's grid) and the
three rules of :class:`~pipeline.transforms.lesion_filter.LesionFilter`
(``min_lesion_mean_prob`` and ``min_lesion_depth_mm``: per lesion; ``min_case_max_prob``:
"any tumour?" per case). They are choices that must be made on data the test score does
not see. Each validation scan goes through the network once; its labels are made with
every combination of the three rules' thresholds, post-processed as at inference with the
size filter off, and scored for every size in one component count. The choice is the best
mean tumour Dice per case; among combinations within ``dice_tolerance`` of it, the one
that leaves fewest false lesions (predicted tumours that touch no reference tumour) on
the validation cases.

    python -m monai.bundle run tuning \
        --config_file "['.../common.yaml','.../train.yaml','.../evaluate.yaml']"

writes ``<eval_dir>/postprocess_tuning/postprocess.json`` with the choice, what each
control alone gives, and the tables; pass the four chosen values on as
``--min_tumour_mm3``, ``--min_lesion_mean_prob``, ``--min_lesion_depth_mm`` and
``--min_case_max_prob`` (to evaluating and inference alike).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline.evaluation.loading import GridMismatchError, read_label_map
from pipeline.inference.scans import scans_from_records
from pipeline.io import write_json
from pipeline.labels import TUMOUR
from pipeline.transforms.lesion_filter import LesionFilter
from pipeline.transforms.masks import label_components
from pipeline.transforms.postprocess import PostprocessLabelsd

# Equivalent sphere diameters 0, 2.7, 3.9, 5.0, 6.2, 7.8 and 9.8 mm: all below the 10 mm
# that the lesion-recall bar counts, so no candidate can remove a lesion it scores.
DEFAULT_CANDIDATES_MM3 = (0.0, 10.0, 30.0, 65.0, 125.0, 250.0, 500.0)
# Confidence thresholds (0: the rule is off). A voxel is argmax tumour from a probability
# of 1/3, so thresholds start above one half.
DEFAULT_LESION_PROBS = (0.0, 0.6, 0.8, 0.9)
DEFAULT_CASE_PROBS = (0.0, 0.9, 0.99)
# Depth of a lesion's deepest voxel inside the predicted organ (0: the rule is off). At
# 1.5 mm in-plane a one-voxel shell along the liver's surface is 1.5 mm deep and a
# two-voxel one 3 mm; a lesion of 6 (10) mm diameter is at least 3 (5) mm deep.
DEFAULT_LESION_DEPTHS_MM = (0.0, 3.0, 5.0)
# Mean tumour Dice per case within which combinations count as equal, and the one with
# fewest false lesions on validation wins. 0.01 is one validation case of ten changing
# by 0.1. Why: on the demo's 10 validation cases the case rule (0.99, with a depth rule)
# beat a lesion rule (0.8) by 0.001-0.003 in two runs, left 13 false lesions on
# validation against 1, and marked 5-11 "tumours" (75-106 mL) in the two real CTs, whose
# references have none, where the lesion rule marked 0-3.
DEFAULT_DICE_TOLERANCE = 0.01


def tumour_scores_by_size(
    pred_tumour: np.ndarray, ref_tumour: np.ndarray, voxel_mm3: float, sizes_mm3: Sequence[float]
) -> tuple[list[float], list[int]]:
    """Tumour Dice and false lesions after dropping components under each size, in one labelling.

    Exactly what post-processing's ``min_tumour_mm3`` does to the tumour mask (26-connected
    components with a volume under the size become liver), counted per component instead
    of re-run per size. Both masks empty scores 1 (LiTS).

    Returns:
        Per size: the tumour Dice, and how many kept components touch no reference tumour
        (false lesions; the evaluation's lesion matching, at IoU > 0.5, counts more).
    """
    components, count = label_components(pred_tumour)
    n_ref = int(np.count_nonzero(ref_tumour))
    if count == 0:
        return [1.0 if n_ref == 0 else 0.0 for _ in sizes_mm3], [0 for _ in sizes_mm3]
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    overlaps = np.bincount(components[ref_tumour].ravel(), minlength=count + 1)[1:]
    scores, false_lesions = [], []
    for size in sizes_mm3:
        kept = sizes * voxel_mm3 >= size
        n_pred, overlap = int(sizes[kept].sum()), int(overlaps[kept].sum())
        total = n_pred + n_ref
        scores.append(1.0 if total == 0 else 2.0 * overlap / total)
        false_lesions.append(int(np.count_nonzero(kept & (overlaps == 0))))
    return scores, false_lesions


def tumour_dice_by_size(
    pred_tumour: np.ndarray, ref_tumour: np.ndarray, voxel_mm3: float, sizes_mm3: Sequence[float]
) -> list[float]:
    """Tumour Dice after dropping predicted components under each size (see above)."""
    return tumour_scores_by_size(pred_tumour, ref_tumour, voxel_mm3, sizes_mm3)[0]


def _best(rows: Sequence[Mapping[str, Any]], dice_tolerance: float = 0.0) -> Mapping[str, Any]:
    """The row to choose: best mean tumour Dice, fewest false lesions among near ties.

    Rows within ``dice_tolerance`` of the best Dice count as equal; of them, those with the
    fewest ``false_lesions`` (0 when a row has none), then the best Dice, then the first
    (the grid lists the mildest rules first).
    """
    # 1e-9: means of equal per-case values may differ in the last bit.
    best = max(row["tumour_dice_per_case"] for row in rows)
    near = [row for row in rows if row["tumour_dice_per_case"] >= best - dice_tolerance - 1e-9]
    fewest = min(row.get("false_lesions", 0) for row in near)
    near = [row for row in near if row.get("false_lesions", 0) == fewest]
    top = max(row["tumour_dice_per_case"] for row in near)
    return next(row for row in near if row["tumour_dice_per_case"] >= top - 1e-9)


def tune_postprocessing(
    predictor: Any,
    datalist: Mapping[str, Sequence[Mapping[str, Any]]],
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    label_map: Mapping[int, int] | None = None,
    candidates_mm3: Sequence[float] = DEFAULT_CANDIDATES_MM3,
    lesion_probs: Sequence[float] = DEFAULT_LESION_PROBS,
    case_probs: Sequence[float] = DEFAULT_CASE_PROBS,
    lesion_depths_mm: Sequence[float] = DEFAULT_LESION_DEPTHS_MM,
    dice_tolerance: float = DEFAULT_DICE_TOLERANCE,
    progress: bool = True,
) -> dict[str, Any]:
    """Choose the false-tumour controls on the validation split, never on the test split.

    Each validation scan goes through the network once (``predictor.begin``); its labels
    are then made with every combination of the lesion rules' thresholds
    (:class:`~pipeline.transforms.lesion_filter.LesionFilter`), post-processed as at
    inference with the size filter off, and scored for every size. The combination with the
    best mean tumour Dice per case is chosen; among those within ``dice_tolerance`` of it,
    the one with fewest false lesions on the validation cases (then the mildest).

    Args:
        predictor: common.yaml's ``predictor`` (one network or the cascade).
        datalist: records with ``image`` and ``label``; its ``validation`` split is used.
        out_dir: gets ``postprocess.json``.
        checkpoint: the weights' file, recorded in ``postprocess.json``.
        label_map: remapping of the reference labels (e.g. ``{5: 1}``).
        candidates_mm3: smallest kept tumour volumes to try.
        lesion_probs: ``min_lesion_mean_prob`` values to try (0: off).
        case_probs: ``min_case_max_prob`` values to try (0: off).
        lesion_depths_mm: ``min_lesion_depth_mm`` values to try (0: off).
        dice_tolerance: mean Dice per case within which combinations count as equal.
        progress: show a progress bar.

    Returns:
        What ``postprocess.json`` holds: the four chosen values, what each rule alone
        and together gives (``contributions``), the size table at the chosen confidence
        rules (``table``), every combination (``grid``), the cases and the checkpoint.

    Raises:
        ValueError: the data set has no validation split.
        GridMismatchError: a reference label map is not on its scan's grid.
    """
    records = list(datalist.get("validation") or [])
    if not records:
        raise ValueError("the data set has no validation split to tune post-processing on")
    post = predictor.postprocessing
    unfiltered = predictor.with_postprocessing(
        post.with_config(min_tumour_mm3=0.0) if isinstance(post, PostprocessLabelsd) else post
    )
    rules = [
        (lesion, case, depth)
        for lesion in lesion_probs
        for case in case_probs
        for depth in lesion_depths_mm
    ]
    if dice_tolerance < 0:
        raise ValueError(f"dice_tolerance must be >= 0, got {dice_tolerance}")
    # dice[(lesion, case, depth)][size index] -> per-case Dice list; false: their false
    # lesions per case.
    dice: dict[tuple[float, float, float], list[list[float]]] = {
        rule: [[] for _ in candidates_mm3] for rule in rules
    }
    false: dict[tuple[float, float, float], list[list[int]]] = {
        rule: [[] for _ in candidates_mm3] for rule in rules
    }
    cases = []
    for scan, record in zip(
        tqdm(scans_from_records(records), desc="tuning", unit="scan", disable=not progress),
        records,
        strict=True,
    ):
        ref, ref_affine = read_label_map(record["label"], label_map)
        pending = unfiltered.begin(scan)
        # Rules with the same effect are scored once.
        finished: dict[str, tuple[list[float], list[int]]] = {}
        for rule in rules:
            key = pending.key(LesionFilter(*rule))
            if key in finished:
                for index, (score, n_false) in enumerate(zip(*finished[key], strict=True)):
                    dice[rule][index].append(score)
                    false[rule][index].append(n_false)
                continue
            prediction = pending.finish(LesionFilter(*rule))
            if prediction.labels.shape != ref.shape or not np.allclose(
                prediction.affine, ref_affine, atol=1e-3
            ):
                raise GridMismatchError(
                    f"{record['label']} (shape {ref.shape}) is not on the grid of "
                    f"{scan.path} (shape {prediction.labels.shape})"
                )
            voxel_mm3 = float(abs(np.linalg.det(prediction.affine[:3, :3])))
            finished[key] = tumour_scores_by_size(
                prediction.labels == TUMOUR, ref == TUMOUR, voxel_mm3, candidates_mm3
            )
            for index, (score, n_false) in enumerate(zip(*finished[key], strict=True)):
                dice[rule][index].append(score)
                false[rule][index].append(n_false)
        cases.append(scan.case)
    grid = [
        {
            "min_lesion_mean_prob": float(lesion),
            "min_case_max_prob": float(case),
            "min_lesion_depth_mm": float(depth),
            "min_tumour_mm3": float(size),
            "tumour_dice_per_case": float(np.mean(dice[(lesion, case, depth)][index])),
            "false_lesions": int(np.sum(false[(lesion, case, depth)][index])),
            "per_case": dict(zip(cases, dice[(lesion, case, depth)][index], strict=True)),
        }
        for (lesion, case, depth) in rules
        for index, size in enumerate(candidates_mm3)
    ]

    def pick(**fixed: float) -> Mapping[str, Any]:
        rows = [r for r in grid if all(r[k] == v for k, v in fixed.items())]
        return _best(rows, dice_tolerance)

    chosen = _best(grid, dice_tolerance)
    off = {
        "min_lesion_mean_prob": 0.0,
        "min_case_max_prob": 0.0,
        "min_lesion_depth_mm": 0.0,
        "min_tumour_mm3": 0.0,
    }

    def only(name: str) -> Mapping[str, Any]:
        return pick(**{k: v for k, v in off.items() if k != name})

    contributions = {
        "none": pick(**off),
        "size_only": only("min_tumour_mm3"),
        "lesion_prob_only": only("min_lesion_mean_prob"),
        "lesion_depth_only": only("min_lesion_depth_mm"),
        "case_prob_only": only("min_case_max_prob"),
        "chosen": chosen,
    }
    result = {
        "min_tumour_mm3": chosen["min_tumour_mm3"],
        "min_lesion_mean_prob": chosen["min_lesion_mean_prob"],
        "min_case_max_prob": chosen["min_case_max_prob"],
        "min_lesion_depth_mm": chosen["min_lesion_depth_mm"],
        "chosen_by": (
            "mean tumour Dice per case on the validation split; within "
            f"{dice_tolerance:g} of the best, fewest false lesions (then the mildest)"
        ),
        "dice_tolerance": float(dice_tolerance),
        "split": "validation",
        "cases": cases,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "contributions": {
            name: {k: row[k] for k in row if k != "per_case"} for name, row in contributions.items()
        },
        "table": [
            r
            for r in grid
            if r["min_lesion_mean_prob"] == chosen["min_lesion_mean_prob"]
            and r["min_case_max_prob"] == chosen["min_case_max_prob"]
            and r["min_lesion_depth_mm"] == chosen["min_lesion_depth_mm"]
        ],
        "grid": [{k: row[k] for k in row if k != "per_case"} for row in grid],
    }
    out = Path(out_dir)
    write_json(result, out / "postprocess.json")
    print("validation tumour Dice per case, by false-tumour control:")
    for name, row in contributions.items():
        print(
            f"  {name:<17} {row['tumour_dice_per_case']:.3f}, {row['false_lesions']} false "
            f"lesions  (lesion mean prob >= "
            f"{row['min_lesion_mean_prob']:g}, depth >= {row['min_lesion_depth_mm']:g} mm, "
            f"case max prob >= {row['min_case_max_prob']:g}, "
            f"tumours >= {row['min_tumour_mm3']:g} mm^3)"
        )
    print(f"written: {out / 'postprocess.json'}")
    return result
