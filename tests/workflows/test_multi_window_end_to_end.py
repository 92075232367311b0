"""A multi-window model (multi_window.yaml) is trained, applied by run inference and scored
by run evaluating, each with the overlay stacked, on tiny synthetic data.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from pipeline.transforms.intensity import MultiWindowd

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "liver_tumor" / "configs"
TRAIN = [str(CONFIGS / n) for n in ("train.yaml", "quick.yaml", "multi_window.yaml")]
INFERENCE = [str(CONFIGS / n) for n in ("inference.yaml", "quick.yaml", "multi_window.yaml")]


def _workflow(files: list[str], run_id: str, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=files,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        run_id=run_id,
        **overrides,
    )
    workflow.initialize()
    return workflow


@pytest.mark.slow
def test_multi_window_model_is_trained_applied_and_scored(tmp_path):
    run = {
        "output_dir": str(tmp_path / "run"),
        "ckpt_dir": str(tmp_path / "models"),
        "synthetic_dir": str(tmp_path / "synthetic"),
        "epochs": 1,
    }
    _workflow(TRAIN, "training", **run).run()
    ckpt = tmp_path / "models" / "model.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    first_conv = next(v for k, v in state.items() if k.endswith("weight") and v.ndim == 5)
    assert first_conv.shape[1] == 2, "the model was trained on two HU windows"

    scans = tmp_path / "synthetic"
    inference = _workflow(
        INFERENCE,
        "inference",
        ckpt=str(ckpt),
        input_dir=str(scans),
        output_dir=str(tmp_path / "masks"),
        progress=False,
    )
    assert isinstance(inference.parser.get_parsed_content("intensity"), MultiWindowd)
    inference.run()
    run_json = json.loads((tmp_path / "masks" / "run.json").read_text())
    assert run_json["failed"] == [] and len(run_json["done"]) >= 1
    mask_file = next((tmp_path / "masks").glob("*_seg.nii.gz"))
    case = mask_file.name.removesuffix("_seg.nii.gz")
    image = next(scans.rglob(f"{case}.nii.gz"))
    mask = nib.load(mask_file)
    assert mask.shape == nib.load(image).shape
    np.testing.assert_allclose(mask.affine, nib.load(image).affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}

    evaluating = _workflow(
        [*TRAIN, str(CONFIGS / "evaluate.yaml")],
        "evaluating",
        **run,
        eval_dir=str(tmp_path / "eval"),
    )
    predictor = evaluating.parser.get_parsed_content("predictor_settings")
    assert isinstance(predictor["intensity"], MultiWindowd)
    evaluating.run()
    summary = json.loads((tmp_path / "eval" / "report" / "summary.json").read_text())
    assert summary["n_cases"] >= 1 and summary["n_failed"] == 0
    assert 0.0 <= summary["liver"]["dice"]["mean"] <= 1.0
