"""One factory from a network name to a MONAI network, so configs switch by name.

    build_network("segresnet", in_channels=1, out_channels=3, channels=(16, 32, 64, 128, 256))

Every builder reads the same few arguments the bundle passes (``channels`` sets the width,
``roi_size`` the patch the network will see, ``spacing`` the voxel size), so
``--network_name X`` on the command line is enough to switch architectures. Each name has
defaults that suit 3 classes and 96^3 patches (or 32^3 in quick runs); anything more
specific goes through ``**kwargs`` to the MONAI constructor
(``--network_def#feature_size 24``).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.nets import (
    AttentionUnet,
    DynUNet,
    FlexibleUNet,
    SegResNet,
    SwinUNETR,
    UNet,
)

# Names whose architecture is two-dimensional whatever ``spatial_dims`` says.
_TWO_D = ("unet2d", "flexunet2d")
# Names with deep supervision (both are DynUNet underneath).
_DEEP_SUPERVISION = ("dynunet", "resunet")


def known_networks() -> list[str]:
    """Names accepted by :func:`build_network`, in the order of the documentation."""
    return list(_BUILDERS)


def network_parameter_count(net: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``net`` (all of them, or only those that require gradients)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def dynunet_kernels_strides(
    roi_size: Sequence[int],
    spacing: Sequence[float],
    min_size: int = 4,
    max_pools: int = 5,
) -> tuple[list[list[int]], list[list[int]]]:
    """Convolution kernels and strides per level, derived the nnU-Net way.

    Walking down the levels, an axis is halved only while its voxels are not much coarser
    than the finest axis (spacing ratio <= 2) and while it keeps at least ``min_size``
    voxels after halving; an axis whose spacing is more than twice the finest gets kernel
    1 instead of 3, because neighbouring slices 5 mm apart carry less shared context than
    in-plane neighbours 0.8 mm apart. Each in-plane halving doubles the in-plane spacing,
    so a thick-slice axis joins the down-sampling once the spacings become comparable.

    Args:
        roi_size: patch size the network is trained on (voxels per axis).
        spacing: voxel size per axis in mm, in the same axis order.
        min_size: smallest number of voxels an axis may reach at the bottom level.
        max_pools: largest number of down-sampling steps (5, as nnU-Net's 3D default).

    Returns:
        ``(kernels, strides)``: one entry per level; ``strides[0]`` is all ones (the input
        level) and ``strides[1:]`` are the down-sampling steps (also the up-sampling kernels).

    Raises:
        ValueError: mismatched lengths or non-positive sizes / spacings.
    """
    sizes = [int(s) for s in roi_size]
    current = [float(s) for s in spacing]
    if len(sizes) != len(current):
        raise ValueError(f"roi_size {list(roi_size)} and spacing {list(spacing)} differ in length")
    if min(sizes) < 1 or min(current) <= 0:
        raise ValueError(f"roi_size and spacing must be positive, got {sizes} and {current}")
    kernels: list[list[int]] = []
    strides: list[list[int]] = [[1] * len(sizes)]
    while True:
        finest = min(current)
        comparable = [s / finest <= 2.0 for s in current]
        kernels.append([3 if ok else 1 for ok in comparable])
        step = [
            2 if ok and size % 2 == 0 and size // 2 >= min_size else 1
            for ok, size in zip(comparable, sizes, strict=True)
        ]
        if len(strides) > max_pools or max(step) == 1:
            break
        strides.append(step)
        sizes = [size // s for size, s in zip(sizes, step, strict=True)]
        current = [sp * s for sp, s in zip(current, step, strict=True)]
    return kernels, strides


def _check_divisible(name: str, roi_size: Sequence[int] | None, divisor: Sequence[int]) -> None:
    """Raise a clear error when the patch cannot pass through the network's down-sampling."""
    if roi_size is None:
        return
    pairs = [(int(r), int(d)) for r, d in zip(roi_size, divisor, strict=True)]
    if any(r % d for r, d in pairs):
        raise ValueError(
            f"{name}: roi_size {list(roi_size)} must be divisible by {list(divisor)} per axis "
            f"(its total down-sampling); choose e.g. {[math.ceil(r / d) * d for r, d in pairs]}"
        )


def _strides(channels: Sequence[int], strides: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(strides) if strides is not None else (2,) * (len(channels) - 1)


def _total_stride(strides: Sequence[Any], dims: int) -> list[int]:
    """Down-sampling per axis of a stride list whose entries are ints or per-axis lists."""
    return [
        math.prod(int(s) if isinstance(s, int) else int(s[axis]) for s in strides)
        for axis in range(dims)
    ]


def _unet(a: dict[str, Any], **kwargs: Any) -> torch.nn.Module:
    # MONAI's UNet with residual units, as the bundle trained before the factory grew.
    strides = _strides(a["channels"], a["strides"])
    _check_divisible(a["name"], a["roi_size"], _total_stride(strides, a["spatial_dims"]))
    return UNet(
        spatial_dims=a["spatial_dims"],
        in_channels=a["in_channels"],
        out_channels=a["out_channels"],
        channels=tuple(a["channels"]),
        strides=strides,
        num_res_units=a["num_res_units"],
        norm=a["norm"] or "batch",
        dropout=a["dropout"],
        **kwargs,
    )


def _attention_unet(a: dict[str, Any], **kwargs: Any) -> torch.nn.Module:
    strides = _strides(a["channels"], a["strides"])
    _check_divisible(a["name"], a["roi_size"], _total_stride(strides, a["spatial_dims"]))
    if a["norm"] not in (None, "batch"):
        # AttentionUnet hard-codes batch normalisation; say so rather than ignore silently.
        warnings.warn(
            f"attention_unet always uses batch normalisation; norm={a['norm']!r} is ignored",
            stacklevel=3,
        )
    return AttentionUnet(
        spatial_dims=a["spatial_dims"],
        in_channels=a["in_channels"],
        out_channels=a["out_channels"],
        channels=tuple(a["channels"]),
        strides=strides,
        dropout=a["dropout"],
        **kwargs,
    )


def _segresnet(a: dict[str, Any], **kwargs: Any) -> torch.nn.Module:
    # Myronenko's layout (1, 2, 2, 4 blocks, 4 levels) with the width taken from channels[0]:
    # following len(channels) instead would add a fifth level of four 256-filter blocks at the
    # default width and take the parameters from 4.7 M to 20.7 M.
    blocks_down = tuple(kwargs.pop("blocks_down", (1, 2, 2, 4)))
    _check_divisible(a["name"], a["roi_size"], [2 ** (len(blocks_down) - 1)] * a["spatial_dims"])
    return SegResNet(
        spatial_dims=a["spatial_dims"],
        init_filters=int(a["channels"][0]),
        in_channels=a["in_channels"],
        out_channels=a["out_channels"],
        dropout_prob=a["dropout"] or None,
        norm=a["norm"] or ("GROUP", {"num_groups": 8}),
        blocks_down=blocks_down,
        blocks_up=tuple(kwargs.pop("blocks_up", (1,) * (len(blocks_down) - 1))),
        **kwargs,
    )


def _dynunet(a: dict[str, Any], **kwargs: Any) -> torch.nn.Module:
    dims = a["spatial_dims"]
    roi_size = a["roi_size"] or (96,) * dims
    spacing = a["spacing"] or (1.0,) * dims
    if a["strides"] is None:
        kernels, strides = dynunet_kernels_strides(roi_size, spacing)
    else:
        # Explicit strides mean what they mean for the U-Nets: the down-sampling between
        # levels, so DynUNet's input level (stride 1) is prepended.
        steps = [[int(s)] * dims if isinstance(s, int) else list(s) for s in a["strides"]]
        strides = [[1] * dims, *steps]
        kernels = [[3] * dims for _ in strides]
    kernels = kwargs.pop("kernel_size", kernels)
    _check_divisible(a["name"], a["roi_size"], _total_stride(strides, dims))
    # Widths follow `channels` level by level; deeper levels keep doubling, capped at 320 as
    # nnU-Net does, so a plan with more levels than `channels` entries still builds.
    filters = [int(c) for c in a["channels"][: len(strides)]]
    while len(filters) < len(strides):
        filters.append(min(filters[-1] * 2, 320))
    deep = int(a["deep_supr_num"])
    if deep >= len(strides) - 1:
        raise ValueError(
            f"{a['name']}: deep_supr_num={deep} needs at least {deep + 2} levels; the plan for "
            f"roi_size {list(roi_size)} at spacing {list(spacing)} has {len(strides)}"
        )
    return DynUNet(
        spatial_dims=dims,
        in_channels=a["in_channels"],
        out_channels=a["out_channels"],
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        dropout=a["dropout"] or None,
        norm_name=a["norm"] or ("INSTANCE", {"affine": True}),
        deep_supervision=deep > 0,
        deep_supr_num=max(deep, 1),
        res_block=kwargs.pop("res_block", a["name"] == "resunet"),
        **kwargs,
    )


def _swin_unetr(a: dict[str, Any], **kwargs: Any) -> torch.nn.Module:
    if importlib.util.find_spec("einops") is None:
        # MONAI imports einops lazily and would fail only at the first forward pass.
        raise ImportError("swin_unetr needs the einops package: pip install einops")
    # Patch embedding (2) and four patch mergings halve the size five times.
    _check_divisible(a["name"], a["roi_size"], [32] * a["spatial_dims"])
    norm = a["norm"]
    if norm is None:
        # The deepest decoder block sees roi / 32 voxels per axis: one voxel for a 32^3
        # patch, where instance norm has nothing to normalise and fails in training.
        small = a["roi_size"] is not None and min(a["roi_size"]) < 64
        norm = "batch" if small else "instance"
    return SwinUNETR(
        in_channels=a["in_channels"],
        out_channels=a["out_channels"],
        # 12 (4.1 M parameters) rather than MONAI's 24 (15.7 M) or the paper's 48 (62 M): on a
        # CPU the small model trains, and it stays comparable in size with the 3D U-Net.
        feature_size=kwargs.pop("feature_size", 12),
        norm_name=norm,
        drop_rate=a["dropout"],
        spatial_dims=a["spatial_dims"],
        **kwargs,
    )


def _flexunet2d(a: dict[str, Any], **kwargs: Any) -> torch.nn.Module:
    if kwargs.pop("pretrained", False):
        raise ValueError(
            "flexunet2d: pretrained weights would be downloaded; this pipeline builds every "
            "backbone with pretrained=False (load your own weights after building instead)"
        )
    _check_divisible(a["name"], a["roi_size"], [32, 32])
    # Five decoder stages, widest first: `channels` reversed, extended by doubling, so the
    # default (16, ..., 256) gives MONAI's default decoder (256, 128, 64, 32, 16).
    widths = [int(c) for c in a["channels"][:5]]
    while len(widths) < 5:
        widths.append(widths[-1] * 2)
    extra: dict[str, Any] = {"norm": a["norm"]} if a["norm"] else {}
    return FlexibleUNet(
        in_channels=a["in_channels"],
        out_channels=a["out_channels"],
        backbone=kwargs.pop("backbone", "resnet34"),
        pretrained=False,
        decoder_channels=tuple(reversed(widths)),
        spatial_dims=2,
        dropout=a["dropout"],
        **extra,
        **kwargs,
    )


_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "unet": _unet,
    "resunet": _dynunet,
    "attention_unet": _attention_unet,
    "segresnet": _segresnet,
    "dynunet": _dynunet,
    "swin_unetr": _swin_unetr,
    "unet2d": _unet,
    "flexunet2d": _flexunet2d,
}


def build_network(
    name: str = "unet",
    spatial_dims: int | None = None,
    in_channels: int = 1,
    out_channels: int = 3,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] | None = None,
    num_res_units: int = 2,
    norm: str | tuple | None = None,
    dropout: float = 0.0,
    roi_size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    deep_supr_num: int = 0,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build a segmentation network by name.

    Args:
        name: one of :func:`known_networks`:

            - ``unet`` (default): MONAI UNet with ``num_res_units`` residual units per block.
            - ``resunet``: DynUNet with residual blocks, planned like ``dynunet``.
            - ``attention_unet``: MONAI AttentionUnet (attention gates on the skips).
            - ``segresnet``: SegResNet, 4 levels, ``channels[0]`` initial filters.
            - ``dynunet``: nnU-Net-like DynUNet; kernels and strides from ``roi_size`` and
              ``spacing`` (:func:`dynunet_kernels_strides`); ``deep_supr_num`` > 0 turns on
              deep supervision.
            - ``swin_unetr``: SwinUNETR, ``feature_size`` 12 unless given; the patch must be
              divisible by 32; batch norm instead of instance norm below 64^3 patches.
            - ``unet2d``: the ``unet`` network on 2D slices.
            - ``flexunet2d``: MONAI FlexibleUNet on 2D slices, ``backbone`` "resnet34"
              (default) or "efficientnet-b0", never pretrained (nothing is downloaded).
        spatial_dims: 3 for volumes, 2 for slices; None means 3, or 2 for the 2D names.
        in_channels: input channels (1 for one HU window, more for stacked windows).
        out_channels: classes (3: background, liver, tumour).
        channels: feature maps per level (the width of every architecture: U-Net levels,
            DynUNet filters, SegResNet's ``channels[0]``, FlexibleUNet's decoder).
        strides: down-sampling between levels (default 2 for the U-Nets; DynUNet plans
            its own unless given, with kernels 3 or the ``kernel_size`` keyword).
        num_res_units: residual units per block of ``unet`` / ``unet2d``.
        norm: normalisation layer; None takes each network's usual one (batch for the
            U-Nets, instance for DynUNet and SwinUNETR, group for SegResNet).
        dropout: dropout probability.
        roi_size: patch size the network will see; checked against the network's
            down-sampling, and it plans DynUNet. None skips the check.
        spacing: voxel size in mm used to plan DynUNet (None: isotropic).
        deep_supr_num: deep-supervision heads of ``dynunet`` / ``resunet`` (0: off). In
            training the network then returns a stacked tensor; see
            :mod:`pipeline.nets.losses` for the loss and trainer side.
        **kwargs: passed to the MONAI constructor (``feature_size``, ``backbone``...).

    Raises:
        ValueError: an unknown name (the message lists the known ones), a 2D network with
            ``spatial_dims=3``, deep supervision for a network without it, or a
            ``roi_size`` the network cannot take.
    """
    key = name.lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown network name {name!r}; known: {known_networks()}")
    if key in _TWO_D:
        if spatial_dims not in (None, 2):
            raise ValueError(
                f"{key} is a 2D network but spatial_dims={spatial_dims}; train it on slices "
                "with the slice2d.yaml overlay, which sets spatial_dims 2"
            )
        spatial_dims = 2
    spatial_dims = 3 if spatial_dims is None else int(spatial_dims)
    if deep_supr_num and key not in _DEEP_SUPERVISION:
        raise ValueError(f"deep_supr_num is only available for {list(_DEEP_SUPERVISION)}")
    if roi_size is not None and len(roi_size) != spatial_dims:
        raise ValueError(f"{key}: roi_size {list(roi_size)} is not {spatial_dims}D")
    args = {
        "name": key,
        "spatial_dims": spatial_dims,
        "in_channels": int(in_channels),
        "out_channels": int(out_channels),
        "channels": list(channels),
        "strides": strides,
        "num_res_units": int(num_res_units),
        "norm": norm,
        "dropout": float(dropout),
        "roi_size": None if roi_size is None else [int(r) for r in roi_size],
        "spacing": None if spacing is None else [float(s) for s in spacing],
        "deep_supr_num": int(deep_supr_num),
    }
    return _BUILDERS[key](args, **kwargs)
