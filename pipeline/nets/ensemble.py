"""Several trained networks as one model: their class probabilities averaged (fold ensembles).

nnU-Net and Auto3DSeg ensemble the K models of a cross-validation by averaging their
softmax probabilities before the argmax. Each member runs the whole sliding window on its
own (``pipeline.inference.inferers.FlipTTAInferer`` unpacks the ensemble), so the
ensemble's probabilities are exactly the mean of what each model alone gives; calling
the module directly (one window) gives the log of the mean probabilities, so a softmax
after it, as after any network's logits, returns that mean.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch

from pipeline.checkpoints import load_network_weights


class ProbabilityEnsemble(torch.nn.Module):
    """Networks whose softmax probabilities are averaged.

    Args:
        networks: the members, same input and output channels.
    """

    def __init__(self, networks: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if len(networks) < 2:
            raise ValueError(f"an ensemble needs at least 2 networks, got {len(networks)}")
        self.members = torch.nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the mean softmax over the members (a softmax of it gives the mean)."""
        mean = torch.stack([torch.softmax(net(x).float(), dim=1) for net in self.members]).mean(0)
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))


def load_trained(
    network: torch.nn.Module,
    ckpt: str | os.PathLike | Sequence[str | os.PathLike],
    device: str | torch.device = "cpu",
    expected: dict[str, Any] | None = None,
    used_as: str = "",
) -> torch.nn.Module:
    """One checkpoint's network, or the ensemble of several (``--ckpt "[a.pt, b.pt]"``).

    Each checkpoint is checked against ``expected`` and loaded into its own copy of
    ``network`` (see :func:`pipeline.checkpoints.load_network_weights`).
    """
    paths = [ckpt] if isinstance(ckpt, (str, os.PathLike)) else list(ckpt)
    if not paths:
        raise ValueError("no checkpoint given: pass --ckpt PATH (or a list of paths)")
    if len(paths) == 1:
        return load_network_weights(network, paths[0], device, expected, used_as)
    members = [
        load_network_weights(copy.deepcopy(network), path, device, expected, used_as)
        for path in paths
    ]
    return ProbabilityEnsemble(members).to(device).eval()
