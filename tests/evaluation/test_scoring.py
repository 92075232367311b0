"""Tests of evaluation scoring: pairing, grid checks, known-answer folder evaluation, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.evaluation.scoring import (
    CasePair,
    GridMismatchError,
    PairingError,
    UnpairedCasesError,
    case_name,
    evaluate_pairs,
    load_pair,
    pair_cases,
    pairs_from_datalist,
)
from pipeline.io import save_nifti

SHAPE = (40, 40, 32)
SPACING = (0.8, 0.8, 2.0)
# LPS storage (x and y flipped) with anisotropic voxels: spacing must come from the header.
AFFINE = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _liver(x0: int, x1: int, z1: int = 20) -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[x0:x1, 5:25, 5:z1] = 1
    return labels


def _two_case_folders(root: Path) -> tuple[Path, Path]:
    """Case a: shifted liver and tumour cubes; case b: short liver, false-positive tumour.

    Hand values (voxel counts):
      a liver  ref 20*20*15 = 6000, pred 6000, overlap 17*20*15 = 5100 -> Dice 0.85
      a tumour ref 6*6*4 = 144, pred 144, overlap 4*6*4 = 96           -> Dice 2/3
      b liver  ref 6000, pred 20*20*10 = 4000, overlap 4000             -> Dice 0.8
      b tumour ref empty, pred 2*2*2 = 8                                -> Dice 0 (policy)
    """
    ref_a, pred_a = _liver(5, 25), _liver(8, 28)
    ref_a[10:16, 10:16, 8:12] = 2
    pred_a[12:18, 10:16, 8:12] = 2
    ref_b, pred_b = _liver(5, 25), _liver(5, 25, z1=15)
    pred_b[6:8, 6:8, 6:8] = 2
    pred_dir, ref_dir = root / "pred", root / "ref"
    save_nifti(pred_a, AFFINE, pred_dir / "a_seg.nii.gz")
    save_nifti(pred_b, AFFINE, pred_dir / "b_seg.nii.gz")
    save_nifti(ref_a, AFFINE, ref_dir / "a.nii.gz")
    save_nifti(ref_b, AFFINE, ref_dir / "b.nii.gz")
    return pred_dir, ref_dir


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- pairing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "role", "expected"),
    [
        ("volume-3_seg.nii.gz", "label", "3"),
        ("segmentation-3.nii", "label", "3"),
        ("volume-3.nii", "label", "3"),
        ("liver_7.nii.gz", "label", "liver_7"),
        ("liver_7_label.nii.gz", "label", "liver_7"),
        ("liver_7_mask.nii", "label", "liver_7"),
        ("liver_7_0000.nii.gz", "image", "liver_7"),
        ("liver_7_0000.nii.gz", "label", "liver_7_0000"),  # only images drop the channel
        ("_seg.nii.gz", "label", "_seg"),  # a bare suffix is a name, not a suffix
    ],
)
def test_case_name(name, role, expected):
    assert case_name(name, role) == expected


def test_pair_cases_across_naming_styles(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    # this project's output, LiTS names, nnU-Net output and an MSD-style name
    _touch(pred, "volume-3_seg.nii.gz", "segmentation-4.nii", "case10.nii.gz", "liver_1_seg.nii")
    # a LiTS folder keeps CT and labels together: the label file must win in ref
    _touch(ref, "segmentation-3.nii", "volume-3.nii", "segmentation-4.nii", "liver_1.nii.gz")
    _touch(ref, "case10_label.nii.gz", "notes.txt", ".segmentation-9.nii.tmp.nii")
    pairs = pair_cases(pred, ref, image_dir=ref)
    assert [p.case_id for p in pairs] == ["3", "4", "case10", "liver_1"]
    by_id = {p.case_id: p for p in pairs}
    assert by_id["3"].pred == pred / "volume-3_seg.nii.gz"
    assert by_id["3"].ref == ref / "segmentation-3.nii"
    assert by_id["3"].image == ref / "volume-3.nii"  # image folders prefer the CT
    assert by_id["4"].image is None  # no CT for this case: labels-only overlay
    assert by_id["case10"].ref == ref / "case10_label.nii.gz"
    assert by_id["liver_1"].pred == pred / "liver_1_seg.nii"


def test_pair_cases_sorts_numbers_numerically(tmp_path):
    names = [f"segmentation-{i}.nii" for i in (10, 2, 1)]
    _touch(tmp_path / "p", *names)
    _touch(tmp_path / "r", *names)
    assert [p.case_id for p in pair_cases(tmp_path / "p", tmp_path / "r")] == ["1", "2", "10"]


def test_unpaired_files_raise_naming_both_sides(tmp_path):
    _touch(tmp_path / "pred", "a_seg.nii.gz", "b_seg.nii.gz")
    _touch(tmp_path / "ref", "a.nii.gz", "c.nii.gz")
    with pytest.raises(UnpairedCasesError) as info:
        pair_cases(tmp_path / "pred", tmp_path / "ref")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "b_seg.nii.gz" in message and "c.nii.gz" in message
    assert "a_seg.nii.gz" not in message
    assert info.value.unpaired_pred == [tmp_path / "pred" / "b_seg.nii.gz"]
    assert info.value.unpaired_ref == [tmp_path / "ref" / "c.nii.gz"]

    pairs = pair_cases(tmp_path / "pred", tmp_path / "ref", allow_missing=True)
    assert [(p.case_id, p.pred is None, p.ref is None) for p in pairs] == [
        ("a", False, False),
        ("b", False, True),
        ("c", True, False),
    ]


def test_two_files_of_one_case_are_an_error(tmp_path):
    _touch(tmp_path / "pred", "3.nii.gz", "3_seg.nii.gz", "3_mask.nii")
    _touch(tmp_path / "ref", "3.nii.gz")
    with pytest.raises(PairingError, match="3_seg.nii.gz.*3_mask.nii|3_mask.nii.*3_seg.nii.gz"):
        pair_cases(tmp_path / "pred", tmp_path / "ref")


def test_empty_or_absent_folder_is_a_pairing_error(tmp_path):
    _touch(tmp_path / "ref", "a.nii.gz")
    (tmp_path / "pred").mkdir()
    with pytest.raises(PairingError, match="no prediction NIfTI"):
        pair_cases(tmp_path / "pred", tmp_path / "ref")
    with pytest.raises(PairingError, match="does not exist"):
        pair_cases(tmp_path / "nowhere", tmp_path / "ref")


def test_pairs_from_datalist_finds_predictions_in_sub_folders(tmp_path):
    # MONAI's SaveImage writes <name>/<name>_seg.nii.gz; datalist paths are relative.
    _touch(tmp_path / "pred" / "volume-3", "volume-3_seg.nii.gz")
    _touch(tmp_path / "pred", "liver_5_seg.nii.gz")
    records = [
        {"image": "volume-3.nii", "label": "segmentation-3.nii"},
        {"image": "imagesTr/liver_5.nii.gz", "label": "labelsTr/liver_5.nii.gz"},
        {"image": "volume-4.nii", "label": "segmentation-4.nii"},
    ]
    pairs = pairs_from_datalist(records, tmp_path / "pred", base_dir=tmp_path / "data")
    assert [p.case_id for p in pairs] == ["3", "liver_5", "4"]
    assert pairs[0].pred == tmp_path / "pred" / "volume-3" / "volume-3_seg.nii.gz"
    assert pairs[0].ref == tmp_path / "data" / "segmentation-3.nii"
    assert pairs[0].image == tmp_path / "data" / "volume-3.nii"
    assert pairs[1].pred == tmp_path / "pred" / "liver_5_seg.nii.gz"
    assert pairs[2].pred is None and not pairs[2].complete  # reported as missing


# --- loading ------------------------------------------------------------------------------


def test_grid_mismatch_names_both_files(tmp_path):
    labels = _liver(5, 25)
    save_nifti(labels, AFFINE, tmp_path / "ref.nii.gz")
    save_nifti(labels[:, :, :30], AFFINE, tmp_path / "short_seg.nii.gz")
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.01  # 10 micrometres: beyond the 1e-3 mm tolerance
    save_nifti(labels, shifted, tmp_path / "shifted_seg.nii.gz")
    nearly = AFFINE.copy()
    nearly[0, 3] += 1e-4  # float noise between tools: accepted
    save_nifti(labels, nearly, tmp_path / "nearly_seg.nii.gz")

    with pytest.raises(GridMismatchError) as info:
        load_pair(CasePair("x", tmp_path / "short_seg.nii.gz", tmp_path / "ref.nii.gz"))
    message = str(info.value)
    assert "short_seg.nii.gz" in message and "ref.nii.gz" in message
    assert "(40, 40, 30)" in message and "(40, 40, 32)" in message
    with pytest.raises(GridMismatchError, match="shifted_seg.nii.gz"):
        load_pair(CasePair("x", tmp_path / "shifted_seg.nii.gz", tmp_path / "ref.nii.gz"))
    loaded = load_pair(CasePair("x", tmp_path / "nearly_seg.nii.gz", tmp_path / "ref.nii.gz"))
    assert loaded.spacing == pytest.approx(SPACING)
    assert loaded.pred.dtype == np.uint8 and np.array_equal(loaded.pred, labels)


# --- evaluation of folders ----------------------------------------------------------------


def test_two_case_folder_gives_hand_computed_dice(tmp_path):
    pred_dir, ref_dir = _two_case_folders(tmp_path)
    result = evaluate_pairs(pair_cases(pred_dir, ref_dir), tmp_path / "report", progress=False)
    assert result.ok and [c.case_id for c in result.cases] == ["a", "b"]

    rows = {r["case_id"]: r for r in _csv_rows(tmp_path / "report" / "metrics_per_case.csv")}
    assert float(rows["a"]["liver_dice"]) == pytest.approx(2 * 5100 / 12000, rel=1e-12)
    assert float(rows["a"]["tumour_dice"]) == pytest.approx(2 * 96 / 288, rel=1e-12)
    assert float(rows["b"]["liver_dice"]) == pytest.approx(2 * 4000 / 10000, rel=1e-12)
    assert float(rows["b"]["tumour_dice"]) == 0.0  # reference empty, prediction not
    # spacing from the header (float32 zooms): 6000 voxels of 0.8 x 0.8 x 2 mm = 7.68 mL
    assert float(rows["a"]["liver_vol_ref_ml"]) == pytest.approx(7.68, rel=1e-6)
    assert rows["b"]["tumour_surface_defined"] == "False" and rows["b"]["tumour_hd95"] == "nan"

    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    liver, tumour = summary["liver"], summary["tumour"]
    assert liver["dice"]["mean"] == pytest.approx((0.85 + 0.8) / 2, rel=1e-12)
    assert liver["dice_global"] == pytest.approx(2 * (5100 + 4000) / (12000 + 10000), rel=1e-12)
    assert tumour["dice"]["mean"] == pytest.approx((2 / 3 + 0) / 2, rel=1e-12)
    assert tumour["dice_global"] == pytest.approx(2 * 96 / (288 + 8), rel=1e-12)
    # HD95 is undefined for case b's tumour: averaged over one case, not counted as 0
    assert tumour["hd95"]["n"] == 1 and tumour["n_surface_defined"] == 1
    assert summary["n_cases"] == 2 and summary["n_failed"] == 0
    assert _csv_rows(tmp_path / "report" / "failures.csv") == []


def test_label_map_remaps_reference_values(tmp_path):
    ref = _liver(5, 25)
    multi = np.where(ref == 1, 5, 0).astype(np.uint8)  # TotalSegmentator: 5 = liver
    multi[30:35, 30:35, 5:10] = 1  # spleen, must not become liver
    save_nifti(ref, AFFINE, tmp_path / "pred" / "t_seg.nii.gz")
    save_nifti(multi, AFFINE, tmp_path / "ref" / "t.nii.gz")
    pairs = pair_cases(tmp_path / "pred", tmp_path / "ref")

    plain = evaluate_pairs(pairs, tmp_path / "plain", progress=False)
    assert [f.case_id for f in plain.failures] == ["t"]
    assert "[5]" in plain.failures[0].reason and "--label-map" in plain.failures[0].reason

    remapped = evaluate_pairs(pairs, tmp_path / "remapped", label_map={5: 1}, progress=False)
    assert remapped.ok
    assert remapped.cases[0].result["liver_dice"] == 1.0  # spleen dropped, liver kept
    with pytest.raises(ValueError, match="outside 0, 1, 2"):
        evaluate_pairs(pairs, tmp_path / "bad", label_map={5: 7}, progress=False)


def test_corrupt_case_is_listed_and_others_scored(tmp_path):
    pred_dir, ref_dir = _two_case_folders(tmp_path)
    (pred_dir / "b_seg.nii.gz").write_bytes(b"not a nifti file")
    result = evaluate_pairs(pair_cases(pred_dir, ref_dir), tmp_path / "report", progress=False)
    assert not result.ok
    assert [c.case_id for c in result.cases] == ["a"]
    failures = _csv_rows(tmp_path / "report" / "failures.csv")
    assert [f["case_id"] for f in failures] == ["b"]
    assert failures[0]["pred"].endswith("b_seg.nii.gz") and failures[0]["reason"]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["failed_cases"] == ["b"] and summary["n_cases"] == 1
    assert summary["liver"]["dice"]["mean"] == pytest.approx(0.85)
    assert "b_seg.nii.gz" in (tmp_path / "report" / "report.html").read_text()


def test_grid_mismatch_inside_a_folder_is_a_failure_naming_both_files(tmp_path):
    pred_dir, ref_dir = _two_case_folders(tmp_path)
    save_nifti(_liver(5, 25)[:, :, :20], AFFINE, pred_dir / "b_seg.nii.gz")
    result = evaluate_pairs(pair_cases(pred_dir, ref_dir), tmp_path / "report", progress=False)
    (failure,) = result.failures
    assert "GridMismatchError" in failure.reason
    assert str(pred_dir / "b_seg.nii.gz") in failure.reason
    assert str(ref_dir / "b.nii.gz") in failure.reason


def test_missing_cases_are_listed_not_scored(tmp_path):
    pred_dir, ref_dir = _two_case_folders(tmp_path)
    (pred_dir / "b_seg.nii.gz").unlink()
    pairs = pair_cases(pred_dir, ref_dir, allow_missing=True)
    result = evaluate_pairs(pairs, tmp_path / "report", progress=False)
    assert result.ok  # missing was allowed by the caller
    assert [(m.case_id, m.reason) for m in result.missing] == [("b", "no prediction")]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["missing_cases"] == ["b"]
    assert summary["liver"]["dice"]["mean"] == pytest.approx(0.85)  # b not scored as empty


def test_duplicate_case_ids_are_rejected(tmp_path):
    pair = CasePair("a", tmp_path / "p.nii", tmp_path / "r.nii")
    with pytest.raises(ValueError, match="more than once"):
        evaluate_pairs([pair, pair], tmp_path / "report", progress=False)


# --- command line -------------------------------------------------------------------------


def test_cli_evaluate_exit_codes(tmp_path, capsys):
    pred_dir, ref_dir = _two_case_folders(tmp_path)
    args = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "liver" in out and "0.825" in out and str(tmp_path / "ok" / "report.html") in out

    (pred_dir / "b_seg.nii.gz").write_bytes(b"corrupt")
    assert main([*args, "--out", str(tmp_path / "failed")]) == 1
    assert "FAILED b" in capsys.readouterr().err

    (pred_dir / "b_seg.nii.gz").unlink()
    assert main([*args, "--out", str(tmp_path / "unpaired")]) == 2
    err = capsys.readouterr().err
    assert "pairing error" in err and str(ref_dir / "b.nii.gz") in err
    assert not (tmp_path / "unpaired").exists()
    assert main([*args, "--out", str(tmp_path / "allowed"), "--allow-missing"]) == 0


def test_cli_evaluate_refuses_an_output_that_is_a_file_before_scoring(tmp_path, capsys):
    pred_dir, ref_dir = _two_case_folders(tmp_path)
    taken = tmp_path / "report.txt"
    taken.write_text("keep me")
    args = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--no-progress"]
    assert main([*args, "--out", str(taken)]) == 2
    captured = capsys.readouterr()
    assert f"--out {taken} is a file, not a folder" in captured.err
    assert "liver" not in captured.out  # nothing was scored
    assert taken.read_text() == "keep me"


def test_cli_label_map_argument(tmp_path):
    ref = np.where(_liver(5, 25) == 1, 5, 0).astype(np.uint8)
    save_nifti(_liver(5, 25), AFFINE, tmp_path / "pred" / "t_seg.nii.gz")
    save_nifti(ref, AFFINE, tmp_path / "ref" / "t.nii.gz")
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]
    args += ["--out", str(tmp_path / "report"), "--no-progress"]
    assert main(args) == 1
    assert main([*args, "--label-map", "5:1"]) == 0
    with pytest.raises(SystemExit):
        main([*args, "--label-map", "five:one"])


def test_a_prediction_stored_in_another_axis_order_is_reoriented_and_noted(tmp_path):
    ref = _liver(5, 25)
    save_nifti(ref, AFFINE, tmp_path / "ref" / "t.nii.gz")
    # The same grid stored with the first axis reversed (LAS against RAS, say).
    flipped = np.ascontiguousarray(ref[::-1])
    flip_affine = AFFINE @ np.array(
        [[-1, 0, 0, ref.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float
    )
    save_nifti(flipped, flip_affine, tmp_path / "pred" / "t_seg.nii.gz")
    result = evaluate_pairs(
        pair_cases(tmp_path / "pred", tmp_path / "ref"), tmp_path / "report",
        progress=False, viewers=False,
    )  # fmt: skip
    (entry,) = result.cases
    assert entry.result["liver_dice"] == 1.0
    assert any("reoriented to the reference's" in note for note in entry.notes)
    # A genuine mismatch (shifted by 2 voxels) still stops, naming both files.
    shifted = AFFINE.copy()
    shifted[0, 3] += 2 * AFFINE[0, 0]
    save_nifti(ref, shifted, tmp_path / "pred" / "t_seg.nii.gz")
    result = evaluate_pairs(
        pair_cases(tmp_path / "pred", tmp_path / "ref"), tmp_path / "report2",
        progress=False, viewers=False,
    )  # fmt: skip
    (failure,) = result.failures
    assert "grids differ" in failure.reason and "t_seg.nii.gz" in failure.reason


def test_totalsegmentator_case_folders_are_read_as_label_maps(tmp_path):
    ref = _liver(5, 25)
    ref[10:14, 10:14, 8:12] = 2  # a tumour inside the liver
    save_nifti(ref, AFFINE, tmp_path / "ref" / "case7.nii.gz")
    folder = tmp_path / "pred" / "case7"  # TotalSegmentator: one folder per case
    save_nifti((ref >= 1).astype(np.uint8), AFFINE, folder / "liver.nii.gz")
    save_nifti((ref == 2).astype(np.uint8), AFFINE, folder / "liver_tumor.nii.gz")
    save_nifti(np.zeros_like(ref), AFFINE, folder / "spleen.nii.gz")  # other structures
    (pair,) = pair_cases(tmp_path / "pred", tmp_path / "ref")
    assert pair.case_id == "case7" and pair.pred == folder
    result = evaluate_pairs([pair], tmp_path / "report", progress=False, viewers=False)
    (entry,) = result.cases
    assert entry.result["liver_dice"] == 1.0 and entry.result["tumour_dice"] == 1.0
    assert entry.result["tumour_n_ref"] == 64
    # Without the tumour file the tumour voxels are liver: tumour Dice 0, liver still 1.
    (folder / "liver_tumor.nii.gz").unlink()
    result = evaluate_pairs([pair], tmp_path / "report2", progress=False, viewers=False)
    assert result.cases[0].result["tumour_dice"] == 0.0
    assert result.cases[0].result["liver_dice"] == 1.0
