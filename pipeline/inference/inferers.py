"""Flip test-time augmentation around any MONAI inferer.

MONAI's ``TestTimeAugmentation`` samples random transforms to estimate uncertainty; the
deterministic mirror ensemble that nnU-Net popularised (average the softmax over the
input and its flips) is not in MONAI, so it is written here, as an ``Inferer``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import torch
from monai.inferers import Inferer

from pipeline.nets.ensemble import ProbabilityEnsemble

logger = logging.getLogger(__name__)


class FlipTTAInferer(Inferer):
    """Average softmax probabilities over the input and its mirror images.

    Args:
        inferer: the inferer that runs the network (e.g. SlidingWindowInferer).
        spatial_axes: spatial axes (0, 1, 2 for X, Y, Z) to mirror; every non-empty
            combination is used, so three axes give eight passes. The bundle passes the
            axes the model was mirrored along in training (none by default: then TTA runs
            once and says why).
        enabled: False runs the wrapped inferer once (one config switch for TTA).

    Returns (when called): probabilities (softmax over channels), not logits.
    """

    def __init__(
        self, inferer: Inferer, spatial_axes: Sequence[int] = (0, 1, 2), enabled: bool = True
    ) -> None:
        super().__init__()
        self.inferer = inferer
        axes = tuple(int(a) for a in spatial_axes)
        self.flips: list[tuple[int, ...]] = [()]
        if enabled and not axes:
            logger.warning(
                "TTA is on, but the model was trained without mirroring: mirrored scans "
                'would be new to it, so it runs once (--tta_axes "[0, 1, 2]" forces TTA)'
            )
        if enabled:
            self.flips += [c for n in range(1, len(axes) + 1) for c in combinations(axes, n)]

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Run ``network`` on ``inputs`` (B, C, X, Y, Z) and its flips; mean softmax.

        An ensemble's members each run the whole inference, and their probabilities are
        averaged (not their per-window outputs, which overlap blending would mix).
        """
        if isinstance(network, ProbabilityEnsemble):
            runs = [self(inputs, member, *args, **kwargs) for member in network.members]
            return torch.stack(runs).mean(0)
        total = None
        for axes in self.flips:
            dims = [a + 2 for a in axes]  # skip batch and channel dimensions
            x = torch.flip(inputs, dims) if dims else inputs
            probabilities = torch.softmax(self.inferer(x, network, *args, **kwargs).float(), 1)
            probabilities = torch.flip(probabilities, dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
        return total / len(self.flips)
