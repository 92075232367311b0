from __future__ import annotations

import numpy as np
import pytest

from pipeline.workflows.tuning import choose_min_tumour_size, size_filter_table

SPACING = (2.0, 2.0, 2.0)  # 8 mm^3 per voxel


def _case(lesion: bool, speck_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """A liver with (optionally) a 4^3-voxel lesion found exactly and a false speck."""
    ref = np.zeros((24, 24, 24), dtype=np.uint8)
    ref[2:22, 2:22, 2:22] = 1
    if lesion:
        ref[4:8, 4:8, 4:8] = 2  # 64 voxels, 512 mm^3
    pred = ref.copy()
    pred[15, 15, 15 : 15 + speck_voxels] = 2  # 8 mm^3 per voxel, away from the lesion
    return pred, ref


def test_dropping_a_false_speck_restores_the_dice():
    pred, ref = _case(lesion=True, speck_voxels=2)  # speck of 16 mm^3
    free_pred, free_ref = _case(lesion=False, speck_voxels=1)  # 8 mm^3
    cases = [("a", pred, ref, SPACING), ("free", free_pred, free_ref, SPACING)]
    rows = size_filter_table(cases, candidates_mm3=(0, 10, 30, 1000))
    by_size = {row["min_tumour_mm3"]: row["per_case"] for row in rows}
    # Size 0 keeps everything: 2 * 64 / (66 + 64) with the speck; the tumour-free case is 0.
    assert by_size[0]["a"] == pytest.approx(128 / 130)
    assert by_size[0]["free"] == 0.0
    # 10 mm^3 drops the one-voxel speck only: the tumour-free case scores 1 (LiTS policy).
    assert by_size[10]["free"] == 1.0 and by_size[10]["a"] == pytest.approx(128 / 130)
    # 30 mm^3 drops both specks and keeps the 512 mm^3 lesion.
    assert by_size[30] == {"a": 1.0, "free": 1.0}
    # 1000 mm^3 also drops the real lesion.
    assert by_size[1000] == {"a": 0.0, "free": 1.0}
    assert rows[2]["tumour_dice_per_case"] == 1.0
    assert choose_min_tumour_size(rows) == 30.0


def test_ties_choose_the_smallest_size_and_no_rows_is_an_error():
    rows = [
        {"min_tumour_mm3": 65.0, "tumour_dice_per_case": 0.8},
        {"min_tumour_mm3": 30.0, "tumour_dice_per_case": 0.8},
        {"min_tumour_mm3": 0.0, "tumour_dice_per_case": 0.7},
    ]
    assert choose_min_tumour_size(rows) == 30.0
    with pytest.raises(ValueError, match="no candidate"):
        choose_min_tumour_size([])
