"""Windows that reach past a thin scan are filled with its edge voxels, not with 0."""

from __future__ import annotations

import pytest
import torch
from bundle_files import configs
from monai.bundle import ConfigParser


class WindowMean(torch.nn.Module):
    """Each window's mean, everywhere in the window: shows what the padding filled in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x).clone()


@pytest.mark.parametrize(
    "inferer_id",
    ["window_inferer", "locator#predictor#inferer", "validation_inferer"],
)
def test_a_scan_thinner_than_the_window_is_padded_by_its_edge(inferer_id):
    parser = ConfigParser()
    parser.read_config(configs("common.yaml", "train.yaml"))
    parser.update({"roi_size": [8, 8, 8], "locator#roi_size": [8, 8, 8], "device": "cpu"})
    inferer = parser.get_parsed_content(inferer_id)
    # A liver-bright slab of 4 slices under an 8-slice window (a 20-slice DICOM series
    # under the refiner's 48): zero padding would halve every window's mean to 0.2.
    thin = torch.full((1, 1, 8, 8, 4), 0.4)
    out = inferer(thin, WindowMean())
    assert out.shape == thin.shape
    torch.testing.assert_close(out, torch.full_like(thin, 0.4))
