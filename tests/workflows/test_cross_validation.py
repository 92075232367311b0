"""Cross-validation on tiny synthetic data: three fold models, an out-of-fold report on
every pool case once, and the fold ensemble against each fold on the test split."""

from __future__ import annotations

import json

import pytest
from bundle_files import TRAIN_QUICK

from pipeline.workflows.cross_validation import main


@pytest.mark.slow
def test_three_folds_give_three_models_an_oof_report_and_an_ensemble(tmp_path):
    out = tmp_path / "cv"
    args = ["--out", str(out), "--num_folds", "3", "--config_file", json.dumps(TRAIN_QUICK)]
    args += ["--set", f"synthetic_dir={tmp_path / 'data'}", "epochs=1"]
    assert main(args) == 0
    summary = json.loads((out / "cross_validation.json").read_text())
    models = [out / f"fold_{k}" / "models" / "model.pt" for k in range(3)]
    assert all(m.is_file() for m in models)
    assert [f["checkpoint"] for f in summary["folds"]] == [str(m) for m in models]
    # quick.yaml's 4 synthetic cases: 1 held out for test, 3 in the pool, one per fold.
    validation = [case for fold in summary["folds"] for case in fold["validation_cases"]]
    assert len(validation) == len(set(validation)) == 3
    oof = json.loads((out / "oof" / "report" / "summary.json").read_text())
    assert oof["n_cases"] == 3
    for name in ("liver", "tumour"):
        assert 0.0 <= summary["out_of_fold"][f"{name}_dice_per_case"] <= 1.0
    assert summary["test_cases"] == 1
    ensemble = json.loads((out / "test" / "ensemble" / "predictions" / "run.json").read_text())
    assert ensemble["checkpoint"] == [str(m) for m in models]
    assert all("test" in fold for fold in summary["folds"])
    assert "ensemble of the folds on test" in (out / "cross_validation.md").read_text()
