"""A scrollable slice viewer per case: ``viewer/<case>.html`` in the report folder.

The page shows the case in three panes, axial, coronal and sagittal, scrolled with the
mouse wheel over a pane, its slider, or the arrow keys (PageUp / PageDown: 10 slices) for
the highlighted pane; ``#axis=coronal&slice=40`` in the address opens a pane at a slice.
Checkboxes switch the reference and the prediction on and off. The prediction is a
translucent fill and the reference an opaque outline over it, in the colours of
:mod:`~pipeline.evaluation.report.figures` (green liver, red tumour): agreement is a fill
that ends on the line, an error a fill outside the line or a line around no fill, and the
CT stays visible, which two overlapping fills would not allow.

The slices are pre-rendered sprite images (:mod:`.viewer_sprites`: why, and how the
views are oriented), embedded as data URIs: the page is one file and its canvas stays
readable (untainted). Canvases have their plane's physical proportions, one mm-per-pixel
scale for all panes; slices are numbered from 1. The page's CSS and JS are the string
constants of this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.report.figures import CT_WINDOW, LIVER_COLOUR, TUMOUR_COLOUR
from pipeline.evaluation.report.viewer_sprites import (
    DEFAULT_MAX_VOXELS,
    MAX_CT_BYTES,
    PANES,
    SpriteAxis,
    build_sprites,
)
from pipeline.io import atomic_path

__all__ = [
    "SpriteAxis",
    "build_sprites",
    "remove_viewer",
    "render_viewer",
    "viewer_relpath",
    "write_viewer",
]

DISPLAY_PX = 420
"""Largest canvas side in CSS pixels; the three panes share one mm-per-pixel scale."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def viewer_relpath(case_id: str) -> str:
    """Path of a case's viewer page relative to the report folder, safe as a file name."""
    name = _UNSAFE.sub("_", case_id)
    if name != case_id or name.startswith("."):
        # Ids that clean to one name (a/b, a_b) must not share a page: add a hash.
        digest = hashlib.sha1(case_id.encode("utf-8")).hexdigest()[:8]
        name = f"{name.lstrip('.')}-{digest}"
    return f"viewer/{name}.html"


