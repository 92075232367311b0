"""Known-answer tests for pipeline.evaluation.auc (the liver-box tumour AUC)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import LIVER, TUMOUR
from pipeline.evaluation.auc import tumour_auc
from pipeline.evaluation.metrics import evaluate_case

ANISO = (0.8, 0.8, 2.0)


def test_tumour_auc_uses_liver_region_and_subsamples_deterministically():
    ref = np.zeros((40, 40, 40), dtype=np.uint8)
    ref[5:20, 5:20, 10:16] = LIVER
    ref[8:12, 8:12, 11:14] = TUMOUR
    prob = (ref == TUMOUR).astype(np.float32) * 0.9
    result = evaluate_case(ref, ref, ANISO, tumour_prob=prob)
    assert result["tumour_auc"] == 1.0
    # A hot spot far outside the liver box grown by 10 mm is ignored.
    prob[38:, 38:, 38:] = 1.0
    assert tumour_auc(prob, ref, ANISO) == 1.0
    # Inside the box it costs exactly its share of wrongly ordered pairs.
    prob[5:6, 5:6, 10:12] = 1.0  # two liver voxels outrank every tumour voxel
    # Liver box grown by ceil(10 / 0.8) = 13 and ceil(10 / 2) = 5 voxels, clipped to the
    # array: x and y 0..33, z 5..21. The 4 x 4 x 3 tumour gives 48 positives.
    box_voxels, n_pos = 33 * 33 * 16, 48
    assert tumour_auc(prob, ref, ANISO) == pytest.approx(1 - 2 / (box_voxels - n_pos))
    first = tumour_auc(prob, ref, ANISO, max_voxels=5000)
    assert first == tumour_auc(prob, ref, ANISO, max_voxels=5000)
    assert math.isnan(evaluate_case(ref, ref, ANISO)["tumour_auc"])
