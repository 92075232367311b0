"""Sprite images of a case for the slice viewer: every slice of three views, tiled.

Slices are rendered here, not in the browser: a ``file://`` page may not ``fetch()`` a
volume, and an embedded volume would make the page huge. The volume is reduced by blocks
of voxels to a voxel budget (mean for the CT, maximum for labels so that a one-voxel
lesion survives), coarsening the finest axis first, so thick-slice CT keeps every slice.
Each axis's slices are tiled into one sprite per layer, a JPEG of the CT in the window
[-100, 400] HU and palette PNGs of the labels (the prediction as a translucent fill, the
reference as an opaque outline), as data URIs for :mod:`~pipeline.evaluation.report.viewer`.

Display follows :func:`~pipeline.evaluation.report.figures.extract_overlay`: reoriented to
RAS with nibabel, then radiological whatever the storage order: axial seen from the feet
(the patient's right on the image left, anterior at the top), coronal from the front
(superior at the top, right on the left), sagittal from the patient's left (superior at
the top, anterior on the left). Slices are numbered along RAS: axial from inferior,
coronal from posterior, sagittal from the patient's left.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel import orientations
from PIL import Image
from scipy import ndimage

from pipeline.evaluation.report.figures import CT_WINDOW, LIVER_COLOUR, TUMOUR_COLOUR
from pipeline.labels import LIVER, TUMOUR

__all__ = ["DEFAULT_MAX_VOXELS", "MAX_CT_BYTES", "PANES", "SpriteAxis", "build_sprites"]

DEFAULT_MAX_VOXELS = 2_700_000
"""Voxel budget of the shown volume: a 272 x 272 x 144 CT at half in-plane resolution.

Each axis's sprite holds about this many pixels."""
MAX_CT_BYTES = 1_300_000
"""Largest size of the three CT sprites (as base64) before the JPEG quality is lowered.

Noise, more than anatomy, sets how well a CT compresses: at quality 85 the same synthetic
272 x 272 x 144 case (15 HU noise) takes 1.1 MB with a 390 mm field of view (air around the
body) and 2.2 MB with a 218 mm one (noisy tissue everywhere). A lower quality mostly drops
noise, so it is preferred to a lower resolution; this keeps such a page under ~1.5 MB."""
JPEG_QUALITIES = (85, 75, 65, 55)
# Palette of the label sprites: index -> RGBA. Fills for the prediction, lines for the
# reference; the alphas follow the static overlay's (figures._label_rgba).
_LIVER_FILL, _TUMOUR_FILL, _LIVER_LINE, _TUMOUR_LINE = 1, 2, 3, 4
_ALPHAS = (0, 115, 191, 255, 255)
# pane -> (scrolled RAS axis, orientation letters at top, bottom, left, right)
PANES = {"axial": (2, "APRL"), "coronal": (1, "SIRL"), "sagittal": (0, "SIAP")}


@dataclass
class SpriteAxis:
    """The slices of one viewing direction tiled into sprite images.

    Attributes:
        name: ``axial``, ``coronal`` or ``sagittal``.
        n_slices: Number of slices (tiles) along the scrolled axis.
        tile: Rows and columns of one slice, in pixels.
        cell: Rows and columns of a tile's cell in the sprite (the tile plus a gutter to
            the next multiple of 8, so JPEG blocks and smoothing never mix two slices).
        columns: Tiles per sprite row; slice ``k`` is in cell ``divmod(k, columns)``.
        pixel_mm: Height and width of one tile pixel in mm.
        start: Slice shown first (0-based).
        layers: ``{"ct" | "ref" | "pred": data URI}``; no ``ct`` without an image.
    """

    name: str
    n_slices: int
    tile: tuple[int, int]
    cell: tuple[int, int]
    columns: int
    pixel_mm: tuple[float, float]
    start: int
    layers: dict[str, str]


