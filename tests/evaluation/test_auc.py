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


def test_kept_tumour_probability_gives_the_report_its_auc(tmp_path):
    # As inference leaves it: <case>_seg.nii.gz and <case>_tumour_prob.nii.gz side by side.
    from pipeline.evaluation.pairing import pair_cases
    from pipeline.evaluation.scoring import evaluate_pairs
    from pipeline.io import save_nifti, save_probability_map

    affine = np.diag([*ANISO, 1.0])
    ref = np.zeros((16, 16, 8), np.uint8)
    ref[3:13, 3:13, 1:7] = LIVER
    ref[6:9, 6:9, 2:5] = TUMOUR
    rng = np.random.default_rng(0)
    # Tumour scores higher inside the reference tumour, with overlap: an AUC below 1.
    prob = np.clip(0.35 * (ref == TUMOUR) + rng.random(ref.shape) * 0.7, 0.0, 1.0)
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
    save_nifti(ref, affine, tmp_path / "ref" / "a.nii.gz")
    save_nifti(ref, affine, tmp_path / "ref" / "b.nii.gz")
    save_nifti(ref, affine, tmp_path / "pred" / "a_seg.nii.gz")
    save_nifti(ref, affine, tmp_path / "pred" / "b_seg.nii.gz")
    save_probability_map(prob, affine, tmp_path / "pred" / "a_tumour_prob.nii.gz")
    save_probability_map(prob[:8], affine, tmp_path / "pred" / "b_tumour_prob.nii.gz")
    pairs = pair_cases(tmp_path / "pred", tmp_path / "ref")
    assert [p.case_id for p in pairs] == ["a", "b"]  # the probability files are no cases
    result = evaluate_pairs(pairs, tmp_path / "report", progress=False, viewers=False)
    by_case = {entry.result.case_id: entry for entry in result.cases}
    stored = np.rint(prob * 255) / 255  # what the uint8 file holds
    expected = tumour_auc(stored, ref, ANISO)
    assert 0.6 < expected < 1.0
    assert by_case["a"].result.metrics["tumour_auc"] == pytest.approx(expected, abs=1e-6)
    assert math.isnan(by_case["b"].result.metrics["tumour_auc"])  # wrong grid: left out
    assert any("b_tumour_prob.nii.gz" in note for note in by_case["b"].notes)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["tumour_auc"]["mean"] == pytest.approx(expected, abs=1e-6)
