"""Known-answer tests for pipeline.evaluation.auc (the liver-box tumour AUC)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline import LIVER, TUMOUR
from pipeline.evaluation.auc import tumour_auc
from pipeline.evaluation.metrics import evaluate_case, summarize

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


def test_without_probabilities_the_report_leaves_auc_out(tmp_path):
    from pipeline.evaluation.report.model import CaseEntry
    from pipeline.evaluation.report.writer import write_report

    ref = np.zeros((12, 12, 6), np.uint8)
    ref[3:9, 3:9, 1:5] = 1
    ref[5:7, 5:7, 2:4] = 2
    entry = CaseEntry(result=evaluate_case(ref, ref, ANISO, case_id="a"), pred="p", ref="r")
    assert "tumour_auc" not in summarize([entry.result])
    write_report(tmp_path, [entry])
    assert "tumour_auc" not in (tmp_path / "metrics_per_case.csv").read_text()
    assert "tumour_auc" not in json.loads((tmp_path / "summary.json").read_text())
    with_prob = evaluate_case(ref, ref, ANISO, tumour_prob=(ref == 2).astype(float))
    assert summarize([with_prob])["tumour_auc"]["mean"] == 1.0
