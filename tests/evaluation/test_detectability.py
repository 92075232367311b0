from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.evaluation.detectability import cnr_bin, lesion_visibility, summarize_visibility
from pipeline.io import save_nifti

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = (-40.0, -40.0, -40.0)
CENTRES = [(10, 10, 10), (28, 28, 28)]  # voxels; both lesions 16 mm across


def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def _world(voxel) -> list[float]:
    return list(AFFINE[:3, :3] @ np.asarray(voxel, float) + AFFINE[:3, 3])


@pytest.fixture
def scored(tmp_path):
    """One phantom with a 30 HU and a 5 HU lesion (noise 10 HU); only the first is found."""
    label = np.zeros((40, 40, 40), np.uint8)
    label[4:36, 4:36, 4:36] = 1
    for centre in CENTRES:
        label[_ball(label.shape, centre, 4)] = 2
    pred = label.copy()
    pred[pred == 2] = 1
    pred[_ball(label.shape, CENTRES[0], 4)] = 2
    data, preds = tmp_path / "data", tmp_path / "pred"
    save_nifti(label, AFFINE, data / "segmentation-7.nii.gz")
    save_nifti(pred, AFFINE, preds / "volume-7.nii.gz")
    # Drawn centres 1 mm off the painted ones, listed in the opposite order.
    tumours = [
        {"centre_mm": [c + 1.0 for c in _world(CENTRES[1])], "kind": "rim", "hu": {"body": 85.0}},
        {"centre_mm": _world(CENTRES[0]), "kind": "solid", "hu": {"body": 60.0}},
    ]
    case = {
        "label": "segmentation-7.nii.gz", "phase": "portal_venous", "noise_sd": 10.0,
        "hu": {"liver": 90.0}, "tumours": tumours,
    }  # fmt: skip
    (data / "phantoms.json").write_text(json.dumps({"settings": {}, "cases": [case]}))
    report = tmp_path / "report"
    assert main(["evaluate", "--pred", str(preds), "--ref", str(data), "--out", str(report),
                 "--no-progress"]) == 0  # fmt: skip
    return report, data


def test_each_lesion_gets_the_contrast_of_the_nearest_drawn_lesion(scored):
    rows = sorted(lesion_visibility(*scored), key=lambda r: r["cnr"])
    assert [r["case_id"] for r in rows] == ["7", "7"]
    faint, clear = rows
    assert faint["contrast_hu"] == pytest.approx(-5.0) and faint["cnr"] == pytest.approx(0.5)
    assert faint["kind"] == "rim" and faint["match_mm"] == pytest.approx(3**0.5, abs=1e-6)
    assert not faint["detected_iou"] and faint["best_iou"] == 0.0
    assert clear["contrast_hu"] == pytest.approx(-30.0) and clear["cnr"] == pytest.approx(3.0)
    assert clear["detected_iou"] and clear["best_iou"] == pytest.approx(1.0)
    # A ball of radius 4 voxels at 2 mm: 257 voxels, about 15.8 mm across.
    assert clear["diameter_mm"] == pytest.approx((6 * 257 * 8 / np.pi) ** (1 / 3))
    assert clear["size_bin"] == "10-20mm"


def test_summary_counts_recall_per_size_and_contrast_bin(scored):
    summary = summarize_visibility(lesion_visibility(*scored))
    assert summary["n_lesions"] == 2
    assert summary["bins"] == [
        {"size": "10-20mm", "cnr": "<1", "n": 1, "detected": 0, "recall": 0.0},
        {"size": "10-20mm", "cnr": "2-4", "n": 1, "detected": 1, "recall": 1.0},
    ]
    assert summarize_visibility(lesion_visibility(*scored), min_diameter_mm=20)["bins"] == []


def test_cli_writes_the_table(scored, capsys):
    report, data = scored
    assert main(["visibility", "--report", str(report), "--data", str(data)]) == 0
    written = json.loads((report / "lesion_visibility.json").read_text())
    assert len(written["lesions"]) == 2 and written["summary"]["n_lesions"] == 2
    assert "10-20mm   2-4     1     1  1.00" in capsys.readouterr().out


def test_bins_include_their_lower_edge():
    assert [cnr_bin(v) for v in (0.0, 0.99, 1.0, 2.0, 3.99, 4.0, 50.0)] == [
        "<1", "<1", "1-2", "2-4", "2-4", ">=4", ">=4"
    ]  # fmt: skip


def test_a_case_missing_from_phantoms_json_is_named(scored):
    report, data = scored
    (data / "phantoms.json").write_text(json.dumps({"settings": {}, "cases": []}))
    with pytest.raises(KeyError, match="case '7' is not in"):
        lesion_visibility(report, data)
