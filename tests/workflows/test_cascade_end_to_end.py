"""The cascade as a user runs it: the locator and the refiner are each trained by
``run training`` with their overlay, ``run inference`` with cascade.yaml runs both stages
on a folder, and ``run evaluating`` scores the cascade, on tiny synthetic data.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_files import CONFIGS, bundle_workflow, configs, error_messages

from pipeline.inference.cascade import CascadePredictor

# quick.yaml, stacked after cascade.yaml, makes both stages tiny: the locator at 12 mm,
# the refiner at 6 mm (twice as fine, as in real use); a 12 mm margin is 2 voxels.
MARGIN = {"liver_box_margin_mm": 12.0}


@pytest.mark.slow
def test_cascade_is_trained_stage_by_stage_applied_to_a_folder_and_scored(tmp_path):
    data = {"synthetic_dir": str(tmp_path / "synthetic"), "epochs": 1}
    bundle_workflow(
        configs("common.yaml", "train.yaml", "quick.yaml", "locator.yaml"),
        "training",
        output_dir=str(tmp_path / "locator"),
        ckpt_dir=str(tmp_path / "locator" / "models"),
        **data,
    ).run()
    locator_ckpt = tmp_path / "locator" / "models" / "model.pt"
    assert locator_ckpt.is_file()

    refiner_files = configs("common.yaml", "train.yaml", "cascade.yaml", "quick.yaml")
    trained = bundle_workflow(
        refiner_files,
        "training",
        output_dir=str(tmp_path / "refiner"),
        ckpt_dir=str(tmp_path / "refiner" / "models"),
        **data,
        **MARGIN,
    )
    # Training crops come from the reference liver's box: no crop holds more than the box.
    box = trained.parser.get_parsed_content("validate#preprocessing")
    record = trained.parser.get_parsed_content("datalist")["validation"][0]
    cropped = box(dict(record))
    label = np.asarray(cropped["label"][0])
    margin = int(np.ceil(12.0 / 6.0))
    for axis in range(3):  # the liver starts and ends `margin` voxels inside the crop
        profile = np.flatnonzero(label.any(axis=tuple(a for a in range(3) if a != axis)))
        assert profile[0] <= margin and label.shape[axis] - 1 - profile[-1] <= margin
        assert label.shape[axis] <= profile[-1] - profile[0] + 1 + 2 * margin
    assert "liver_box" not in cropped
    trained.run()
    refiner_ckpt = tmp_path / "refiner" / "models" / "model.pt"
    # The default refiner reads the image and its HU against the located liver.
    refiner_trained_for = torch.load(refiner_ckpt, weights_only=True)["trained_for"]
    assert refiner_trained_for["in_channels"] == 2
    assert refiner_trained_for["liver_contrast_hu"] == 100.0

    # Inference: both stages, the refiner's mask written back on each scan's grid.
    inference = _cascade_inference(tmp_path, "masks", refiner_ckpt, locator_ckpt)
    predictor = inference.parser.get_parsed_content("predictor")
    assert isinstance(predictor, CascadePredictor)
    # Candidates are probed in the refiner's window less the box margin on each side.
    names = ("roi_size", "pixdim", "liver_box_margin_mm")
    roi, pixdim, margin_mm = (inference.parser.get_parsed_content(k) for k in names)
    probe_mm = [r * p - 2 * margin_mm for r, p in zip(roi, pixdim, strict=True)]
    assert min(probe_mm) > 0
    np.testing.assert_allclose(predictor.candidate_probe_mm, probe_mm)
    inference.run()
    run_json = json.loads((tmp_path / "masks" / "run.json").read_text())
    assert run_json["failed"] == [] and len(run_json["done"]) == 4
    case = json.loads(next((tmp_path / "masks").glob("volume-*.json")).read_text())
    assert case["settings"]["cascade"]["locator_checkpoint"] == str(locator_ckpt)
    np.testing.assert_allclose(case["settings"]["cascade"]["candidate_probe_mm"], probe_mm)
    assert case["seconds"]["locate"] > 0
    mask_file = tmp_path / "masks" / f"{case['case']}_seg.nii.gz"
    image = tmp_path / "synthetic" / f"{case['case']}.nii.gz"
    assert nib.load(mask_file).shape == nib.load(image).shape
    np.testing.assert_allclose(nib.load(mask_file).affine, nib.load(image).affine, atol=1e-5)

    # Evaluation with the same stack scores the cascade (same masks as inference).
    evaluating = bundle_workflow(
        [*refiner_files, str(CONFIGS / "evaluate.yaml")],
        "evaluating",
        output_dir=str(tmp_path / "refiner"),
        ckpt_dir=str(tmp_path / "refiner" / "models"),
        eval_dir=str(tmp_path / "eval"),
        progress=False,
        **{"locator#ckpt": str(locator_ckpt)},
        **data,
        **MARGIN,
    )
    evaluating.run()
    summary = json.loads((tmp_path / "eval" / "report" / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["n_failed"] == 0
    (scored,) = (tmp_path / "eval" / "predictions").glob("*_seg.nii.gz")
    np.testing.assert_array_equal(
        np.asarray(nib.load(scored).dataobj),
        np.asarray(nib.load(tmp_path / "masks" / scored.name).dataobj),
    )

    # With stage 1's liver as the refiner's second input (cascade_prior.yaml): trained on
    # the reference's box, applied with the locator's, each stage with its own inputs.
    prior_files = [*refiner_files[:3], str(CONFIGS / "cascade_prior.yaml"), refiner_files[3]]
    bundle_workflow(
        prior_files,
        "training",
        output_dir=str(tmp_path / "prior"),
        ckpt_dir=str(tmp_path / "prior" / "models"),
        **data,
        **MARGIN,
    ).run()
    prior_ckpt = tmp_path / "prior" / "models" / "model.pt"
    # Image, liver contrast, stage 1's liver.
    assert torch.load(prior_ckpt, weights_only=True)["trained_for"]["in_channels"] == 3
    with_prior = _cascade_inference(
        tmp_path, "prior_masks", prior_ckpt, locator_ckpt, "cascade_prior.yaml"
    )
    with_prior.run()
    run_json = json.loads((tmp_path / "prior_masks" / "run.json").read_text())
    assert run_json["failed"] == [] and len(run_json["done"]) == 4

    # Each model records its stage; the pair swapped stops, naming both files.
    assert torch.load(locator_ckpt, weights_only=True)["trained_for"]["role"] == "locator"
    assert torch.load(refiner_ckpt, weights_only=True)["trained_for"]["role"] == "refiner"
    swapped = _cascade_inference(tmp_path, "swapped", locator_ckpt, refiner_ckpt)
    with pytest.raises(Exception) as err:
        swapped.parser.get_parsed_content("predictor")
    message = error_messages(err.value)
    # Whichever stage is built first reports; either way both files are named.
    as_locator = (
        f"{refiner_ckpt} (the cascade's locator; its refiner: {locator_ckpt})",
        "role: trained 'refiner', configured 'locator'",
        "pixdim: trained [6.0, 6.0, 6.0], configured [12.0, 12.0, 12.0]",
    )
    as_refiner = (
        f"{locator_ckpt} (the cascade's refiner; its locator: {refiner_ckpt})",
        "role: trained 'locator', configured 'refiner'",
        "pixdim: trained [12.0, 12.0, 12.0], configured [6.0, 6.0, 6.0]",
    )
    assert all(part in message for part in as_locator) or all(
        part in message for part in as_refiner
    ), message


def _cascade_inference(tmp_path, out: str, refiner_ckpt, locator_ckpt, *overlays: str):
    """``run inference`` of the tiny cascade on the synthetic folder, masks to ``out``."""
    return bundle_workflow(
        configs("common.yaml", "inference.yaml", "cascade.yaml", *overlays, "quick.yaml"),
        "inference",
        ckpt=str(refiner_ckpt),
        input_dir=str(tmp_path / "synthetic"),
        output_dir=str(tmp_path / out),
        progress=False,
        **{"locator#ckpt": str(locator_ckpt)},
        **MARGIN,
    )
