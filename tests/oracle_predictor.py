"""A configured inference predictor whose network has a known answer, for output tests.

The bundle's own ``predictor`` (common.yaml + inference.yaml, tiny geometry) with its
network replaced by :class:`IntensityOracle`: every step around the network (loading,
orientation, resampling, inversion, writing) is the real one, and the expected mask is
known from the image alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from bundle_files import configs
from monai.bundle import ConfigParser

from pipeline.nets.networks import build_network

INFERENCE = configs("common.yaml", "inference.yaml")
TINY = {
    "channels": [4, 8, 16],
    "num_res_units": 1,
    "pixdim": [4.0, 4.0, 4.0],
    "roi_size": [16, 16, 16],
    "sw_batch_size": 4,
    "progress": False,
}


def block_ct(shape=(40, 36, 12)) -> tuple[np.ndarray, np.ndarray]:
    """Air around a soft-tissue body (0 HU) holding an off-centre bright block (300 HU).

    Returns the int16 image and the block's mask: the oracle's liver, exactly, when the
    network works on the scan's own voxel size.
    """
    image = np.full(shape, -1000, dtype=np.int16)
    image[4:-4, 5:-3, 1:-1] = 0
    block = np.zeros(shape, dtype=bool)
    block[8:20, 10:30, 3:8] = True  # asymmetric on every axis: a wrong flip shows
    image[block] = 300
    return image, block


class IntensityOracle(torch.nn.Module):
    """Liver wherever the windowed intensity exceeds 0.5 (HU 150): a known answer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        liver = 40.0 * (x - 0.5)
        return torch.cat([torch.zeros_like(x), liver, torch.full_like(x, -100.0)], dim=1)


def inference_parser(**overrides: Any) -> ConfigParser:
    """common.yaml + inference.yaml with the tiny geometry and ``overrides``."""
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({**TINY, **overrides})
    return parser


def save_tiny_checkpoint(path: Path) -> Path:
    """Weights of the tiny network (seeded), so the configured predictor can be built."""
    torch.manual_seed(0)
    net = build_network(
        "unet",
        channels=TINY["channels"],
        num_res_units=1,
        norm="instance",
        roi_size=TINY["roi_size"],
        spacing=TINY["pixdim"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def oracle_predictor(ckpt: Path, **overrides: Any):
    """The configured predictor with :class:`IntensityOracle` as its network."""
    predictor = inference_parser(ckpt=str(ckpt), **overrides).get_parsed_content("predictor")
    predictor.network = IntensityOracle()
    return predictor
