"""Known-answer tests for lesion detection (pipeline.evaluation.lesions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from pipeline import LIVER, TUMOUR
from pipeline.evaluation.lesions import (
    LesionDetection,
    equivalent_diameter_mm,
    lesion_detection,
    size_bin,
    summarize_detection,
)
from pipeline.evaluation.metrics import evaluate_case

ISO = (1.0, 1.0, 1.0)
ANISO = (0.8, 0.8, 2.0)


def _empty(shape: tuple[int, int, int] = (32, 32, 32)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def _counts(result: LesionDetection) -> tuple[int, ...]:
    return (result.tp_iou, result.fn_iou, result.tp_any, result.fn_any, result.fp)


def test_split_lesion_is_judged_on_the_union_of_its_fragments():
    ref, pred = _empty(), _empty()
    ref[10:20, 10:20, 10:20] = True  # 1000 voxels
    pred[10:14, 10:20, 10:20] = True  # 400 voxels
    pred[15:20, 10:20, 10:20] = True  # 500 voxels, one empty slice apart: 2 components
    result = lesion_detection(pred, ref, ISO)
    assert len(result.ref) == 1 and len(result.pred) == 2
    lesion = result.ref[0]
    assert lesion.n_pred_overlapping == 2
    assert lesion.merged_iou == pytest.approx(900 / 1000)
    assert lesion.best_iou == pytest.approx(500 / 1000)  # alone, no fragment passes > 0.5
    assert _counts(result) == (1, 0, 1, 0, 0)


def test_merged_prediction_over_two_lesions():
    ref, pred = _empty(), _empty()
    ref[5:11, 5:11, 5:11] = True  # 216 voxels
    ref[13:19, 5:11, 5:11] = True  # 216 voxels, two slices apart
    pred[5:19, 5:11, 5:11] = True  # one blob of 504 voxels bridging both
    result = lesion_detection(pred, ref, ISO)
    assert [r.merged_iou for r in result.ref] == pytest.approx([216 / 504, 216 / 504])
    assert result.pred[0].n_ref_overlapping == 2 and not result.pred[0].false_positive
    # IoU 3/7 < 0.5 for each lesion: missed under IoU, found under any overlap, no FP.
    assert _counts(result) == (0, 2, 2, 0, 0)


def test_missed_lesion_and_false_positive():
    ref, pred = _empty(), _empty()
    ref[2:8, 2:8, 2:8] = True  # found exactly
    ref[20:25, 2:7, 2:7] = True  # missed
    pred[2:8, 2:8, 2:8] = True
    pred[20:24, 20:24, 20:24] = True  # touches no reference lesion
    result = lesion_detection(pred, ref, ISO, case_id="c7")
    assert _counts(result) == (1, 1, 1, 1, 1)
    assert [r.detected_iou for r in result.ref] == [True, False]
    assert [r.best_iou for r in result.ref] == [1.0, 0.0]
    assert [p.false_positive for p in result.pred] == [False, True]
    assert {r.case_id for r in result.ref + result.pred} == {"c7"}


def test_weak_overlap_counts_for_any_but_not_iou_and_is_not_a_false_positive():
    ref, pred = _empty(), _empty()
    ref[10:20, 10:20, 10:20] = True
    pred[17:25, 10:20, 10:20] = True  # overlap 300, union 1500: IoU 0.2
    result = lesion_detection(pred, ref, ISO)
    assert result.ref[0].merged_iou == pytest.approx(0.2)
    assert _counts(result) == (0, 1, 1, 0, 0)


def test_touching_lesions_are_one_component_under_26_connectivity():
    ref = _empty()
    ref[5:10, 5:10, 5:10] = True
    ref[10:15, 10:15, 10:15] = True  # shares a single corner with the first cube
    assert ndimage.label(ref)[1] == 2  # 6-connectivity would see two lesions
    assert _counts(lesion_detection(ref, ref, ISO)) == (1, 0, 1, 0, 0)
    assert len(lesion_detection(ref, ref, ISO).ref) == 1

    half = _empty()
    half[5:10, 5:10, 5:10] = True  # covers exactly half: IoU 0.5 is not > 0.5
    result = lesion_detection(half, ref, ISO)
    assert result.ref[0].merged_iou == 0.5
    assert _counts(result) == (0, 1, 1, 0, 0)


def test_no_lesions_anywhere():
    result = lesion_detection(_empty(), _empty(), ISO)
    assert result.ref == [] and result.pred == []
    assert _counts(result) == (0, 0, 0, 0, 0)
    summary = summarize_detection([result])
    assert math.isnan(summary["iou"]["precision"]) and math.isnan(summary["any"]["recall"])


def test_size_bins_by_equivalent_diameter_with_anisotropic_spacing():
    assert equivalent_diameter_mm(4.0 / 3.0 * math.pi * 5.0**3) == pytest.approx(10.0)
    assert [size_bin(d) for d in (9.99, 10.0, 20.0, 20.01)] == [
        "<10mm",
        "10-20mm",
        "10-20mm",
        ">20mm",
    ]
    ref, pred = _empty((64, 64, 32)), _empty((64, 64, 32))
    ref[2:5, 2:5, 2:4] = True  # 18 voxels * 1.28 mm^3 = 23.04 mm^3 -> 3.5 mm, missed
    ref[10:20, 2:12, 2:7] = True  # 500 voxels = 640 mm^3 -> 10.7 mm, found
    ref[30:60, 30:60, 10:25] = True  # 13500 voxels = 17280 mm^3 -> 32.1 mm, found
    pred[10:20, 2:12, 2:7] = True
    pred[30:60, 30:60, 10:25] = True
    pred[2:4, 40:42, 28:30] = True  # small false positive (8 voxels)
    result = lesion_detection(pred, ref, ANISO, case_id="aniso")
    volumes = [r.volume_ml for r in result.ref]
    assert volumes == pytest.approx([0.02304, 0.64, 17.28])
    diameters = [r.diameter_mm for r in result.ref]
    assert diameters == pytest.approx([(6 * v * 1000 / math.pi) ** (1 / 3) for v in volumes])
    assert [r.size_bin for r in result.ref] == ["<10mm", "10-20mm", ">20mm"]

    other = _empty((64, 64, 32))
    other[40:52, 2:14, 2:10] = True  # a 1152-voxel (1.47 mL, 14.1 mm) false positive
    summary = summarize_detection([result, lesion_detection(other, _empty((64, 64, 32)), ANISO)])
    by_size = summary["by_size"]
    assert (by_size["<10mm"]["n_ref"], by_size["<10mm"]["recall_iou"]) == (1, 0.0)
    assert (by_size["10-20mm"]["n_ref"], by_size["10-20mm"]["recall_any"]) == (1, 1.0)
    assert (by_size[">20mm"]["n_ref"], by_size[">20mm"]["recall_iou"]) == (1, 1.0)
    assert [by_size[b]["fp"] for b in ("<10mm", "10-20mm", ">20mm")] == [1, 1, 0]
    assert (summary["iou"]["tp"], summary["iou"]["fp"], summary["iou"]["fn"]) == (2, 2, 1)
    assert summary["iou"]["precision"] == pytest.approx(0.5)
    assert summary["iou"]["recall"] == pytest.approx(2 / 3)
    assert summary["iou"]["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))


def test_evaluate_case_reports_lesion_counts():
    ref = np.zeros((32, 32, 32), np.uint8)
    ref[2:30, 2:30, 2:30] = LIVER
    pred = ref.copy()
    ref[5:11, 5:11, 5:11] = TUMOUR
    ref[13:19, 5:11, 5:11] = TUMOUR
    pred[5:19, 5:11, 5:11] = TUMOUR  # the merge scene inside a liver
    result = evaluate_case(pred, ref, ISO, case_id="m")
    assert (result["lesion_n_ref"], result["lesion_n_pred"]) == (2, 1)
    assert (result["lesion_tp_iou"], result["lesion_tp_any"], result["lesion_fp"]) == (0, 2, 0)
    assert result.lesions.ref[0].case_id == "m"


def test_label_map_instead_of_mask_is_rejected():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:4, 2:4, 2:4] = TUMOUR
    with pytest.raises(ValueError, match="binary tumour mask"):
        lesion_detection(labels, labels == TUMOUR, ISO)
    with pytest.raises(ValueError, match=r"\(8, 8, 8\).*\(8, 8, 7\)"):
        lesion_detection(labels == TUMOUR, np.zeros((8, 8, 7), bool), ISO)
