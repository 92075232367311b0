"""``pipeline.predict``: segment one scan from a notebook, with the bundle's own pipeline.

Example:
    >>> import pipeline
    >>> result = pipeline.predict("scan.nii.gz", ckpt="bundles/liver_tumor/models/model.pt")
    >>> result.labels.shape, result.quantification["liver_volume_ml"]

The components come from ``configs/common.yaml`` (plus any overlays), so a notebook
gets exactly what ``run inference`` writes for the same scan and checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bundle import bundle_root_of, config_file
from pipeline.inference.scans import Scan, find_scans
from pipeline.io import save_nifti


@dataclass
class PredictResult:
    """The segmentation of one scan.

    Attributes:
        labels: uint8 (X, Y, Z) labels on the scan's grid: 0 background, 1 liver, 2 tumour.
        affine: the scan's voxel-to-world affine (RAS mm).
        quantification: liver volume, tumours (volume, diameter, centroid), burden
            (see :func:`pipeline.inference.quantify.quantify`).
        seconds: wall time per stage.
        warnings: what to look at (a cascade that found no liver, a box grown).
        notes: decisions made on the way that are not warnings (the located region a
            cascade chose clearly, the mL it removed far from the located liver).
        qc: the quality-control verdict on the scan and its mask, ``{"verdict", "reasons"}``
            (see :mod:`pipeline.inference.quality`).
    """

    labels: np.ndarray
    affine: np.ndarray
    quantification: dict[str, Any]
    seconds: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    qc: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_predictor(
    ckpt: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    config_files: Sequence[str | os.PathLike] | None = None,
    **overrides: Any,
):
    """The configured :class:`~pipeline.inference.predictor.ScanPredictor`.

    Args:
        ckpt: weights file, or several whose probabilities are averaged (default: the
            config's ``ckpt``, the bundle's models/model.pt).
        config_files: configs to merge (default: the bundle's common.yaml, which defines
            the predictor); add the overlays the model was trained with (e.g. demo.yaml).
        **overrides: any config id, e.g. ``tta=True``, ``device="cpu"``.
    """
    from monai.bundle import ConfigParser

    files = [str(f) for f in (config_files or [config_file("common.yaml")])]
    parser = ConfigParser()
    parser.read_config(files)
    # As on the command line: the bundle root is the parent of the configs folder.
    overrides.setdefault("bundle_root", bundle_root_of(files))
    if isinstance(ckpt, (str, os.PathLike)):
        overrides["ckpt"] = str(ckpt)
    elif ckpt is not None:
        overrides["ckpt"] = [str(path) for path in ckpt]
    parser.update(overrides)
    return parser.get_parsed_content("predictor")


def predict(
    image: str | os.PathLike | np.ndarray,
    *,
    affine: np.ndarray | None = None,
    ckpt: str | os.PathLike | None = None,
    config_files: Sequence[str | os.PathLike] | None = None,
    predictor: Any = None,
    **overrides: Any,
) -> PredictResult:
    """Segment one CT scan and quantify liver and tumours.

    Args:
        image: a NIfTI file, a DICOM series folder, or a 3D array of HU values.
        affine: the array's voxel-to-world affine (RAS mm); required for an array.
        ckpt: weights file (default: the config's).
        config_files: configs to merge (default: the bundle's common.yaml).
        predictor: a predictor from :func:`build_predictor`, reused across calls (the
            other configuration arguments are then ignored).
        **overrides: config ids, e.g. ``tta=True``.

    Raises:
        ValueError: an array without an affine, or not 3D.
        pipeline.inference.scans.InvalidScanError: the scan is not a usable CT volume.
    """
    from pipeline.inference.quantify import quantify

    predictor = predictor or build_predictor(ckpt, config_files, **overrides)
    if isinstance(image, np.ndarray):
        if affine is None:
            raise ValueError("an array needs its affine (4x4 voxel-to-world RAS mm)")
        if image.ndim != 3:
            raise ValueError(f"expected a 3D array of HU values, got shape {image.shape}")
        # The loading transforms read files; a temporary NIfTI keeps one code path.
        with tempfile.TemporaryDirectory() as folder:
            path = save_nifti(np.asarray(image), np.asarray(affine), Path(folder) / "array.nii.gz")
            prediction = predictor.predict(Scan("array", path, "nifti"))
    else:
        scans = find_scans(image)
        if len(scans) != 1:
            raise ValueError(f"{image} holds {len(scans)} scans; predict takes one scan")
        prediction = predictor.predict(scans[0])
    return PredictResult(
        prediction.labels,
        prediction.affine,
        quantify(prediction.labels, prediction.affine),
        prediction.seconds,
        list(prediction.warnings),
        prediction.quality.to_dict(),
        list(prediction.notes),
    )
