"""Load trained weights safely, and identify a checkpoint by its SHA-256.

Checkpoints are read with ``torch.load(weights_only=True)`` (no pickled code runs) and
mapped to the CPU first, so a checkpoint saved on a GPU loads on any machine.

Training saves, beside the weights, what the model was trained for (``trained_for``: its
stage in a cascade, voxel size, HU window, input channels, network). Loading compares
that with what the config asks for, so a model is never applied at another voxel size,
or in another stage, than it learnt: a 2 mm model run at 1.5 mm, or a cascade's locator
passed as its refiner, stops with a message instead of giving a plausible wrong mask.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.io import sha256_of

__all__ = [
    "TRAINED_FOR",
    "CheckpointMismatchError",
    "TrainedFor",
    "load_network_weights",
    "recorded_setting",
    "sha256_of",
    "trained_for_differences",
]

TRAINED_FOR = "trained_for"
"""The checkpoint entry that records what the model was trained for."""


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's weights do not fit the network the config builds."""


class TrainedFor:
    """What a model was trained for, saved in its checkpoint next to the weights.

    Ignite's checkpoint saves objects with ``state_dict``; this holds plain values only
    (strings, numbers, lists), so ``torch.load(weights_only=True)`` reads it back.

    Args:
        settings: e.g. ``{"role": "refiner", "pixdim": [1.5, 1.5, 2.0], ...}``.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = _plain(dict(settings))

    def state_dict(self) -> dict[str, Any]:
        """The settings, as saved."""
        return dict(self.settings)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the saved settings back (ignite calls this when a checkpoint is loaded)."""
        self.settings = dict(state)


def _plain(value: Any) -> Any:
    """``value`` as built-in types only (config values may be tuples or torch sizes)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    return str(value)


def _same(recorded: Any, configured: Any) -> bool:
    """Equal settings, with numbers compared to 1e-6 (YAML may give 4 or 4.0)."""
    if isinstance(recorded, list) and isinstance(configured, list):
        return len(recorded) == len(configured) and all(
            _same(a, b) for a, b in zip(recorded, configured, strict=True)
        )
    numbers = (int, float)
    if isinstance(recorded, numbers) and isinstance(configured, numbers):
        if isinstance(recorded, bool) or isinstance(configured, bool):
            return recorded is configured
        return abs(float(recorded) - float(configured)) <= 1e-6
    return recorded == configured


# Settings added to ``trained_for`` after checkpoints without them were made, with the
# value every one of those models was trained with: an older checkpoint is compared as
# if it had recorded it, so a refiner trained on unsmoothed input is not given smoothed.
VALUES_BEFORE_RECORDED: dict[str, Any] = {
    "input_smoothing_sigma": 0.0,
    "input_smoothing_border": "zeros",
    "liver_contrast_hu": 0.0,
}


def trained_for_differences(
    recorded: Mapping[str, Any], configured: Mapping[str, Any]
) -> list[str]:
    """Each setting the two disagree on, as "name: trained X, configured Y".

    Other settings only one side records are not compared (a checkpoint from an older
    version records fewer); those of ``VALUES_BEFORE_RECORDED`` are, with their old
    value.
    """
    recorded = {**VALUES_BEFORE_RECORDED, **recorded}
    configured = _plain(dict(configured))
    return [
        f"{key}: trained {recorded[key]!r}, configured {configured[key]!r}"
        for key in configured
        if key in recorded and not _same(recorded[key], configured[key])
    ]


def recorded_setting(
    ckpt: str | os.PathLike | Sequence[str | os.PathLike], key: str, default: Any
) -> Any:
    """A setting the training recorded in ``ckpt`` (the first of several), or ``default``.

    ``default`` also when the file is absent (a config built before training) or older
    than the setting.
    """
    first = ckpt if isinstance(ckpt, (str, os.PathLike)) else next(iter(ckpt), None)
    if first is None or not Path(first).is_file():
        return default
    try:
        checkpoint = torch.load(first, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: loading the weights reports it, with the file named
        return default
    recorded = checkpoint.get(TRAINED_FOR) if isinstance(checkpoint, Mapping) else None
    if not isinstance(recorded, Mapping) or key not in recorded:
        return default
    return recorded[key]


def _state_dict_from(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The network's state dict inside whatever layout the checkpoint has.

    Accepted: a bare state dict, the training's best model ``{"model": state_dict,
    "trained_for": settings}`` (``model.pt``), or a training checkpoint ``{"model":
    state_dict, "optimizer": ...}``.
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
    network: torch.nn.Module,
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    expected: Mapping[str, Any] | None = None,
    used_as: str = "",
) -> torch.nn.Module:
    """Load ``path`` into ``network`` (in place) and move it to ``device``.

    Args:
        network: the network built from the config.
        path: a ``.pt`` checkpoint written by the training bundle.
        device: where the network runs.
        expected: what the config uses the model for (``trained_for`` of common.yaml);
            compared with what the checkpoint records, when it records it.
        used_as: the model's place, for messages, e.g. "the cascade's refiner (its
            locator: models/locator/model.pt)", so a mismatch of a pair names both files.

    Returns:
        The network, on ``device``, in eval mode.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointMismatchError: the model was trained for other settings than
            ``expected`` (the message names each), or the weights do not fit: the
            message names the missing and unexpected keys and the tensors whose shapes
            differ.
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
    where = f"{path} ({used_as})" if used_as else str(path)
    recorded = checkpoint.get(TRAINED_FOR) if isinstance(checkpoint, Mapping) else None
    if expected is not None and isinstance(recorded, Mapping):
        differences = trained_for_differences(recorded, expected)
        if differences:
            raise CheckpointMismatchError(
                f"{where} was trained for other settings than it is used with: "
                f"{'; '.join(differences)}. Use the checkpoint trained for this place, "
                "or stack the overlays it was trained with (the same --config_file list "
                "as its training)"
            )
    state = _state_dict_from(checkpoint, path)
    expected_state = network.state_dict()
    missing = sorted(set(expected_state) - set(state))
    unexpected = sorted(set(state) - set(expected_state))
    reshaped = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected_state[key].shape)}"
        for key in set(state) & set(expected_state)
        if state[key].shape != expected_state[key].shape
    )
    if missing or unexpected or reshaped:
        raise CheckpointMismatchError(
            f"{where} does not fit the configured network (check network_name, channels, "
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