def _block_factors(shape: Sequence[int], spacing: Sequence[float], max_voxels: int) -> list[int]:
    """Voxels per block along each array axis so that at most ``max_voxels`` blocks remain.

    The axis with the finest effective spacing (spacing times factor) is coarsened first,
    ties going to the axis with more voxels; the result is as isotropic as integer
    factors allow.
    """
    if max_voxels < 1:
        raise ValueError(f"max_voxels must be >= 1, got {max_voxels}")
    factors = [1, 1, 1]
    while math.prod(-(-n // f) for n, f in zip(shape, factors, strict=True)) > max_voxels:
        axis = min(range(3), key=lambda a: (spacing[a] * factors[a], -shape[a] / factors[a]))
        factors[axis] += 1
    return factors


def _block_reduce(
    volume: np.ndarray, factors: Sequence[int], reduce: str, scale: tuple[float, float] = (1, 0)
) -> np.ndarray:
    """Reduce blocks of ``factors`` voxels to one value, ``"mean"`` or ``"max"``.

    Works on slabs of whole blocks along the last axis, so a large CT is converted to
    float one slab at a time; ``scale`` (slope, intercept) turns stored values into HU.
    """
    step = factors[2] * max(1, 16 // factors[2])
    reduced = []
    for start in range(0, volume.shape[2], step):
        slab = volume[:, :, start : start + step]
        if reduce == "mean":
            slab = slab.astype(np.float32) * np.float32(scale[0]) + np.float32(scale[1])
        pad = [(0, -n % f) for n, f in zip(slab.shape, factors, strict=True)]
        slab = np.pad(slab, pad, mode="edge")
        shape = [n // f for n, f in zip(slab.shape, factors, strict=True)]
        blocks = slab.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
        reduced.append(blocks.mean(axis=(1, 3, 5)) if reduce == "mean" else blocks.max((1, 3, 5)))
    return np.concatenate(reduced, axis=2)


def _stored_ct(ct: Any) -> tuple[np.ndarray, tuple[float, float]]:
    """The CT's stored values and their (slope, intercept) to HU.

    nibabel's lazy proxy is read once unscaled (int16 for most CT, not float64), and
    scaled a slab at a time by :func:`_block_reduce`.
    """
    if hasattr(ct, "get_unscaled"):
        data, scale = np.asanyarray(ct.get_unscaled()), (float(ct.slope), float(ct.inter))
    else:
        data, scale = np.asanyarray(ct), (1.0, 0.0)
    while data.ndim > 3 and data.shape[-1] == 1:  # X x Y x Z x 1 files
        data = data[..., 0]
    return data, scale


def _display_stack(ras: np.ndarray, axis: int) -> np.ndarray:
    """Slices across RAS ``axis`` as (slice, row, column) in radiological display order.

    The two other RAS axes (a < b) become columns (a) and rows (b), both reversed: the
    patient's right (high x) on the left, anterior (high y) or superior (high z) at the
    top; the sagittal plane has anterior on the left.
    """
    return np.moveaxis(ras, axis, 0).transpose(0, 2, 1)[:, ::-1, ::-1]


def _tile(stack: np.ndarray, cell: tuple[int, int], columns: int) -> np.ndarray:
    """Tile a (slice, row, column) stack into one image, slice ``k`` at ``divmod(k, columns)``."""
    n, height, width = stack.shape
    rows = -(-n // columns)
    cells = np.zeros((rows * columns, *cell), dtype=stack.dtype)
    cells[:n, :height, :width] = stack
    return cells.reshape(rows, columns, *cell).transpose(0, 2, 1, 3).reshape(rows * cell[0], -1)


def _outlines(stack: np.ndarray) -> np.ndarray:
    """Palette codes of the in-plane outlines of liver (label >= 1) and tumour, per slice."""
    cross = np.zeros((1, 3, 3), dtype=bool)  # 4-connected within a slice, never across
    cross[0, 1, :] = cross[0, :, 1] = True
    codes = np.zeros(stack.shape, dtype=np.uint8)
    for threshold, code in ((LIVER, _LIVER_LINE), (TUMOUR, _TUMOUR_LINE)):
        mask = stack >= threshold
        codes[mask & ~ndimage.binary_erosion(mask, cross)] = code
    return codes


def _rgb(colour: str) -> list[int]:
    return [int(colour[i : i + 2], 16) for i in (1, 3, 5)]


def _data_uri(image: Image.Image, fmt: str, **options: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _label_uri(codes: np.ndarray) -> str:
    image = Image.fromarray(codes)
    palette = [0, 0, 0] + (_rgb(LIVER_COLOUR) + _rgb(TUMOUR_COLOUR)) * 2
    image.putpalette(palette)  # "L" becomes "P": one byte per pixel, alpha per index
    # zlib's default level: "optimize" doubles the encoding time for 15 % smaller PNGs.
    return _data_uri(image, "PNG", transparency=bytes(_ALPHAS))


def _window(hu: np.ndarray) -> np.ndarray:
    """HU to grey levels: the CT window's bounds to 0 and 255, clipped outside."""
    low, high = CT_WINDOW
    return np.rint(np.clip((hu - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)


def _ct_uris(sheets: Sequence[np.ndarray], max_bytes: int) -> list[str]:
    """JPEG data URIs of the CT sprites at the best quality whose total fits ``max_bytes``.

    The lowest quality is kept when none fits: the page still works, only larger.
    """
    for quality in JPEG_QUALITIES:
        uris = [
            _data_uri(Image.fromarray(sheet), "JPEG", quality=quality, optimize=True)
            for sheet in sheets
        ]
        if sum(map(len, uris)) <= max_bytes:
            break
    return uris


def _sprite_index(index: int, size: int, factor: int, flipped: bool) -> int:
    """A RAS voxel index of the full grid as the index of its block in the RAS sprite grid."""
    blocks = -(-size // factor)
    stored = size - 1 - index if flipped else index
    return blocks - 1 - stored // factor if flipped else stored // factor


def build_sprites(
    pred: np.ndarray,
    ref: np.ndarray,
    affine: np.ndarray,
    ct: Any | None = None,
    *,
    axial_index: int | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_ct_bytes: int = MAX_CT_BYTES,
) -> list[SpriteAxis]:
    """Sprite images of the three viewing directions of a case.

    Args:
        pred: Predicted labels 0..2 (3D, any storage orientation).
        ref: Reference labels on the same grid.
        affine: Voxel-to-world (RAS mm) matrix of the grid.
        ct: Optional CT in HU on the same grid: an array or nibabel's lazy array proxy.
        axial_index: Axial slice to show first, counted from inferior on the full grid
            (e.g. the report overlay's slice); by default the labels' centre.
        max_voxels: Voxel budget of the shown volume (see :data:`DEFAULT_MAX_VOXELS`).
        max_ct_bytes: Size above which the CT sprites get a lower JPEG quality
            (see :data:`MAX_CT_BYTES`).

    Returns:
        One :class:`SpriteAxis` per pane: axial, coronal, sagittal.

    Raises:
        ValueError: The volumes' shapes differ.
    """
    shapes = {np.shape(pred), np.shape(ref)} | ({tuple(ct.shape[:3])} if ct is not None else set())
    if len(shapes) > 1:
        raise ValueError(f"prediction, reference and CT must share one grid, got shapes {shapes}")
    affine = np.asarray(affine, dtype=np.float64)
    ornt = orientations.io_orientation(affine)  # array axis -> (RAS axis, flip)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factors = _block_factors(ref.shape, zooms, max_voxels)
    spacing = np.zeros(3)
    spacing[ornt[:, 0].astype(int)] = zooms * factors  # RAS axis -> shown voxel size

    def to_ras(volume: np.ndarray) -> np.ndarray:
        return orientations.apply_orientation(volume, ornt)

    labels = {
        "ref": to_ras(_block_reduce(np.asarray(ref, np.uint8), factors, "max")),
        "pred": to_ras(_block_reduce(np.asarray(pred, np.uint8), factors, "max")),
    }
    grey = None
    if ct is not None:
        stored, scale = _stored_ct(ct)
        grey = to_ras(_window(_block_reduce(stored, factors, "mean", scale)))
    start = _start_slices(labels["ref"], labels["pred"])
    if axial_index is not None:
        axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
        start[2] = _sprite_index(axial_index, ref.shape[axis], factors[axis], ornt[axis, 1] < 0)
    axes = [
        _sprite_axis(name, axis, labels, spacing, start[axis]) for name, (axis, _) in PANES.items()
    ]
    if grey is not None:
        sheets = [_tile(_display_stack(grey, PANES[a.name][0]), a.cell, a.columns) for a in axes]
        for sprite_axis, uri in zip(axes, _ct_uris(sheets, max_ct_bytes), strict=True):
            sprite_axis.layers["ct"] = uri
    return axes


def _start_slices(ref: np.ndarray, pred: np.ndarray) -> list[int]:
    """First slice per RAS axis: the centre of the labelled voxels, else the middle."""
    mask = (ref >= LIVER) | (pred >= LIVER)
    if not mask.any():
        return [n // 2 for n in mask.shape]
    return [int(round(c)) for c in ndimage.center_of_mass(mask)]


def _sprite_axis(
    name: str,
    axis: int,
    labels: Mapping[str, np.ndarray],
    spacing: np.ndarray,
    start: int,
) -> SpriteAxis:
    """One pane's geometry and label sprites from the RAS label volumes."""
    ref, pred = (_display_stack(labels[k], axis) for k in ("ref", "pred"))
    n, height, width = ref.shape
    cell = (-(-(height + 1) // 8) * 8, -(-(width + 1) // 8) * 8)
    columns = max(1, round(math.sqrt(n * cell[0] / cell[1])))  # a near-square sprite
    layers = {
        "ref": _label_uri(_tile(_outlines(ref), cell, columns)),
        "pred": _label_uri(_tile(pred, cell, columns)),
    }
    row_axis, column_axis = (a for a in (2, 1, 0) if a != axis)
    return SpriteAxis(
        name=name,
        n_slices=n,
        tile=(height, width),
        cell=cell,
        columns=columns,
        pixel_mm=(float(spacing[row_axis]), float(spacing[column_axis])),
        start=int(np.clip(start, 0, n - 1)),
        layers=layers,
    )
