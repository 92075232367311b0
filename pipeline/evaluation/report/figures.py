"""Figures of the evaluation report: overlay slices, Dice charts, burden, training curves.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` rendered by the Agg
canvas: no pyplot state machine, no display needed, safe in worker threads.

Overlays are shown in radiological convention: an axial slice seen from the feet, the
patient's right on the image's left and anterior at the top. The label arrays can be
stored in any orientation (RAS, LPS, LAS, permuted axes); :func:`extract_overlay` first
reorients the slice to RAS with nibabel's orientation tools, then flips it for display,
so the picture does not depend on the storage order.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from nibabel import orientations

from pipeline.evaluation.lesions import bounding_box
from pipeline.labels import LIVER, TUMOUR
from pipeline.transforms.masks import label_components

__all__ = [
    "CT_WINDOW",
    "OverlaySlice",
    "dice_bar_chart",
    "dice_strip_plot",
    "burden_scatter",
    "extract_overlay",
    "overlay_figure",
    "png_data_uri",
    "training_curves",
]

CT_WINDOW = (-100.0, 400.0)
"""HU window of the CT background (abdomen soft tissue with contrast)."""
LIVER_COLOUR, TUMOUR_COLOUR = "#2ca02c", "#d62728"
CLASS_COLOURS = {"liver": LIVER_COLOUR, "tumour": TUMOUR_COLOUR}
_DPI = 90


@dataclass
class OverlaySlice:
    """One axial slice ready for display (rows anterior -> posterior, columns R -> L).

    Attributes:
        ref: Reference labels of the slice.
        pred: Predicted labels of the slice.
        ct: CT values in HU, or None when no image was available.
        aspect: Row spacing over column spacing, for ``imshow(aspect=...)``.
        index: Axial slice number counted from inferior (0) to superior.
        n_slices: Number of axial slices in the volume.
        reason: Why this slice was chosen.
    """

    ref: np.ndarray
    pred: np.ndarray
    ct: np.ndarray | None
    aspect: float
    index: int
    n_slices: int
    reason: str

    def meta(self) -> dict[str, Any]:
        """The scalar attributes, for JSON."""
        return {
            "aspect": self.aspect,
            "index": self.index,
            "n_slices": self.n_slices,
            "reason": self.reason,
            "has_ct": self.ct is not None,
        }


def _axial_choice(ref: np.ndarray, pred: np.ndarray, axis: int, spacing_ml: float):
    """Index along the array's superior axis ``axis`` and the reason for it."""
    others = tuple(a for a in range(3) if a != axis)
    tumour = ref == TUMOUR
    box = bounding_box(tumour)
    if box is not None:
        labels, n = label_components(tumour[box])
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = 0
        largest = int(np.argmax(sizes))
        area = (labels == largest).sum(axis=others)  # lesion area per axial slice
        index = box[axis].start + int(np.argmax(area))
        volume = sizes[largest] * spacing_ml
        return index, f"slice through the largest reference tumour ({volume:.1f} mL)"
    for mask, what in ((ref >= LIVER, "reference"), (pred >= LIVER, "predicted")):
        counts = mask.sum(axis=others)
        if counts.any():
            centre = float(np.dot(np.arange(counts.size), counts) / counts.sum())
            return int(round(centre)), f"{what} liver centre (no reference tumour)"
    return ref.shape[axis] // 2, "middle slice (no liver in reference or prediction)"


def _axial_slab(volume: Any, axis: int, index: int) -> np.ndarray:
    """A one-slice-thick 3D slab; works on arrays and on nibabel's lazy array proxies."""
    key = [slice(None)] * 3
    key[axis] = slice(index, index + 1)
    return np.asarray(volume[tuple(key)])


