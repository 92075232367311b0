"""One factory from a network name to a MONAI network, so configs switch by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import UNet


def build_network(
    name: str = "unet",
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 3,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] | None = None,
    num_res_units: int = 2,
    norm: str = "batch",
    dropout: float = 0.0,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build a segmentation network by name.

    Args:
        name: "unet" (MONAI UNet with residual units, the default) or "resunet" (the same
            network; the name used in the literature for residual units).
        spatial_dims: 3 for volumes, 2 for slices.
        in_channels: input channels (1 for one HU window).
        out_channels: classes (3: background, liver, tumour).
        channels: feature maps per level.
        strides: down-sampling per level (default 2 between every two levels).
        num_res_units: residual units per block; 0 gives a plain U-Net.
        norm: normalisation layer ("batch" or "instance").
        dropout: dropout probability.
        **kwargs: passed to the network constructor.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    key = name.lower()
    if key in ("unet", "resunet"):
        return UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=tuple(strides) if strides is not None else (2,) * (len(channels) - 1),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
            **kwargs,
        )
    raise ValueError(f"unknown network name {name!r}; known: ['unet', 'resunet']")
