"""Channels-last memory format for training 3D networks on the CPU.

oneDNN, which runs PyTorch's CPU convolutions, computes 3D convolutions and above all
their backward pass faster on channels-last tensors (``torch.channels_last_3d``: channels
fastest, the layout its kernels use inside) than on PyTorch's default layout, which it
otherwise converts to and from at every convolution. Measured on this project's 2-core
machine, a training step of the demo refiner's UNet (2 x 80 x 80 x 48): forward +
backward + AdamW 0.315 -> 0.231 s in bfloat16 and 0.468 -> 0.357 s in float32. Both the
weights and the input must be channels-last: with the weights alone the step took
0.314 s. The values computed are the same convolutions (up to summation order).

Applied in training only (train.yaml ``train_channels_last``, on the CPU by default): on
CUDA the effect depends on the GPU and cuDNN version and was not measured here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pipeline.nets.switched_inferer import SwitchedInferer


def channels_last_3d(network: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """``network`` with its 5D weights (3D convolutions) in channels-last order, in place.

    Other parameters (2D networks, norms, biases) are left as they are; ``enabled``
    False returns the network unchanged.
    """
    if not enabled:
        return network
    for parameter in network.parameters():
        if parameter.dim() == 5:
            parameter.data = parameter.data.to(memory_format=torch.channels_last_3d)
    return network


class ChannelsLastInferer(SwitchedInferer):
    """Run another inferer with every 5D input of the network made channels-last.

    The network, not the inferer's input, gets the conversion: a sliding-window inferer
    cuts windows from its volume and stacks them into a new (default-layout) batch.

    Args:
        inferer: the inferer that runs the network.
        enabled: the bundle's ``train_channels_last`` switch; False passes inputs as they
            are, as does a 2D (4D) input.
    """

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """``inferer(inputs, network)``, each network input made channels-last if enabled."""
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)

        def channels_last_network(batch: torch.Tensor, *more: Any, **options: Any) -> Any:
            if batch.dim() == 5:
                # ``to``, not ``contiguous``: with one channel both layouts count as
                # contiguous, and ``contiguous`` would keep the default strides.
                batch = batch.to(memory_format=torch.channels_last_3d)
            return network(batch, *more, **options)

        return self.inferer(inputs, channels_last_network, *args, **kwargs)
