"""Which synthetic lesions a model finds, by size and contrast-to-noise ratio.

A report's ``lesions.csv`` says which reference lesions were detected and how large they
were; the phantoms' ``phantoms.json`` says how visible each one was (its CT number against
the liver's and the image noise). Joining the two separates a lesion that no model could
see (contrast far below the noise) from one the model should have found: the question
behind a missed quality bar. Nothing in MONAI or the report does this join (it needs the
generator's drawn parameters), so it is written here.

Each reference component of a label map is matched to the drawn lesion whose centre lies
nearest its centroid in world mm; lesions that touch form one component and take the
parameters of the nearest one.

Example:
    >>> table = lesion_visibility("runs/demo/eval/report", "runs/demo/data")  # doctest: +SKIP
    >>> summarize_visibility(table)["bins"][0]  # doctest: +SKIP
    {'size': '10-20mm', 'cnr': '<1', 'n': 4, 'detected': 1, 'recall': 0.25}
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipeline.evaluation.lesions import SIZE_BINS
from pipeline.evaluation.pairing import case_name
from pipeline.io import write_json
from pipeline.transforms.masks import label_components

CNR_EDGES: tuple[float, ...] = (1.0, 2.0, 4.0)
"""Contrast-to-noise bin edges: ``<1``, ``1-2``, ``2-4``, ``>=4``."""


def cnr_bins(edges: Sequence[float] = CNR_EDGES) -> list[str]:
    """Names of the contrast-to-noise bins in increasing order: ``<1``, ``1-2``, ..."""
    inner = [f"{low:g}-{high:g}" for low, high in zip(edges[:-1], edges[1:], strict=True)]
    return [f"<{edges[0]:g}", *inner, f">={edges[-1]:g}"]


def cnr_bin(cnr: float, edges: Sequence[float] = CNR_EDGES) -> str:
    """Name of the contrast-to-noise bin of ``cnr`` (lower edge included)."""
    return cnr_bins(edges)[int(np.searchsorted(edges, cnr, side="right"))]


def lesion_visibility(
    report_dir: str | os.PathLike, data_dir: str | os.PathLike
) -> list[dict[str, Any]]:
    """One row per reference lesion of a report on synthetic data, with its visibility.

    Args:
        report_dir: an evaluation report folder (``lesions.csv``).
        data_dir: the synthetic data set it scored (``phantoms.json`` and the label maps).

    Returns:
        Rows with ``case_id``, ``lesion_id``, ``diameter_mm`` (from the label),
        ``size_bin``, ``detected_iou``, ``best_iou``, ``kind``, ``phase``,
        ``contrast_hu`` (lesion body minus liver), ``noise_sd`` and ``cnr``
        (``|contrast| / noise``), ``match_mm`` (centroid to drawn centre).

    Raises:
        FileNotFoundError: ``lesions.csv`` or ``phantoms.json`` is missing.
        KeyError: a case of the report is not in ``phantoms.json``.
    """
    data = Path(data_dir)
    lesions_csv = Path(report_dir) / "lesions.csv"
    phantoms_json = data / "phantoms.json"
    for path in (lesions_csv, phantoms_json):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found")
    phantoms = {case_name(c["label"]): c for c in json.loads(phantoms_json.read_text())["cases"]}
    with lesions_csv.open(newline="") as handle:
        refs = [row for row in csv.DictReader(handle) if row["kind"] == "ref"]
    rows = []
    for case_id in sorted({r["case_id"] for r in refs}):
        if case_id not in phantoms:
            raise KeyError(f"{lesions_csv}: case {case_id!r} is not in {phantoms_json}")
        phantom = phantoms[case_id]
        centroids = _component_centroids_mm(data / phantom["label"])
        drawn = phantom["tumours"]
        for ref in (r for r in refs if r["case_id"] == case_id):
            centroid = centroids[int(ref["lesion_id"]) - 1]
            distances = [np.linalg.norm(centroid - np.asarray(t["centre_mm"])) for t in drawn]
            tumour = drawn[int(np.argmin(distances))]
            contrast = float(tumour["hu"]["body"]) - float(phantom["hu"]["liver"])
            noise = float(phantom["noise_sd"])
            rows.append(
                {
                    "case_id": case_id,
                    "lesion_id": int(ref["lesion_id"]),
                    "diameter_mm": float(ref["diameter_mm"]),
                    "size_bin": ref["size_bin"],
                    "detected_iou": ref["detected_iou"] == "True",
                    "best_iou": float(ref["best_iou"] or 0.0),
                    "kind": tumour["kind"],
                    "phase": phantom["phase"],
                    "contrast_hu": contrast,
                    "noise_sd": noise,
                    "cnr": abs(contrast) / noise,
                    "match_mm": float(min(distances)),
                }
            )
    return rows


def _component_centroids_mm(label_path: Path) -> list[np.ndarray]:
    """World-mm centroids of the tumour components, numbered as ``evaluation.lesions`` does.

    ``ndimage.label`` numbers components in raster order, and the report labels them in a
    box around the tumours: a shift that keeps raster order, hence the same numbers.
    """
    image = nib.load(str(label_path))
    tumour = np.asarray(image.dataobj) == 2
    components, count = label_components(tumour)
    centroids = ndimage.center_of_mass(tumour, components, range(1, count + 1))
    affine = image.affine
    return [affine[:3, :3] @ np.asarray(c) + affine[:3, 3] for c in centroids]


def summarize_visibility(rows: Sequence[dict[str, Any]], min_diameter_mm: float = 10.0) -> dict:
    """Recall (IoU > 0.5) per size bin and contrast-to-noise bin.

    Args:
        rows: :func:`lesion_visibility` rows.
        min_diameter_mm: lesions smaller than this are left out (the demo's bar counts
            lesions of 10 mm or more).

    Returns:
        ``{"min_diameter_mm", "n_lesions", "bins": [{"size", "cnr", "n", "detected",
        "recall"}, ...]}`` with only the bins that hold lesions.
    """
    kept = [r for r in rows if r["diameter_mm"] >= min_diameter_mm]
    groups: dict[tuple[str, str], list[bool]] = {}
    for row in kept:
        key = (row["size_bin"], cnr_bin(row["cnr"]))
        groups.setdefault(key, []).append(bool(row["detected_iou"]))
    size_order = {name: i for i, name in enumerate(SIZE_BINS)}
    cnr_order = {name: i for i, name in enumerate(cnr_bins())}
    bins = []
    for (size, cnr), hits in sorted(
        groups.items(), key=lambda kv: (size_order[kv[0][0]], cnr_order[kv[0][1]])
    ):
        bins.append(
            {"size": size, "cnr": cnr, "n": len(hits), "detected": sum(hits),
             "recall": sum(hits) / len(hits)}
        )  # fmt: skip
    return {"min_diameter_mm": min_diameter_mm, "n_lesions": len(kept), "bins": bins}


def write_visibility(
    report_dir: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike
) -> dict:
    """Write ``lesion_visibility.json`` (rows and summary) and return the summary."""
    rows = lesion_visibility(report_dir, data_dir)
    summary = summarize_visibility(rows)
    write_json({"summary": summary, "lesions": rows}, out)
    return summary
