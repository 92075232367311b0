"""Load trained weights safely, and identify a checkpoint by its SHA-256.

Checkpoints are read with ``torch.load(weights_only=True)`` (no pickled code runs) and
mapped to the CPU first, so a checkpoint saved on a GPU loads on any machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.io import sha256_of

__all__ = ["CheckpointMismatchError", "load_network_weights", "sha256_of"]


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's weights do not fit the network the config builds."""


def _state_dict_from(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The network's state dict inside whatever layout the checkpoint has.

    Accepted: a bare state dict (``model.pt`` from the key-metric CheckpointSaver) or a
    training checkpoint ``{"model": state_dict, "optimizer": ...}``.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f"{path}: holds a {type(checkpoint).__name__}, not weights")
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        checkpoint = checkpoint["model"]
    state = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointMismatchError(f"{path}: entry {key!r} is not a tensor")
        # Weights saved from DistributedDataParallel carry a "module." prefix.
        state[key.removeprefix("module.")] = value
    return state


def load_network_weights(
    network: torch.nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load ``path`` into ``network`` (in place) and move it to ``device``.

    Args:
        network: the network built from the config.
        path: a ``.pt`` checkpoint written by the training bundle.
        device: where the network runs.

    Returns:
        The network, on ``device``, in eval mode.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointMismatchError: the weights do not fit: the message names the missing
            and unexpected keys and the tensors whose shapes differ.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train first (run training) or pass --ckpt PATH"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CheckpointMismatchError(f"{path}: cannot be read as weights ({err})") from err
    state = _state_dict_from(checkpoint, path)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or reshaped:
        raise CheckpointMismatchError(
            f"{path} does not fit the configured network (check network_name, channels, "
            f"num_res_units, in_channels against the training config): "
            f"missing keys {_listed(missing)}; unexpected keys {_listed(unexpected)}; "
            f"shape mismatches {_listed(reshaped)}"
        )
    network.load_state_dict(state, strict=True)
    return network.to(device).eval()


def _listed(items: list[str], limit: int = 8) -> str:
    """A short, readable list: the first ``limit`` items and how many more."""
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"
