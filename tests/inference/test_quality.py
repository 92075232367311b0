"""Quality control: inputs that are not CT in HU, stale spacings, slabs and implausible
livers get a verdict with the reason, and a failing scan is skipped, named."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from oracle_predictor import oracle_predictor, save_tiny_checkpoint

from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.inference.folder_run import FolderRun
from pipeline.inference.quality import QualityControl, QualityReport
from pipeline.inference.scans import InvalidScanError, check_nifti_header
from pipeline.io import save_nifti

QC = QualityControl(min_z_mm=150.0)


@pytest.fixture(scope="module")
def phantom():
    # A realistic abdomen: 128 x 128 in-plane covering the body, 220-340 mm in z.
    return generate_phantom(7, PhantomConfig(shape=(128, 128, 64), orientation="LPS"))


def test_a_phantom_abdomen_passes(phantom):
    report = QC.check_scan(phantom.image, phantom.affine)
    assert (report.verdict, report.reasons) == ("pass", [])


def test_a_constant_volume_fails(phantom):
    report = QC.check_scan(np.full((64, 64, 40), 40, np.int16), phantom.affine)
    assert report.verdict == "fail" and "constant image (40)" in report.reasons[0]


def test_stored_values_without_rescale_fail(phantom):
    raw = phantom.image.astype(np.int32) + 1024  # CT as stored: 0-4095, intercept not applied
    report = QC.check_scan(raw, phantom.affine)
    assert report.verdict == "fail"
    assert "none below 0: stored values without their rescale" in report.reasons[0]


def test_no_air_warns(phantom):
    inside = np.clip(phantom.image, -200, None)  # as if cropped inside the body
    report = QC.check_scan(inside, phantom.affine)
    assert report.verdict == "warn" and report.reasons[0].startswith("warn: no air: 0.00 %")


def test_a_stale_in_plane_spacing_warns(phantom):
    # The same voxels with 1/8 of the in-plane voxel size: the body becomes 8 times narrower.
    stale = phantom.affine.copy()
    stale[:3, :2] /= 8
    report = QC.check_scan(phantom.image, stale)
    assert report.verdict == "warn"
    (reason,) = report.reasons
    assert "mm across, outside 150-700 mm for an abdomen: a stale voxel size" in reason
    across = float(reason.split("the body is ")[1].split(" mm")[0])
    spacing = np.linalg.norm(phantom.affine[:3, :3], axis=0)
    assert across < 128 * spacing[0] / 8 + 1


def test_a_three_slice_series_warns(phantom):
    report = QC.check_scan(phantom.image[:, :, 30:33], phantom.affine)
    z = 3 * np.linalg.norm(phantom.affine[:3, 2])
    assert report.verdict == "warn"
    assert report.reasons == [
        f"warn: 3 slices cover {z:.0f} mm, less than the network's 150 mm window: a liver "
        "(about 150 mm) may not fit"
    ]


def test_liver_volume_and_field_of_view_checks():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm^3 per voxel: 125 voxels per mL
    labels = np.zeros((100, 100, 100), np.uint8)
    labels[20:70, 20:70, 20:80] = 1  # 150,000 voxels = 1200 mL, inside the scan
    report = QualityReport()
    QC.check_mask(labels, affine, report)
    assert (report.verdict, report.reasons) == ("pass", [])
    labels[:] = 1  # 8000 mL and touching every face
    QC.check_mask(labels, affine, report)
    assert report.reasons == [
        "warn: predicted liver 8000 mL, outside 300-5000 mL",
        "warn: the liver touches the scan's edge (array axes [0, 1, 2]): the field of view "
        "may cut it, and its volume is then too small",
    ]


def test_a_liver_on_the_patients_left_warns(phantom):
    # The LPS phantom's liver lies right of its body's centre; negating the affine's x
    # row (left and right swapped in the header) puts it as far on the left.
    liver = (phantom.label > 0).astype(np.uint8)
    report = QC.check_scan(phantom.image, phantom.affine)
    QC.check_mask(liver, phantom.affine, report)
    assert not any("patient's" in reason for reason in report.reasons)
    world = phantom.affine[:3, :3] @ np.argwhere(liver).mean(axis=0) + phantom.affine[:3, 3]
    right_mm = world[0] - report.body_centre_mm[0]
    assert right_mm > 20  # the phantoms' livers lie 21-63 mm right of the body's centre
    swapped = phantom.affine.copy()
    swapped[0] *= -1
    report = QC.check_scan(phantom.image, swapped)
    QC.check_mask(liver, swapped, report)
    (reason,) = [r for r in report.reasons if "patient's" in r]
    expected = f"warn: the liver's centre lies {right_mm:.0f} mm to the patient's left"
    assert reason.startswith(expected)
    assert report.verdict == "warn"
    # A threshold 10 mm beyond where the liver lies warns too; None: no check.
    strict = QualityControl(min_liver_right_mm=right_mm + 10)
    report = strict.check_scan(phantom.image, phantom.affine)
    strict.check_mask(liver, phantom.affine, report)
    assert any(f"only {right_mm:.0f} mm to the patient's right" in r for r in report.reasons)
    unchecked = QualityControl(min_liver_right_mm=None)
    report = unchecked.check_scan(phantom.image, swapped)
    unchecked.check_mask(liver, swapped, report)
    assert not any("patient's" in reason for reason in report.reasons)


def test_disabled_control_says_nothing():
    off = QualityControl(enabled=False)
    assert off.check_scan(np.zeros((8, 8, 8)), np.eye(4)).to_dict() == {
        "verdict": "pass",
        "reasons": [],
    }


def test_folder_run_skips_failing_scans_and_flags_warned_ones(tmp_path, phantom):
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt")
    folder = tmp_path / "in"
    save_nifti(phantom.image, phantom.affine, folder / "good.nii.gz")
    save_nifti(np.full((40, 40, 30), 7, np.int16), phantom.affine, folder / "constant.nii.gz")
    raw = (phantom.image.astype(np.int32) + 1024).astype(np.int16)
    save_nifti(raw, phantom.affine, folder / "raw.nii.gz")
    out = tmp_path / "out"
    summary = FolderRun(oracle_predictor(ckpt), folder, out, progress=False).run()
    assert summary.done == ["good"]
    failed = {f["case"]: f["error"] for f in summary.failed}
    assert set(failed) == {"constant", "raw"}
    assert "constant.nii.gz: quality control: fail: constant image (7)" in failed["constant"]
    assert "raw.nii.gz: quality control: fail: values" in failed["raw"]
    assert not list(out.glob("constant*")) and not list(out.glob("raw*"))
    # The oracle's "liver" (everything over 150 HU: the spine, the largest part) runs
    # through the first and last slice: flagged as a liver cut by the field of view.
    record = json.loads((out / "good.json").read_text())
    assert record["qc"]["verdict"] == "warn"
    assert any("touches the scan's edge (array axes [2])" in r for r in record["qc"]["reasons"])
    with open(out / "quantification.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["qc"] == "warn" and "touches the scan's edge" in row["qc_reasons"]
    run = json.loads((out / "run.json").read_text())
    assert run["qc"] == {"pass": [], "warn": ["good"]}
    assert [f["case"] for f in summary.flagged] == ["good"]


def test_bundle_settings_reach_the_quality_control(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt")
    predictor = oracle_predictor(ckpt, **{"qc#min_liver_ml": 10.0, "qc#max_body_mm": 900.0})
    assert predictor.quality.min_liver_ml == 10.0 and predictor.quality.max_body_mm == 900.0
    # The network's window: 16 voxels of 4 mm in the tests' tiny geometry.
    assert predictor.quality.min_z_mm == pytest.approx(64.0)


def _nifti_with_forms(path, sform, qform, shape=(40, 40, 20)):
    image = nib.Nifti1Image(np.zeros(shape, np.int16), qform)
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=1)
    nib.save(image, path)
    return path


def test_a_degenerate_sform_is_refused_naming_the_grid_a_reader_would_use(tmp_path):
    qform = np.diag([0.8, 0.8, 2.5, 1.0])
    sform = qform.copy()
    sform[:, 1] = 0  # a zero column: readers silently fall back to the qform
    path = _nifti_with_forms(tmp_path / "zero.nii.gz", sform, qform)
    with pytest.raises(InvalidScanError) as raised:
        check_nifti_header(path)
    message = str(raised.value)
    assert "the sform (code 1) is degenerate (voxel axis lengths [0.8, 0.0, 2.5] mm)" in message
    assert "the qform gives voxel sizes [0.8, 0.8, 2.5] mm" in message


def test_sform_and_qform_that_disagree_give_a_warning(tmp_path, phantom):
    sform = phantom.affine.copy()
    qform = sform.copy()
    qform[2, 3] += 40.0  # the qform places the scan 40 mm higher
    image = nib.Nifti1Image(phantom.image, sform)
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=2)
    nib.save(image, tmp_path / "two.nii.gz")
    assert check_nifti_header(tmp_path / "two.nii.gz") == [
        "the NIfTI sform and qform place the grid up to 40.0 mm apart; the sform is used "
        "(the NIfTI rule), check the header"
    ]
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out"
    FolderRun(oracle_predictor(ckpt), tmp_path / "two.nii.gz", out, progress=False).run()
    reasons = json.loads((out / "two.json").read_text())["qc"]["reasons"]
    assert "warn: the NIfTI sform and qform place the grid up to 40.0 mm apart" in reasons[0]
    assert check_nifti_header(_nifti_with_forms(tmp_path / "ok.nii.gz", sform, sform)) == []


def test_the_evaluation_report_shows_the_inference_verdict(tmp_path, phantom):
    from pipeline.evaluation.scoring import evaluate_pairs, pair_cases

    ckpt = save_tiny_checkpoint(tmp_path / "model.pt")
    save_nifti(phantom.image, phantom.affine, tmp_path / "in" / "good.nii.gz")
    save_nifti(phantom.label, phantom.affine, tmp_path / "ref" / "good.nii.gz")
    FolderRun(oracle_predictor(ckpt), tmp_path / "in", tmp_path / "out", progress=False).run()
    verdict = json.loads((tmp_path / "out" / "good.json").read_text())["qc"]
    result = evaluate_pairs(
        pair_cases(tmp_path / "out", tmp_path / "ref"), tmp_path / "report",
        progress=False, viewers=False,
    )  # fmt: skip
    (entry,) = result.cases
    assert entry.qc == verdict and verdict["verdict"] == "warn"
    cases = json.loads((tmp_path / "report" / "cases.json").read_text())["cases"]
    assert cases[0]["qc"] == verdict
    html = (tmp_path / "report" / "report.html").read_text()
    assert '<td class="fair" title="warn: the liver touches the scan' in html