# Hand-written on purpose: no maintained viewer library shows slices from a single
# file:// page without fetching the volume (which browsers block); this script only
# draws tiles of the sprite images embedded in the page.
_JS = """
"use strict";
const config = JSON.parse(document.getElementById("viewer-config").textContent);
const panes = {};
let active = null;

function isOn(layer) {
  const box = document.getElementById("show-" + layer);
  return box === null || box.checked;
}

// FNV-1a hash of the drawn pixels, so a test (or a bug report) can tell two pictures apart.
function checksum(ctx, canvas) {
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let hash = 2166136261;
  for (let i = 0; i < data.length; i++) hash = Math.imul(hash ^ data[i], 16777619);
  return (hash >>> 0).toString(16);
}

function draw(pane) {
  const {axis, canvas, ctx, index} = pane;
  const x = (index % axis.columns) * axis.cell[1];
  const y = Math.floor(index / axis.columns) * axis.cell[0];
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (const layer of ["ct", "pred", "ref"]) {  // the reference outline over the fill
    const image = document.getElementById(axis.name + "-" + layer);
    if (image === null || !isOn(layer)) continue;
    // Smooth the magnified CT; keep label pixels sharp so outlines stay lines.
    ctx.imageSmoothingEnabled = layer === "ct";
    ctx.drawImage(image, x, y, axis.tile[1], axis.tile[0], 0, 0, canvas.width, canvas.height);
  }
  pane.slider.value = index + 1;
  pane.position.textContent = (index + 1) + " / " + axis.n_slices;
  pane.root.dataset.slice = index + 1;
  pane.root.dataset.checksum = checksum(ctx, canvas);
}

function show(pane, index) {
  pane.index = Math.min(pane.axis.n_slices - 1, Math.max(0, index));
  draw(pane);
}

function activate(pane) {
  if (active !== null) active.root.classList.remove("active");
  active = pane;
  pane.root.classList.add("active");
}

function setUp(axis) {
  const root = document.querySelector('.pane[data-axis="' + axis.name + '"]');
  const canvas = root.querySelector("canvas");
  const pane = {
    axis, root, canvas, index: axis.start, wheel: 0,
    ctx: canvas.getContext("2d", {willReadFrequently: true}),
    slider: root.querySelector("input"),
    position: root.querySelector(".position"),
  };
  root.addEventListener("wheel", (event) => {
    event.preventDefault();  // scroll the slices, not the page
    activate(pane);
    // One slice per wheel notch; a touchpad's many small deltas add up to 50 px a slice.
    pane.wheel += event.deltaMode === WheelEvent.DOM_DELTA_LINE ? 40 * event.deltaY : event.deltaY;
    if (Math.abs(pane.wheel) < 50) return;
    show(pane, pane.index - Math.sign(pane.wheel));  // up: superior, anterior, patient's right
    pane.wheel = 0;
  }, {passive: false});
  pane.slider.addEventListener("input", () => show(pane, Number(pane.slider.value) - 1));
  root.addEventListener("pointerenter", () => activate(pane));
  root.addEventListener("click", () => activate(pane));
  panes[axis.name] = pane;
}

const KEY_STEPS = {ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10,
                   PageDown: -10};

document.addEventListener("keydown", (event) => {
  const step = KEY_STEPS[event.key];
  // A focused slider moves with the arrow keys by itself.
  const onSlider = event.target instanceof HTMLInputElement && event.target.type === "range";
  if (step === undefined || active === null || onSlider) return;
  event.preventDefault();
  show(active, active.index + step);
});

window.addEventListener("load", () => {
  config.axes.forEach(setUp);
  // Start state from the address, e.g. viewer/case.html#axis=coronal&slice=40 (1-based).
  const wanted = new URLSearchParams(location.hash.slice(1));
  const first = panes[wanted.get("axis")] || panes[config.axes[0].name];
  const slice = Number.parseInt(wanted.get("slice"), 10);
  if (Number.isFinite(slice)) first.index = slice - 1;
  activate(first);
  Object.values(panes).forEach((pane) => show(pane, pane.index));
  for (const layer of ["ref", "pred"]) {
    document.getElementById("show-" + layer)
      .addEventListener("change", () => Object.values(panes).forEach(draw));
  }
});
"""

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1em;
       color: #222; background: #fafafa; }
header { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: baseline; }
h1 { font-size: 1.3em; margin: 0; } h2 { font-size: 1em; margin: 0.3em 0; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: -0.1em; }
.note { color: #555; font-size: 0.88em; max-width: 80em; }
main { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.pane { border: 2px solid transparent; padding: 0.3em; }
.pane.active { border-color: #4a90d9; }
.view { position: relative; line-height: 0; background: #000; }
.view b { position: absolute; color: #ff0; font: bold 12px sans-serif; line-height: 1; }
.view .top { top: 3px; left: 50%; } .view .bottom { bottom: 3px; left: 50%; }
.view .left { left: 4px; top: 50%; } .view .right { right: 4px; top: 50%; }
input[type=range] { width: 100%; }
"""


def _pane_html(axis: SpriteAxis, size: tuple[int, int]) -> str:
    """A pane: heading with the slice number, canvas with orientation letters, slider."""
    letters = PANES[axis.name][1]
    marks = "".join(
        f'<b class="{side}">{letter}</b>'
        for side, letter in zip(("top", "bottom", "left", "right"), letters, strict=True)
    )
    return (
        f'<section class="pane" data-axis="{axis.name}">'
        f'<h2>{axis.name} <span class="position"></span></h2>'
        f'<div class="view"><canvas width="{size[1]}" height="{size[0]}"></canvas>{marks}</div>'
        f'<input type="range" min="1" max="{axis.n_slices}" value="{axis.start + 1}"'
        f' autocomplete="off" aria-label="{axis.name} slice"></section>'
    )


def _canvas_sizes(axes: Sequence[SpriteAxis]) -> list[tuple[int, int]]:
    """Canvas (height, width) per pane: physical proportions, one scale for all panes."""
    extents = [(a.tile[0] * a.pixel_mm[0], a.tile[1] * a.pixel_mm[1]) for a in axes]
    px_per_mm = DISPLAY_PX / max(max(e) for e in extents)
    return [(max(1, round(h * px_per_mm)), max(1, round(w * px_per_mm))) for h, w in extents]


def render_viewer(case_id: str, axes: Sequence[SpriteAxis], back_href: str = "") -> str:
    """The HTML text of a case's viewer page.

    Args:
        case_id: Shown in the title and heading (escaped).
        axes: From :func:`build_sprites`.
        back_href: Link back to the report (omitted when empty).

    Returns:
        One self-contained page: inline CSS and JS, sprites as data URIs.
    """
    config = {"axes": [{k: v for k, v in asdict(a).items() if k != "layers"} for a in axes]}
    # "</" inside a script element would end it early; JSON reads "<\\/" as "</".
    config_json = json.dumps(config).replace("</", "<\\/")
    images = "".join(
        f'<img id="{a.name}-{layer}" src="{uri}" alt="">'
        for a in axes
        for layer, uri in a.layers.items()
    )
    has_ct = any("ct" in a.layers for a in axes)
    by_name = {a.name: a for a in axes}
    # (x, y, z) mm: axial pixels are y by x, coronal pixels z by x.
    voxel = (*by_name["axial"].pixel_mm[::-1], by_name["coronal"].pixel_mm[0])
    low, high = CT_WINDOW
    background = f"CT window [{low:g}, {high:g}] HU" if has_ct else "no CT: labels on black"
    back = f'<a href="{escape(back_href)}">&larr; report</a>' if back_href else ""
    swatch = '<span class="swatch" style="background:{}"></span> {}'
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(case_id)}: slice viewer</title><style>{_CSS}</style></head><body>",
            f"<header>{back}<h1>{escape(case_id)}</h1>",
            '<label><input type="checkbox" id="show-ref" checked autocomplete="off">'
            " reference (outline)</label>",
            '<label><input type="checkbox" id="show-pred" checked autocomplete="off">'
            " prediction (fill)</label>",
            f"<span>{swatch.format(LIVER_COLOUR, 'liver')} "
            f"{swatch.format(TUMOUR_COLOUR, 'tumour')}</span></header>",
            f'<p class="note">{background}. Radiological convention: the patient\'s right on'
            " the image left. Scroll with the mouse wheel over a pane or its slider; the arrow"
            " keys (PageUp / PageDown: 10 slices) scroll the highlighted pane. Shown at"
            f" {voxel[0]:.2f} &times; {voxel[1]:.2f} &times; {voxel[2]:.2f} mm voxels"
            " (right-left, anterior-posterior, superior-inferior).</p>",
            "<main>" + "".join(map(_pane_html, axes, _canvas_sizes(axes))) + "</main>",
            f"<div hidden>{images}</div>",
            f'<script type="application/json" id="viewer-config">{config_json}</script>',
            f"<script>{_JS}</script>",
            "</body></html>",
        ]
    )


def write_viewer(
    report_dir: str | os.PathLike,
    case_id: str,
    pred: np.ndarray,
    ref: np.ndarray,
    affine: np.ndarray,
    ct: Any | None = None,
    *,
    axial_index: int | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_ct_bytes: int = MAX_CT_BYTES,
) -> Path:
    """Build a case's sprites and write its page to ``report_dir/viewer/<case>.html``.

    Args are those of :func:`build_sprites`; the page links back to ``../report.html``.

    Returns:
        The written page.
    """
    axes = build_sprites(
        pred, ref, affine, ct,
        axial_index=axial_index, max_voxels=max_voxels, max_ct_bytes=max_ct_bytes,
    )  # fmt: skip
    path = Path(report_dir) / viewer_relpath(case_id)
    with atomic_path(path) as tmp:
        tmp.write_text(render_viewer(case_id, axes, "../report.html#cases"), encoding="utf-8")
    return path


def remove_viewer(report_dir: str | os.PathLike, case_id: str) -> None:
    """Delete a case's page, e.g. one left by an earlier run when this one failed."""
    (Path(report_dir) / viewer_relpath(case_id)).unlink(missing_ok=True)