def extract_overlay(
    pred: np.ndarray, ref: np.ndarray, affine: np.ndarray, ct: Any | None = None
) -> OverlaySlice:
    """Cut the display slice of a case: the largest reference tumour, else the liver centre.

    The slice is the axial one where the largest reference tumour (26-connected
    component) has its largest area; without reference tumour it is the slice at the
    reference liver's centroid (or the predicted liver's, or the middle slice).

    Args:
        pred: Predicted labels (3D, any storage orientation).
        ref: Reference labels on the same grid.
        affine: Voxel-to-world (RAS mm) matrix of the grid.
        ct: Optional CT on the same grid, an array or a nibabel array proxy (only the
            chosen slice is read).

    Returns:
        The slice in radiological display orientation.
    """
    affine = np.asarray(affine, dtype=np.float64)
    ornt = orientations.io_orientation(affine)  # array axis -> (RAS axis, flip)
    axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])  # array axis closest to superior
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    index, reason = _axial_choice(ref, pred, axis, float(np.prod(zooms)) / 1000.0)

    def display(volume: Any) -> np.ndarray:
        # RAS slab -> [x (R), y (A)]; transpose to rows = y and flip both axes so that
        # anterior is at the top and the patient's right on the left.
        ras = orientations.apply_orientation(_axial_slab(volume, axis, index), ornt)
        return np.ascontiguousarray(ras[:, :, 0].T[::-1, ::-1])

    ct_slice = display(ct).astype(np.float32) if ct is not None else None
    axis_x = int(np.flatnonzero(ornt[:, 0] == 0)[0])
    axis_y = int(np.flatnonzero(ornt[:, 0] == 1)[0])
    n_slices = ref.shape[axis]
    superior_index = index if ornt[axis, 1] > 0 else n_slices - 1 - index
    return OverlaySlice(
        ref=display(ref).astype(np.uint8),
        pred=display(pred).astype(np.uint8),
        ct=ct_slice,
        aspect=float(zooms[axis_y] / zooms[axis_x]),
        index=int(superior_index),
        n_slices=int(n_slices),
        reason=reason,
    )


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)  # the Agg raster canvas, whatever backend pyplot is set to
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, to embed a PNG in a self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _label_rgba(labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    rgba[labels == LIVER] = (0.17, 0.63, 0.17, alpha)
    rgba[labels == TUMOUR] = (0.84, 0.15, 0.16, min(1.0, alpha + 0.3))
    return rgba


def _outline(ax: Any, labels: np.ndarray, linestyle: str) -> None:
    for threshold, colour in ((LIVER, LIVER_COLOUR), (TUMOUR, TUMOUR_COLOUR)):
        mask = (labels >= threshold).astype(np.float32)
        if mask.any() and not mask.all():
            ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.2, linestyles=linestyle)


