"""Tests of the report writer (files, numbers, rebuild) and the overlay orientation."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from nibabel import orientations

from pipeline.cli import main
from pipeline.evaluation.metrics import evaluate_case, summarize
from pipeline.evaluation.report.figures import extract_overlay
from pipeline.evaluation.report.model import CaseEntry, UnscoredCase, collect_provenance
from pipeline.evaluation.report.writer import build_report, write_report
from pipeline.evaluation.scoring import evaluate_pairs, pair_cases
from pipeline.io import save_nifti

SPACING = (0.8, 0.8, 2.0)
AFFINE = np.diag([*SPACING, 1.0])
REPORT_FILES = (
    "metrics_per_case.csv", "summary.json", "summary.md", "cases.json", "report.html",
    "failures.csv", "lesions.csv", "overlays.npz",
)  # fmt: skip
TRAINING_CSV = (
    "epoch,loss,liver_dice,tumour_dice,mean_dice,lr,seconds\n"
    "1,0.9,0.40,0.00,0.20,0.001,3.0\n"
    "2,0.7,0.80,0.30,0.55,0.0005,6.0\n"
)


def _case(shift: int, tumour: bool) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((32, 32, 24), dtype=np.uint8)
    ref[4:24, 6:26, 4:18] = 1
    pred = np.zeros_like(ref)
    pred[4 + shift : 24 + shift, 6:26, 4:18] = 1
    if tumour:
        ref[8:14, 10:16, 8:12] = 2
        pred[9:15, 10:16, 8:12] = 2
    return pred, ref


@pytest.fixture()
def report_dir(tmp_path: Path) -> tuple[Path, list[CaseEntry]]:
    entries, overlays = [], {}
    for case_id, shift, tumour in (("good", 0, True), ("poor", 6, False), ("fair", 3, True)):
        pred, ref = _case(shift, tumour)
        result = evaluate_case(pred, ref, SPACING, case_id=case_id)
        entries.append(CaseEntry(result, f"/p/{case_id}.nii.gz", f"/r/{case_id}.nii.gz"))
        overlays[case_id] = extract_overlay(pred, ref, AFFINE)
    (tmp_path / "metrics.csv").write_text(TRAINING_CSV)
    failure = UnscoredCase("broken", "/p/broken.nii.gz", "/r/broken.nii.gz", None, "OSError: x")
    out = tmp_path / "report"
    write_report(
        out,
        entries,
        failures=[failure],
        provenance={"checkpoint": "/m/model.pt", "checkpoint_sha256": "ab" * 32},
        training_metrics_csv=tmp_path / "metrics.csv",
        overlays=overlays,
    )
    return out, entries


def test_report_files_and_summary_numbers(report_dir):
    out, entries = report_dir
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    expected = summarize([e.result for e in entries])
    for name in ("liver", "tumour"):
        for key in ("dice", "iou", "hd95", "assd", "nsd"):
            for stat in ("mean", "sd", "median", "n"):
                value = expected[name][key][stat]
                got = summary[name][key][stat]
                assert (got is None and math.isnan(value)) or got == pytest.approx(value, 1e-12)
        assert summary[name]["dice_global"] == pytest.approx(expected[name]["dice_global"])
    # case "poor" has no tumour in either mask: Dice 1 by policy, HD95 over the 2 others
    assert summary["tumour"]["dice"]["n"] == 3 and summary["tumour"]["hd95"]["n"] == 2
    assert summary["lesions"]["iou"]["tp"] == expected["lesions"]["iou"]["tp"] == 2
    assert summary["n_failed"] == 1 and summary["failed_cases"] == ["broken"]

    rows = list(csv.DictReader(open(out / "metrics_per_case.csv", newline="")))
    assert [r["case_id"] for r in rows] == ["good", "poor", "fair"]
    # every flat key, in order; no AUC column: no case came with probabilities
    assert list(rows[0]) == [k for k in entries[0].result.to_dict() if k != "tumour_auc"]
    assert float(rows[1]["liver_dice"]) == entries[1].result["liver_dice"]

    cases = json.loads((out / "cases.json").read_text())
    assert cases["provenance"]["checkpoint_sha256"] == "ab" * 32
    assert [r["epoch"] for r in cases["training_metrics"]["rows"]] == [1.0, 2.0]
    assert cases["cases"][1]["metrics"]["tumour_hd95"] is None  # NaN -> null in JSON


def test_html_is_self_contained_worst_first_with_na(report_dir):
    out, entries = report_dir
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    # bar chart, strip plot, burden scatter, 3 overlays, training curves
    assert html.count('<img src="data:image/png;base64,') == 7
    table = html[html.index('id="cases"') :]
    dice = {e.case_id: (e.result["liver_dice"] + e.result["tumour_dice"]) / 2 for e in entries}
    order = sorted(dice, key=dice.get)
    positions = [table.index(f">{case_id}</a>") for case_id in order]
    assert positions == sorted(positions)  # worst first
    assert table.index("broken") < positions[0]  # failed cases on top
    assert "n/a" in table  # undefined tumour HD95 of case "poor"
    assert "Empty-case policy" in html and "ab" * 32 in html


def test_build_report_rebuilds_identical_files(report_dir):
    out, _ = report_dir
    before = {name: (out / name).read_bytes() for name in REPORT_FILES}
    for name in ("summary.json", "summary.md", "report.html", "metrics_per_case.csv"):
        (out / name).unlink()
    build_report(out)
    for name in REPORT_FILES:
        assert (out / name).read_bytes() == before[name], name


def test_cli_report_rebuilds_summary(report_dir, capsys):
    out, _ = report_dir
    before = (out / "summary.json").read_bytes()
    (out / "summary.json").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "summary.json").read_bytes() == before
    (out / "summary.json").unlink()
    assert main(["report", str(out.parent)]) == 0  # a run folder holding the report
    assert (out / "summary.json").read_bytes() == before
    assert str(out / "report.html") in capsys.readouterr().out
    assert main(["report", str(out / "nothing")]) == 2


def test_rebuild_without_overlay_cache_reads_the_volumes(tmp_path):
    for case_id, shift in (("a", 0), ("b", 2)):
        pred, ref = _case(shift, True)
        save_nifti(pred, AFFINE, tmp_path / "pred" / f"{case_id}_seg.nii.gz")
        save_nifti(ref, AFFINE, tmp_path / "ref" / f"{case_id}.nii.gz")
    out = tmp_path / "report"
    evaluate_pairs(pair_cases(tmp_path / "pred", tmp_path / "ref"), out, progress=False)
    html = (out / "report.html").read_bytes()
    (out / "overlays.npz").unlink()
    build_report(out)
    assert (out / "report.html").read_bytes() == html
    assert (out / "overlays.npz").is_file()


def test_missing_training_metrics_is_noted(tmp_path):
    pred, ref = _case(0, True)
    entry = CaseEntry(evaluate_case(pred, ref, SPACING, case_id="a"), "p", "r")
    write_report(tmp_path, [entry], training_metrics_csv=tmp_path / "absent.csv")
    html = (tmp_path / "report.html").read_text()
    assert "absent.csv" in html and "not found" in html
    assert "(overlay unavailable" in html  # no overlay given and no volumes on disk


def test_provenance_hashes_files(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "train.yaml").write_text("a: 1\n")
    prov = collect_provenance(
        checkpoint=tmp_path / "model.pt", configs=[tmp_path / "train.yaml"], dataset="d"
    )
    assert prov["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert prov["configs"][0]["sha256"] == hashlib.sha256(b"a: 1\n").hexdigest()
    assert prov["packages"]["numpy"] == np.__version__ and prov["date"]


# --- overlay orientation ------------------------------------------------------------------


def _store(volume_ras: np.ndarray, affine_ras: np.ndarray, codes: str):
    """The same anatomy stored with other axis codes (flips and a permutation)."""
    transform = orientations.ornt_transform(
        orientations.axcodes2ornt("RAS"), orientations.axcodes2ornt(tuple(codes))
    )
    stored = orientations.apply_orientation(volume_ras, transform)
    affine = affine_ras @ orientations.inv_ornt_aff(transform, volume_ras.shape)
    return np.ascontiguousarray(stored), affine


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "ASR", "PIL"])
def test_overlay_is_radiological_whatever_the_storage(codes):
    # In RAS arrays a high first index is the patient's right, a high second anterior.
    ref = np.zeros((30, 20, 10), dtype=np.uint8)
    ref[2:28, 2:18, 2:8] = 1
    ref[22:27, 8:12, 4:6] = 2  # tumour on the patient's right
    pred = ref.copy()
    pred[14:16, 15:18, 4:6] = 2  # a predicted blob anterior, centre
    affine_ras = np.diag([0.7, 0.9, 2.5, 1.0])
    overlay = extract_overlay(*(_store(a, affine_ras, codes)[0] for a in (pred, ref)),
                              _store(ref, affine_ras, codes)[1])  # fmt: skip
    assert overlay.ref.shape == (20, 30)  # rows: anterior-posterior, columns: right-left
    assert overlay.aspect == pytest.approx(0.9 / 0.7)
    assert overlay.index in (4, 5) and overlay.n_slices == 10  # through the tumour
    rows, cols = np.nonzero(overlay.ref == 2)
    assert cols.max() < 15  # patient's right on the image left
    rows, cols = np.nonzero(overlay.pred == 2)
    pred_rows = set(rows) - set(np.nonzero(overlay.ref == 2)[0])
    assert max(pred_rows) < 10  # anterior at the top
    ct = np.arange(ref.size, dtype=np.int16).reshape(ref.shape)
    stored_ct, affine = _store(ct, affine_ras, codes)
    shown = extract_overlay(_store(pred, affine_ras, codes)[0], _store(ref, affine_ras, codes)[0],
                            affine, stored_ct)  # fmt: skip
    # the CT pixel at display (row 0, column 0) is the most anterior, most right voxel
    assert shown.ct[0, 0] == ct[29, 19, shown.index]
