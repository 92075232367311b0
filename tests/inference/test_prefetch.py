"""A folder run reads the next scan while segmenting the current one, with the same results."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from oracle_predictor import block_ct, oracle_predictor, save_tiny_checkpoint

from pipeline.inference.folder_run import FolderRun
from pipeline.io import save_nifti


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return oracle_predictor(save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt"))


def _folder(root: Path) -> Path:
    folder = root / "scans"
    image, _ = block_ct()
    for case in range(4):
        save_nifti(image, np.diag([1.0 + 0.1 * case, 1.0, 2.0, 1.0]), folder / f"s{case}.nii.gz")
    (folder / "s2_bad.nii.gz").write_bytes(b"not a nifti file")  # fails in the reader thread
    return folder


class _Recorder:
    """Wraps the predictor's load and predict and records which thread did what, when."""

    def __init__(self, predictor, monkeypatch):
        self.events: list[tuple[str, str, str, float]] = []
        load, predict = predictor.load, predictor.predict
        lock = threading.Lock()

        def note(kind, scan):
            with lock:
                self.events.append((kind, scan.case, threading.current_thread().name, time.time()))

        def recorded_load(scan):
            note("load start", scan)
            return load(scan)

        def recorded_predict(scan, loaded=None):
            note("predict start", scan)
            time.sleep(0.3)  # a network pass long enough for the next read to overlap
            result = predict(scan, loaded)
            note("predict end", scan)
            return result

        monkeypatch.setattr(predictor, "load", recorded_load)
        monkeypatch.setattr(predictor, "predict", recorded_predict)

    def loads(self) -> list[str]:
        return [case for kind, case, *_ in self.events if kind == "load start"]


def test_prefetched_run_equals_the_plain_one_and_reads_ahead(tmp_path, predictor, monkeypatch):
    folder = _folder(tmp_path)
    plain = FolderRun(predictor, folder, tmp_path / "plain", progress=False, prefetch=False).run()
    recorder = _Recorder(predictor, monkeypatch)
    ahead = FolderRun(predictor, folder, tmp_path / "ahead", progress=False, prefetch=True).run()

    # The same cases done and failed, with the same reason, and the same masks.
    assert ahead.done == plain.done == ["s0", "s1", "s2", "s3"]
    assert [f["case"] for f in ahead.failed] == ["s2_bad"]
    assert "s2_bad.nii.gz" in ahead.failed[0]["error"]
    for case in ahead.done:
        a = nib.load(tmp_path / "ahead" / f"{case}_seg.nii.gz")
        b = nib.load(tmp_path / "plain" / f"{case}_seg.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        assert np.asarray(a.dataobj).any()
    # Every scan read once, in the reader thread, and s1's read began before s0's
    # network pass ended.
    assert recorder.loads() == ["s0", "s1", "s2", "s2_bad", "s3"]
    assert {t for kind, _, t, _ in recorder.events if kind == "load start"} == {"scan-reader_0"}
    when = {(kind, case): at for kind, case, _, at in recorder.events}
    assert when[("load start", "s1")] < when[("predict end", "s0")]
    timings = (tmp_path / "ahead" / "timings.csv").read_text().splitlines()
    assert "load_wait" in timings[0].split(",")


def test_a_rerun_reads_no_finished_scan(tmp_path, predictor, monkeypatch):
    folder = _folder(tmp_path)
    FolderRun(predictor, folder, tmp_path / "out", progress=False).run()
    (tmp_path / "out" / "s1.json").unlink()  # one case to redo
    recorder = _Recorder(predictor, monkeypatch)
    again = FolderRun(predictor, folder, tmp_path / "out", progress=False).run()
    assert again.done == ["s1"]
    assert sorted(again.skipped) == ["s0", "s2", "s3"]
    assert recorder.loads() == ["s1", "s2_bad"]  # the bad scan is tried again, once