def overlay_figure(overlay: OverlaySlice, title: str) -> bytes:
    """PNG of four panels: CT, reference, prediction, both outlined on the CT.

    Without CT the first panel shows the reference labels in grey and the others draw
    on a black background.
    """
    if overlay.ct is not None:
        low, high = CT_WINDOW
        background = np.clip((overlay.ct - low) / (high - low), 0.0, 1.0)
        first = "CT [-100, 400] HU"
    else:
        background = np.zeros(overlay.ref.shape, dtype=np.float32)
        first = "reference labels (no CT)"
    fig = Figure(figsize=(13.0, 3.9), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = (
        (first, overlay.ref / 2.0 if overlay.ct is None else background, None),
        ("reference", background, overlay.ref),
        ("prediction", background, overlay.pred),
        ("outlines: reference solid, prediction dashed", background, None),
    )
    for ax, (name, base, labels) in zip(axes, panels, strict=True):
        ax.imshow(base, cmap="gray", vmin=0.0, vmax=1.0, aspect=overlay.aspect)
        if labels is not None:
            ax.imshow(_label_rgba(labels), aspect=overlay.aspect, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    _outline(axes[3], overlay.ref, "solid")
    _outline(axes[3], overlay.pred, "dashed")
    for ax in axes:
        # Orientation markers: radiological convention, patient's right on the left.
        ax.text(0.02, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=9, va="center")
        ax.text(0.93, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=9, va="center")
    handles = [
        Line2D([], [], color=LIVER_COLOUR, lw=2, label="liver"),
        Line2D([], [], color=TUMOUR_COLOUR, lw=2, label="tumour"),
    ]
    fig.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    fig.suptitle(
        f"{title}: axial slice {overlay.index + 1}/{overlay.n_slices}, {overlay.reason}",
        fontsize=11,
    )
    return _png(fig)


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def dice_bar_chart(summary: Mapping[str, Any]) -> bytes:
    """PNG bar chart of per-class Dice: per-case mean (+- sd) and Dice global."""
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for i, name in enumerate(("liver", "tumour")):
        dice = summary[name]["dice"]
        sd = 0.0 if dice["sd"] is None or math.isnan(dice["sd"]) else dice["sd"]
        mean = 0.0 if dice["mean"] is None or math.isnan(dice["mean"]) else dice["mean"]
        glob = summary[name]["dice_global"]
        colour = CLASS_COLOURS[name]
        ax.bar(i - width / 2, mean, width, yerr=sd, capsize=4, color=colour, alpha=0.85)
        ax.bar(i + width / 2, glob, width, color=colour, alpha=0.45, hatch="//")
        top = min(mean + sd, 1.0)  # keep the label under the legend
        ax.text(i - width / 2, top + 0.02, _fmt(dice["mean"]), ha="center", fontsize=8)
        ax.text(i + width / 2, glob + 0.02, _fmt(glob), ha="center", fontsize=8)
    ax.set_xticks([0, 1], ["liver", "tumour"])
    ax.set_ylim(0, 1.25)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("Dice")
    ax.legend(
        handles=[
            Line2D([], [], color="grey", lw=6, label="mean per case (+- sd)"),
            Line2D([], [], color="grey", lw=6, alpha=0.45, label="Dice global"),
        ],
        fontsize=8,
        loc="upper center",
        ncol=2,
        frameon=False,
    )
    ax.set_title("Dice per class", fontsize=10)
    return _png(fig)


def dice_strip_plot(values: Mapping[str, Sequence[float]]) -> bytes:
    """PNG box plot with one dot per case, for each class (``{"liver": [...], ...}``)."""
    fig = Figure(figsize=(5.0, 3.2))
    ax = fig.subplots()
    rng = np.random.default_rng(0)  # fixed jitter: the same report draws the same picture
    names = list(values)
    for i, name in enumerate(names):
        data = np.asarray(values[name], dtype=float)
        data = data[~np.isnan(data)]
        if data.size:
            ax.boxplot([data], positions=[i], widths=0.5, showfliers=False)
            jitter = rng.uniform(-0.12, 0.12, size=data.size)
            ax.scatter(i + jitter, data, s=14, color=CLASS_COLOURS.get(name, "k"), zorder=3)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("Dice per case")
    ax.set_title("Dice across cases (one dot per case)", fontsize=10)
    return _png(fig)


def burden_scatter(ref: Sequence[float], pred: Sequence[float]) -> bytes:
    """PNG scatter of predicted against reference tumour burden (% of liver volume)."""
    fig = Figure(figsize=(3.8, 3.4))
    ax = fig.subplots()
    ref_pct, pred_pct = 100.0 * np.asarray(ref, float), 100.0 * np.asarray(pred, float)
    keep = ~(np.isnan(ref_pct) | np.isnan(pred_pct))
    top = max(1.0, float(np.max(np.r_[ref_pct[keep], pred_pct[keep]], initial=0.0)) * 1.1)
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--")
    ax.scatter(ref_pct[keep], pred_pct[keep], s=16, color=TUMOUR_COLOUR)
    # A small negative margin keeps dots at 0 % (no tumour) off the axis lines.
    ax.set_xlim(-0.03 * top, top)
    ax.set_ylim(-0.03 * top, top)
    ax.set_xlabel("reference burden (%)")
    ax.set_ylabel("predicted burden (%)")
    ax.set_title("Tumour burden", fontsize=10)
    return _png(fig)


def training_curves(rows: Sequence[Mapping[str, float]]) -> bytes:
    """PNG of training loss and validation liver / tumour Dice per epoch."""
    fig = Figure(figsize=(9.0, 3.2))
    loss_ax, dice_ax = fig.subplots(1, 2)

    def column(key: str) -> np.ndarray:
        return np.asarray([row.get(key, math.nan) for row in rows], dtype=float)

    epochs = column("epoch")
    loss_ax.plot(epochs, column("loss"), marker="o", ms=3, color="k")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("Loss", fontsize=10)
    for key, colour, label in (
        ("liver_dice", LIVER_COLOUR, "liver"),
        ("tumour_dice", TUMOUR_COLOUR, "tumour"),
        ("mean_dice", "grey", "mean"),
    ):
        values = column(key)
        if not np.isnan(values).all():
            dice_ax.plot(epochs, values, marker="o", ms=3, color=colour, label=label)
    dice_ax.set_ylim(0, 1)
    dice_ax.set_xlabel("epoch")
    dice_ax.set_ylabel("validation Dice")
    dice_ax.set_title("Validation Dice", fontsize=10)
    dice_ax.legend(fontsize=8)
    return _png(fig)
