"""Inference keeps the tumour probability beside the mask when asked (for ROC-AUC)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from oracle_predictor import block_ct, inference_parser, save_tiny_checkpoint

from pipeline.inference.folder_run import FolderRun
from pipeline.io import save_nifti


class TumourOracle(torch.nn.Module):
    """Body liver, bright block tumour: scores from the windowed intensity (0.2 / 0.8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 40.0 * (x - 0.1), 100.0 * (x - 0.5)], dim=1)


def test_folder_run_writes_the_tumour_probability_on_the_scans_grid(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt")
    predictor = inference_parser(ckpt=str(ckpt), save_probabilities=True).get_parsed_content(
        "predictor"
    )
    predictor.network = TumourOracle()
    image, block = block_ct()
    affine = np.diag([-4.0, -4.0, 4.0, 1.0])  # LPS on the network's 4 mm: one voxel each
    save_nifti(image, affine, tmp_path / "in" / "ct.nii.gz")
    summary = FolderRun(
        predictor, tmp_path / "in", tmp_path / "out", progress=False, save_probabilities=True
    ).run()
    assert summary.done == ["ct"]
    stored = nib.load(tmp_path / "out" / "ct_tumour_prob.nii.gz")
    assert stored.get_data_dtype() == np.uint8
    np.testing.assert_allclose(stored.affine, affine)
    probability = stored.get_fdata()
    mask = np.asarray(nib.load(tmp_path / "out" / "ct_seg.nii.gz").dataobj)
    # softmax(0, 28, 30) in the block, softmax(0, 4, -30) in the body.
    expected_in_block = float(torch.softmax(torch.tensor([0.0, 28.0, 30.0]), 0)[2])
    np.testing.assert_allclose(probability[block], expected_in_block, atol=1 / 255)
    assert probability[~block].max() < 0.01
    np.testing.assert_array_equal(mask == 2, block)
    np.testing.assert_array_equal(probability > 0.5, mask == 2)


def test_a_rerun_asking_for_probabilities_redoes_cases_that_have_none(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt")
    image, _ = block_ct()
    save_nifti(image, np.diag([-4.0, -4.0, 4.0, 1.0]), tmp_path / "in" / "ct.nii.gz")
    for keep, expected_done in ((False, ["ct"]), (True, ["ct"]), (True, [])):
        predictor = inference_parser(ckpt=str(ckpt), save_probabilities=keep).get_parsed_content(
            "predictor"
        )
        predictor.network = TumourOracle()
        summary = FolderRun(
            predictor, tmp_path / "in", tmp_path / "out", progress=False, save_probabilities=keep
        ).run()
        assert summary.done == expected_done
        assert (tmp_path / "out" / "ct_tumour_prob.nii.gz").exists() == keep
