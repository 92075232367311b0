from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.nets.networks import build_network
from pipeline.workflows.sim2real import default_cases, on_reference_grid, run_sim2real


def _reference(shape, affine) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.zeros(shape, np.uint8), affine)


def test_labels_move_onto_a_reference_stored_with_a_flipped_axis():
    labels = np.zeros((4, 5, 3), np.uint8)
    labels[1, 0, 2] = 1  # first row along y in the source storage
    source = np.diag([-1.0, -1.0, 2.0, 1.0])
    source[:3, 3] = (10.0, 20.0, -5.0)
    # Same voxels, y stored the other way round: y runs from 20 - 4 = 16 upwards.
    target = np.diag([-1.0, 1.0, 2.0, 1.0])
    target[:3, 3] = (10.0, 16.0, -5.0)
    moved = on_reference_grid(labels, source, _reference(labels.shape, target))
    assert moved[1, 4, 2] == 1 and moved.sum() == 1
    # World position of the labelled voxel is unchanged.
    np.testing.assert_allclose(source @ [1, 0, 2, 1], target @ [1, 4, 2, 1])


def test_a_different_grid_is_refused():
    labels = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="not the reference grid"):
        on_reference_grid(labels, np.eye(4), _reference((4, 5, 3), np.diag([2.0, 1, 1, 1])))


def test_sim2real_scores_both_real_scans(tmp_path, real_ct_dir):
    torch.manual_seed(0)
    tiny = {
        "channels": [4, 8, 16],
        "num_res_units": 1,
        "pixdim": [6.0, 6.0, 6.0],
        "roi_size": [16, 16, 16],
    }
    net = build_network("unet", channels=tiny["channels"], num_res_units=1, norm="instance")
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    # An overlay named as the docs name it: the bundle's own quick.yaml, from any folder.
    record = run_sim2real(
        ckpt, tmp_path / "out", ["quick.yaml"], cases=default_cases(real_ct_dir), **tiny
    )
    (overlay,) = record["overlays"]
    assert Path(overlay).name == "quick.yaml" and Path(overlay).is_file()
    assert [c["case"] for c in record["cases"]] == ["abdomen_ct_3mm", "abdomen_ct_dicom"]
    for case in record["cases"]:
        assert 0.0 <= case["liver_dice"] <= 1.0
        assert case["liver_volume_ref_ml"] > 0
        assert (tmp_path / "out" / f"{case['case']}_liver.png").stat().st_size > 5000
        # Predicted tumours are reported (the real scans have no tumour labels).
        assert case["tumours_predicted"] >= 0 and case["tumour_volume_predicted_ml"] >= 0
        assert (case["tumours_predicted"] == 0) == (case["tumour_volume_predicted_ml"] == 0)
    # The DICOM series is 20 slices (40 mm) deep: its QC verdict says so, beside the Dice.
    dicom = record["cases"][1]
    assert dicom["qc"]["verdict"] == "warn"
    assert any("20 slices cover 40 mm" in reason for reason in dicom["qc"]["reasons"])
    # The 3 mm scan holds a litre or two of liver (its dome reaches the last slice).
    assert 500 < record["cases"][0]["liver_volume_ref_ml"] < 3000
    assert json.loads((tmp_path / "out" / "sim2real.json").read_text())["cases"]
    # Two checkpoints are an ensemble; the same weights twice average to the same masks.
    pair = run_sim2real(
        [ckpt, ckpt], tmp_path / "pair", ["quick.yaml"], cases=default_cases(real_ct_dir), **tiny
    )
    assert pair["checkpoint"] == [str(ckpt), str(ckpt)]
    # The second file is read, not dropped: a missing one stops the run naming it.
    with pytest.raises(Exception) as failure:
        run_sim2real(
            [ckpt, tmp_path / "missing.pt"],
            tmp_path / "bad",
            ["quick.yaml"],
            cases=default_cases(real_ct_dir),
            **tiny,
        )
    causes, error = [], failure.value
    while error is not None:  # MONAI's config parser wraps the loader's error
        causes.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("missing.pt" in cause for cause in causes)
    for one, two in zip(record["cases"], pair["cases"], strict=True):
        assert two["liver_dice"] == pytest.approx(one["liver_dice"], abs=1e-6)
        assert two["liver_volume_pred_ml"] == pytest.approx(one["liver_volume_pred_ml"])
