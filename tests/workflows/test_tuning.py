from __future__ import annotations

import numpy as np
import pytest

from pipeline.labels import TUMOUR
from pipeline.transforms.postprocess import PostprocessConfig, postprocess_labels
from pipeline.workflows.tuning import _best, tumour_dice_by_size, tumour_scores_by_size

VOXEL_MM3 = 8.0  # 2 x 2 x 2 mm


def _case(lesion: bool, speck_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """A liver with (optionally) a 4^3-voxel lesion found exactly and a false speck."""
    ref = np.zeros((24, 24, 24), dtype=np.uint8)
    ref[2:22, 2:22, 2:22] = 1
    if lesion:
        ref[4:8, 4:8, 4:8] = 2  # 64 voxels, 512 mm^3
    pred = ref.copy()
    pred[15, 15, 15 : 15 + speck_voxels] = 2  # 8 mm^3 per voxel, away from the lesion
    return pred, ref


def _dice(pred: np.ndarray, ref: np.ndarray, sizes=(0, 10, 30, 1000)) -> list[float]:
    return tumour_dice_by_size(pred == TUMOUR, ref == TUMOUR, VOXEL_MM3, sizes)


def test_dropping_a_false_speck_restores_the_dice():
    with_lesion = _dice(*_case(lesion=True, speck_voxels=2))  # speck of 16 mm^3
    tumour_free = _dice(*_case(lesion=False, speck_voxels=1))  # 8 mm^3
    # Size 0 keeps everything: 2 * 64 / (66 + 64) with the speck; the tumour-free case is 0.
    # 10 mm^3 drops the one-voxel speck only: the tumour-free case scores 1 (LiTS policy).
    # 30 mm^3 drops both specks and keeps the 512 mm^3 lesion; 1000 mm^3 drops it too.
    assert with_lesion == pytest.approx([128 / 130, 128 / 130, 1.0, 0.0])
    assert tumour_free == [0.0, 1.0, 1.0, 1.0]


def test_the_counted_dice_equals_the_size_filter_of_inference():
    rng = np.random.default_rng(4)
    pred = np.where(rng.random((30, 30, 20)) < 0.08, TUMOUR, 1).astype(np.uint8)
    ref = np.where(rng.random((30, 30, 20)) < 0.08, TUMOUR, 1).astype(np.uint8)
    sizes = (0.0, 10.0, 30.0, 65.0)
    counted = _dice(pred, ref, sizes)
    for size, score in zip(sizes, counted, strict=True):
        config = PostprocessConfig(
            keep_largest_liver=False,
            fill_liver_holes=False,
            tumour_inside_liver=False,
            min_tumour_mm3=size,
        )
        kept = postprocess_labels(pred, (2.0, 2.0, 2.0), config) == TUMOUR
        expected = (
            2
            * np.count_nonzero(kept & (ref == TUMOUR))
            / (np.count_nonzero(kept) + np.count_nonzero(ref == TUMOUR))
        )
        assert score == pytest.approx(expected)


def test_ties_choose_the_mildest_row():
    rows = [
        {"min_tumour_mm3": 0.0, "tumour_dice_per_case": 0.7},
        {"min_tumour_mm3": 30.0, "tumour_dice_per_case": 0.8},
        {"min_tumour_mm3": 65.0, "tumour_dice_per_case": 0.8},
    ]
    assert _best(rows)["min_tumour_mm3"] == 30.0


def test_false_lesions_are_counted_per_size():
    for (lesion, speck), expected in {(True, 2): [1, 1, 0, 0], (False, 1): [1, 0, 0, 0]}.items():
        pred, ref = _case(lesion=lesion, speck_voxels=speck)
        _, false = tumour_scores_by_size(
            pred == TUMOUR, ref == TUMOUR, VOXEL_MM3, (0, 10, 30, 1000)
        )
        # The found lesion never counts; the 16 (8) mm^3 speck until the size drops it.
        assert false == expected


def test_near_ties_choose_the_fewest_false_lesions():
    rows = [
        {"min_tumour_mm3": 0.0, "tumour_dice_per_case": 0.800, "false_lesions": 5},
        {"min_tumour_mm3": 10.0, "tumour_dice_per_case": 0.793, "false_lesions": 1},
        {"min_tumour_mm3": 30.0, "tumour_dice_per_case": 0.795, "false_lesions": 1},
        {"min_tumour_mm3": 65.0, "tumour_dice_per_case": 0.700, "false_lesions": 0},
    ]
    assert _best(rows)["min_tumour_mm3"] == 0.0  # no tolerance: the best Dice
    # Within 0.01 of 0.800: fewest false lesions, then the better Dice of the two.
    assert _best(rows, 0.01)["min_tumour_mm3"] == 30.0
    assert _best(rows, 0.2)["min_tumour_mm3"] == 65.0
