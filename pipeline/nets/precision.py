"""Mixed precision on the CPU: bfloat16 autocast where the processor computes it natively.

On CUDA, MONAI's engines and the predictor use float16 autocast (``amp``). MONAI's
``SupervisedTrainer`` and ``SupervisedEvaluator`` only autocast on CUDA, so the CPU path is
written here, as an ``Inferer`` wrapper: the network's forward pass runs under
``torch.autocast("cpu", dtype=torch.bfloat16)`` and its output comes back as float32, so
losses, metrics, softmax and stitching stay in float32. bfloat16 keeps float32's exponent
range, so training needs no gradient scaler.

Why: on a CPU with AVX512-BF16 or AMX, oneDNN's bfloat16 convolutions are much faster than
float32 ones (measured on this project's 2-core machine, AVX512-BF16: a training step of the
refiner's UNet, 2 x 80 x 80 x 48, 0.345 -> 0.217 s; sliding-window inference 0.20 -> 0.11 s
per 4 windows). Without native support bfloat16 is emulated and slower, so training's
default (train.yaml ``train_cpu_bf16``) is on only where :func:`native_cpu_bf16` says the
processor has it. Inference stays float32 unless asked (common.yaml ``cpu_bf16``): on a
real CT unlike the training phantoms, the demo's liver locator lost the liver in bfloat16
(Dice 0.20 against 0.78 in float32, same weights), where its scores were near a tie.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from monai.data import MetaTensor

from pipeline.nets.switched_inferer import SwitchedInferer


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def cpu_bf16_default(device: str | torch.device) -> bool:
    """Training's default (train.yaml ``train_cpu_bf16``): on for a CPU with native bfloat16."""
    return torch.device(device).type == "cpu" and native_cpu_bf16()


def autocast_for(device: str | torch.device, amp: bool, cpu_bf16: bool) -> AbstractContextManager:
    """The autocast context for a forward pass on ``device``.

    Args:
        device: where the network runs.
        amp: float16 autocast on CUDA.
        cpu_bf16: bfloat16 autocast on the CPU.

    Returns:
        ``torch.autocast`` for the device's precision, or a null context (float32).
    """
    kind = torch.device(device).type
    if kind == "cuda" and amp:
        return torch.autocast("cuda")
    if kind == "cpu" and cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def to_float32(output: Any) -> Any:
    """Floating tensors of a network output (tensor, sequence or mapping) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, Mapping):
        return type(output)({key: to_float32(value) for key, value in output.items()})
    if isinstance(output, Sequence) and not isinstance(output, str):
        return type(output)(to_float32(value) for value in output)
    return output


class CpuBf16Inferer(SwitchedInferer):
    """Run another inferer under CPU bfloat16 autocast; its output comes back as float32.

    Inputs on a CUDA device pass through unchanged (MONAI's engines autocast there with
    ``amp``), as do all inputs when ``enabled`` is False.

    Args:
        inferer: the inferer that runs the network (``SimpleInferer`` in training,
            ``SlidingWindowInferer`` in validation).
        enabled: the bundle's ``train_cpu_bf16`` switch.
    """

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """``inferer(inputs, network)``, autocast to bfloat16 when enabled on the CPU."""
        if not self.enabled or inputs.device.type != "cpu":
            return self.inferer(inputs, network, *args, **kwargs)
        # A plain tensor: MetaTensor's per-op bookkeeping made a bfloat16 training step of
        # the refiner 25 % slower (0.29 -> 0.37 s); the engines need no metadata on ``pred``.
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = self.inferer(plain, network, *args, **kwargs)
        return to_float32(output)
