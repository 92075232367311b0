"""A folder run drops nothing unsaid, never reads its own output, cleans up after a killed
run, and stops with one clear line on a full disk."""

from __future__ import annotations

import errno
import json
import os
import time

import numpy as np
import pytest
from oracle_predictor import block_ct, oracle_predictor, save_tiny_checkpoint

import pipeline.inference.outputs as outputs
from pipeline.data.synth.dataset import write_synthetic_dataset
from pipeline.inference.folder_run import FolderRun
from pipeline.io import save_nifti

AFFINE = np.diag([0.8, 0.9, 2.5, 1.0])


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return oracle_predictor(save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt"))


def _run_json(out):
    return json.loads((out / "run.json").read_text())


def test_output_folder_inside_the_input_is_never_read_back(tmp_path, predictor):
    folder = tmp_path / "scans"
    save_nifti(block_ct()[0], AFFINE, folder / "a.nii.gz")
    out = folder / "results"  # inside the input folder
    first = FolderRun(predictor, folder, out, progress=False).run()
    again = FolderRun(predictor, folder, out, progress=False).run()
    assert first.done == ["a"] and again.skipped == ["a"] and not again.failed
    left = {x["input"]: x["reason"] for x in _run_json(out)["left_out"]}
    assert left == {str(out): "the run's output folder"}


def test_dataset_folder_segments_every_scan_and_lists_its_labels(tmp_path, predictor):
    write_synthetic_dataset(
        tmp_path / "lits", n_cases=2, seed=3, shape=(24, 24, 16), layout="lits", progress=False
    )
    save_nifti(block_ct()[0], AFFINE, tmp_path / "lits" / "extra_scan.nii.gz")
    (tmp_path / "lits" / "notes.txt").write_text("not a scan")
    out = tmp_path / "out"
    summary = FolderRun(predictor, tmp_path / "lits", out, progress=False).run()
    # The scan that is not LiTS-named is segmented too (it was dropped before, exit 0).
    assert summary.done == ["extra_scan", "volume-0", "volume-1"] and not summary.failed
    left = {os.path.basename(x["input"]): x["reason"] for x in _run_json(out)["left_out"]}
    assert left["segmentation-0.nii.gz"].startswith("label map of volume-0.nii.gz")
    assert left["segmentation-1.nii.gz"].startswith("label map of volume-1.nii.gz")
    assert left["notes.txt"].startswith("not an image file")


def test_a_killed_runs_temporary_files_are_removed(tmp_path, predictor):
    folder = tmp_path / "in"
    save_nifti(block_ct()[0], AFFINE, folder / "a.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a_seg.nii.gz.x1y2.tmp.nii.gz"  # as atomic_path names them
    stale.write_bytes(b"\x1f\x8b half a mask")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    summary = FolderRun(predictor, folder, out, progress=False).run()
    assert summary.done == ["a"] and not stale.exists()
    assert _run_json(out)["stale_temporary_files_removed"] == [stale.name]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_a_full_disk_stops_the_run_with_one_line_naming_enospc(tmp_path, predictor, monkeypatch):
    folder = tmp_path / "in"
    for name in ("a", "b", "c"):
        save_nifti(block_ct()[0], AFFINE, folder / f"{name}.nii.gz")
    out = tmp_path / "out"
    real_save = outputs.save_label_map_like

    def disk_fills_up(labels, reference, path):
        if "b_seg" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(labels, reference, path)

    monkeypatch.setattr(outputs, "save_label_map_like", disk_fills_up)
    run = FolderRun(predictor, folder, out, progress=False)
    with pytest.raises(SystemExit) as stopped:
        run()
    message = str(stopped.value)
    assert "\n" not in message and "no space left on device (ENOSPC)" in message
    assert "b_seg.nii.gz" in message and "1 segmented before it" in message
    record = _run_json(out)
    assert record["done"] == ["a"] and [f["case"] for f in record["failed"]] == ["b"]
    assert record["not_run"] == ["c"] and "No space left" in record["disk_full"]
    assert (out / "quantification.csv").read_text().count("\n") == 2  # header + a
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_a_rerun_redoes_cases_of_another_checkpoint_or_other_settings(tmp_path):
    folder = tmp_path / "in"
    for name in ("a", "b"):
        save_nifti(block_ct()[0], AFFINE, folder / f"{name}.nii.gz")
    out = tmp_path / "out"
    first_ckpt = save_tiny_checkpoint(tmp_path / "first.pt")
    predictor = oracle_predictor(first_ckpt)

    def run(ckpt, settings):
        return FolderRun(
            predictor, folder, out, checkpoint=ckpt, settings=settings, progress=False
        ).run()

    assert run(first_ckpt, {"tta": False}).done == ["a", "b"]
    same = run(first_ckpt, {"tta": False})
    assert same.skipped == ["a", "b"] and same.redone == []
    other_settings = run(first_ckpt, {"tta": True})
    assert other_settings.done == ["a", "b"]
    assert {r["reason"] for r in other_settings.redone} == {"the settings changed"}
    # Other weights (the oracle ignores them, but the file's hash is what is recorded).
    second_ckpt = tmp_path / "second.pt"
    second_ckpt.write_bytes(first_ckpt.read_bytes() + b"\0")
    other_model = run(second_ckpt, {"tta": True})
    assert {r["reason"] for r in other_model.redone} == {"the checkpoint changed (SHA-256)"}
    record = json.loads((out / "a.json").read_text())
    assert record["checkpoint"] == str(second_ckpt)
    assert _run_json(out)["redone"] == other_model.redone
