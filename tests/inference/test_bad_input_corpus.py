"""The bad-input corpus (tests/bad_inputs.py): through one folder run, every input gets its
named failure, QC warning or left-out reason, the good scans finish, nothing half-written
stays; the evaluation and training corpora get their named failures; and a run killed with
SIGKILL and run again ends as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bad_inputs import write_corpus, write_evaluation_corpus, write_training_corpus
from bundle_files import ROOT
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from oracle_predictor import oracle_predictor, save_tiny_checkpoint

from pipeline.bundle import root_cause
from pipeline.data.checks import CheckLabelValuesd, TrainingDataError, check_training_cases
from pipeline.data.synth.dataset import write_synthetic_dataset
from pipeline.evaluation.scoring import evaluate_pairs, pair_cases
from pipeline.inference.folder_run import FolderRun


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    expected = write_corpus(folder)
    ckpt = save_tiny_checkpoint(folder.parent / "model.pt")
    out = folder / "results"  # inside the input folder: must never be read back
    summary = FolderRun(oracle_predictor(ckpt), folder, out, progress=False).run()
    return expected, summary, out


def test_the_corpus_holds_enough_kinds_of_bad_input(corpus_run):
    expected, _, _ = corpus_run
    bad = [name for name, e in expected.items() if e.outcome != "done"]
    assert len(bad) >= 28
    assert {e.outcome for e in expected.values()} == {"done", "fail", "warn", "left_out"}


def test_each_failure_is_named_and_the_rest_finish(corpus_run):
    expected, summary, out = corpus_run
    failures = {f["case"]: f for f in summary.failed}
    should_fail = {name: e.expect for name, e in expected.items() if e.outcome == "fail"}
    assert set(failures) == set(should_fail)
    for name, expect in should_fail.items():
        assert expect in failures[name]["error"], (name, failures[name]["error"])
        assert failures[name]["input"] in failures[name]["error"]  # the file is named
    finished = {name for name, e in expected.items() if e.outcome in ("done", "warn")}
    assert set(summary.done) == finished
    for name in finished:
        mask = nib.load(out / f"{name}_seg.nii.gz")
        assert mask.get_data_dtype() == np.uint8
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*"))


def test_each_warning_is_a_qc_verdict_with_its_reason(corpus_run):
    expected, _, out = corpus_run
    for name, e in expected.items():
        if e.outcome != "warn":
            continue
        qc = json.loads((out / f"{name}.json").read_text())["qc"]
        assert qc["verdict"] == "warn" and any(e.expect in r for r in qc["reasons"]), (name, qc)


def test_nothing_is_dropped_unsaid(corpus_run):
    expected, summary, out = corpus_run
    left = {x.path.name: x.reason for x in summary.left_out}
    for name, e in expected.items():
        if e.outcome == "left_out":
            assert e.expect in left[name], (name, left.get(name))
    assert "results" not in set(summary.done) | {f["case"] for f in summary.failed}
    run = json.loads((out / "run.json").read_text())
    assert len(run["left_out"]) == len(left)


def test_the_evaluation_corpus_names_each_bad_prediction(tmp_path):
    expected = write_evaluation_corpus(tmp_path)
    result = evaluate_pairs(
        pair_cases(tmp_path / "pred", tmp_path / "ref"), tmp_path / "report",
        progress=False, viewers=False,
    )  # fmt: skip
    assert [c.case_id for c in result.cases] == ["good"]
    failed = {f.case_id: f.reason for f in result.failures}
    assert set(failed) == {name for name, e in expected.items() if e.outcome == "fail"}
    for name, reason in failed.items():
        assert expected[name].expect in reason, (name, reason)
    assert not [p for p in (tmp_path / "report").rglob("*") if ".tmp" in p.name]


def test_the_training_corpus_stops_or_leaves_out_each_bad_case(tmp_path):

    datalist, expected = write_training_corpus(tmp_path)
    split = json.loads(datalist.read_text())
    with pytest.raises(TrainingDataError, match="2 training case"):
        check_training_cases(split)
    kept, bad = check_training_cases(split, skip_bad_cases=True)
    by_name = {Path(b.image).name.removesuffix(".nii.gz"): b.problem for b in bad}
    grid_bad = {"shifted_label", "cropped_label"}
    assert set(by_name) == grid_bad
    for name in grid_bad:
        assert expected[name].expect in by_name[name]
    # Label values are checked as the labels are loaded (the training's own transforms).
    load = Compose(
        [
            LoadImaged(keys="label", image_only=True),
            EnsureChannelFirstd(keys="label"),
            CheckLabelValuesd(keys="label"),
        ]
    )
    refused = []
    for record in kept["training"] + kept["validation"]:
        try:
            load({"label": record["label"]})
        except Exception as err:  # MONAI wraps it; bundle runs print the root cause last
            refused.append(str(root_cause(err)))
    assert len(refused) == 1
    assert f"organ_values_label.nii.gz: {expected['organ_values'].expect}" in refused[0]


# ---- a kill during a run, then a re-run ------------------------------------------------------
_RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from oracle_predictor import oracle_predictor
from pipeline.inference.folder_run import FolderRun
FolderRun(oracle_predictor({ckpt!r}), {data!r}, {out!r}, progress=False).run()
"""


def _run(ckpt: Path, data: Path, out: Path) -> subprocess.Popen:
    code = _RUNNER.format(tests=str(ROOT / "tests"), ckpt=str(ckpt), data=str(data), out=str(out))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def _outputs(out: Path) -> dict[str, object]:
    """Masks by voxels, case JSONs without their timings, the tables as text."""
    found: dict[str, object] = {}
    for path in sorted(out.iterdir()):
        if path.name.endswith("_seg.nii.gz"):
            found[path.name] = np.asarray(nib.load(path).dataobj).tobytes()
        elif path.suffix == ".json" and path.name != "run.json":
            record = json.loads(path.read_text())
            found[path.name] = {k: record[k] for k in ("quantification", "qc", "shape", "affine")}
        elif path.name == "quantification.csv":
            found[path.name] = path.read_text()
    return found


def test_a_killed_run_resumes_to_the_same_outputs(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, n_cases=6, seed=5, shape=(64, 64, 48), layout="lits",
                            progress=False)  # fmt: skip
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _run(ckpt, data, reference).wait(timeout=300) == 0

    process = _run(ckpt, data, killed)
    deadline = time.monotonic() + 240
    while len(list(killed.glob("*.json"))) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # no clean-up handler runs
    process.wait()
    done_before = len(list(killed.glob("volume-*.json")))
    assert 0 < done_before < 6, "the kill came too late to test a resume"

    assert _run(ckpt, data, killed).wait(timeout=300) == 0
    run = json.loads((killed / "run.json").read_text())
    assert len(run["skipped"]) == done_before and len(run["done"]) == 6 - done_before
    assert _outputs(killed) == _outputs(reference)
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")]
