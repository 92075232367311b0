"""Every input- or network-changing overlay has a whole path: a multi-window model
(multi_window.yaml) and a 2D slice model (slice2d.yaml) are each trained, applied to a
folder by run inference, scored by run evaluating and swept, with the overlay stacked, on
tiny synthetic data.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_files import CONFIGS, bundle_workflow, configs
from monai.bundle import ConfigWorkflow
from monai.inferers import SliceInferer

from pipeline.transforms.intensity import MultiWindowd
from pipeline.workflows.sweep import main as sweep_main


def _first_conv(state: dict[str, torch.Tensor]) -> torch.Tensor:
    state = state.get("model", state)  # model.pt: {"model": weights, "trained_for": ...}
    return next(v for k, v in state.items() if k.endswith("weight") and v.ndim >= 4)


def _check_multi_window(first_conv: torch.Tensor, workflow: ConfigWorkflow) -> None:
    assert first_conv.shape[1] == 2 and first_conv.ndim == 5, "3D, on two HU windows"
    assert isinstance(workflow.parser.get_parsed_content("intensity"), MultiWindowd)


def _check_slice2d(first_conv: torch.Tensor, workflow: ConfigWorkflow) -> None:
    assert first_conv.ndim == 4 and first_conv.shape[1] == 1, "2D, on one HU window"
    inferer = workflow.parser.get_parsed_content("window_inferer")
    assert isinstance(inferer, SliceInferer) and inferer.spatial_dim == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overlay", "check"),
    [("multi_window.yaml", _check_multi_window), ("slice2d.yaml", _check_slice2d)],
)
def test_overlay_model_is_trained_applied_scored_and_swept(tmp_path, overlay, check):
    train = configs("common.yaml", "train.yaml", "quick.yaml", overlay)
    inference_files = configs("common.yaml", "inference.yaml", "quick.yaml", overlay)
    run = {
        "output_dir": str(tmp_path / "run"),
        "ckpt_dir": str(tmp_path / "models"),
        "synthetic_dir": str(tmp_path / "synthetic"),
        "epochs": 1,
    }
    bundle_workflow(train, "training", **run).run()
    ckpt = tmp_path / "models" / "model.pt"
    first_conv = _first_conv(torch.load(ckpt, map_location="cpu", weights_only=True))

    # Applied to a folder: common.yaml's ckpt follows quick.yaml's ckpt_dir, overridden here.
    scans = tmp_path / "synthetic"
    inference = bundle_workflow(
        inference_files,
        "inference",
        ckpt_dir=str(tmp_path / "models"),
        input_dir=str(scans),
        output_dir=str(tmp_path / "masks"),
        progress=False,
    )
    check(first_conv, inference)
    inference.run()
    run_json = json.loads((tmp_path / "masks" / "run.json").read_text())
    assert run_json["failed"] == [] and len(run_json["done"]) >= 1
    assert run_json["checkpoint"] == str(ckpt)
    mask_file = next((tmp_path / "masks").glob("*_seg.nii.gz"))
    case = mask_file.name.removesuffix("_seg.nii.gz")
    image = next(scans.rglob(f"{case}.nii.gz"))
    mask = nib.load(mask_file)
    assert mask.shape == nib.load(image).shape
    np.testing.assert_allclose(mask.affine, nib.load(image).affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}

    # Scored in the same process by the same predictor: the masks equal inference's.
    evaluating = bundle_workflow(
        [*train, str(CONFIGS / "evaluate.yaml")],
        "evaluating",
        **run,
        eval_dir=str(tmp_path / "eval"),
        progress=False,
    )
    check(first_conv, evaluating)
    evaluating.run()
    summary = json.loads((tmp_path / "eval" / "report" / "summary.json").read_text())
    assert summary["n_cases"] >= 1 and summary["n_failed"] == 0
    assert 0.0 <= summary["liver"]["dice"]["mean"] <= 1.0
    for scored in (tmp_path / "eval" / "predictions").glob("*_seg.nii.gz"):
        applied = nib.load(tmp_path / "masks" / scored.name)
        np.testing.assert_array_equal(
            np.asarray(nib.load(scored).dataobj), np.asarray(applied.dataobj)
        )

    # Swept: one point of the training configs with the overlay, scored by its predictor.
    out = tmp_path / "sweep"
    args = ["--out", str(out), "--config_file", str(train), "--grid", "learning_rate=0.003"]
    args += ["--set", f"synthetic_dir={tmp_path / 'synthetic'}", "epochs=1"]
    assert sweep_main(args) == 0
    (point,) = [p for p in out.iterdir() if p.is_dir()]
    result = json.loads((point / "result.json").read_text())
    assert result["status"] == "ok" and result["n_val_cases"] >= 1
    point_state = torch.load(point / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert _first_conv(point_state).shape == first_conv.shape
    val_case = json.loads(next((point / "val_pred").glob("*.json")).read_text())
    assert val_case["settings"]["in_channels"] == first_conv.shape[1]
