"""Quality control of each scan and its mask: a pass / warn / fail verdict with reasons.

A scan can be a valid 3D volume and still not be what the network was made for: a
constant volume, stored values without their rescale (0-4095), a header whose voxel size
is stale, three slices. The network then returns a plausible-looking mask (an 8 L
"liver", or none at all). These checks look at what a CT of an abdomen in HU must be,
and at whether the mask is a plausible liver:

* ``fail`` (the case is listed in failures.csv and not segmented): the scan cannot be CT
  in HU: constant, or no value below zero at all with values above 1000 (raw stored
  values; CT has air at -1000 HU);
* ``warn`` (segmented, flagged in the case's JSON and the tables): no air at all (a tight
  crop, or not CT); a body narrower or wider than an abdomen (a stale voxel size makes
  the body 8 times too small); less z extent than the network's window; a predicted
  liver outside the plausible volume range; a liver touching the scan's first or last
  slice along an axis (the field of view cuts it, so its volume is too small); a liver
  whose centre lies to the patient's left of the body's centre (the liver lies on the
  right in all but situs inversus, about 1 in 10,000: a header whose left and right are
  swapped, or another organ segmented as liver).

Written by hand: no maintained library checks CT inputs for these conditions. The
thresholds live in ``common.yaml`` (``qc``) and are documented there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.geometry import superior_voxel_axis

PASS, WARN, FAIL = "pass", "warn", "fail"
_ORDER = {PASS: 0, WARN: 1, FAIL: 2}
_MAX_SAMPLED_VOXELS = 2_000_000  # statistics on a strided subsample: cheap at 512^2 x 800


@dataclass
class QualityReport:
    """The verdict on one scan and its mask, and why.

    Attributes:
        verdict: ``pass``, ``warn`` or ``fail`` (the worst of the reasons).
        reasons: one line per finding, ``"warn: ..."`` or ``"fail: ..."``.
    """

    verdict: str = PASS
    reasons: list[str] = field(default_factory=list)
    # The body's centre in world mm (RAS: +x is the patient's right), from check_scan,
    # for check_mask's side check; not part of the JSON.
    body_centre_mm: np.ndarray | None = field(default=None, repr=False, compare=False)

    def add(self, level: str, reason: str) -> None:
        """Record a finding at ``level`` (``warn`` or ``fail``)."""
        self.reasons.append(f"{level}: {reason}")
        if _ORDER[level] > _ORDER[self.verdict]:
            self.verdict = level

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"verdict": ..., "reasons": [...]}``."""
        return {"verdict": self.verdict, "reasons": list(self.reasons)}


def edge_axes(mask: np.ndarray) -> list[int]:
    """The array axes along which ``mask`` (any non-zero voxel) touches the first or last slice."""
    touching = []
    for axis in range(mask.ndim):
        # Slices are views; np.take would first copy a mask that is not C-ordered whole
        # (6 s for the six faces of a Fortran-ordered 512 x 512 x 300 mask).
        first = mask[(slice(None),) * axis + (0,)]
        last = mask[(slice(None),) * axis + (-1,)]
        if first.any() or last.any():
            touching.append(axis)
    return touching


def _extent_mm(mask: np.ndarray, spacing: np.ndarray) -> list[float]:
    """The length in mm of ``mask``'s bounding box along each array axis."""
    lengths = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lengths.append(float(present[-1] - present[0] + 1) * float(spacing[axis]))
    return lengths


@dataclass
class QualityControl:
    """The checks and their thresholds (``qc`` in common.yaml).

    Args:
        air_hu: a voxel under this is air (CT: -1000 HU outside the body, in the lungs
            and bowel).
        min_air_fraction: under this share of air voxels the scan has no air: ``warn``.
        raw_values_max: no value under 0 but values above this: stored values without
            the rescale (CT in HU always has negative values): ``fail``.
        body_hu: a voxel over this is body (fat is -100, lung -850).
        min_body_mm / max_body_mm: the body's widest in-plane extent outside this range
            is not an abdomen (adults 250-450 mm; children from about 150): ``warn``.
        min_z_mm: less z extent than this (the network's window): ``warn``.
        min_liver_ml / max_liver_ml: a predicted liver outside this range: ``warn``
            (adult livers are 1-2.5 L; large tumour burdens reach 4 L).
        min_liver_right_mm: the predicted liver's centre less than this far to the
            patient's right of the body's centre (world x, RAS): ``warn``. Livers lie
            well to the right of it (the phantoms' 21-63 mm, the real CTs of
            ``../shared`` 69 and 73 mm). None: no side check.
        enabled: off skips every check (verdict ``pass``, no reasons).
    """

    air_hu: float = -900.0
    min_air_fraction: float = 0.001
    raw_values_max: float = 1000.0
    body_hu: float = -500.0
    min_body_mm: float = 150.0
    max_body_mm: float = 700.0
    min_z_mm: float = 0.0
    min_liver_ml: float = 300.0
    max_liver_ml: float = 5000.0
    min_liver_right_mm: float | None = 0.0
    enabled: bool = True

    def check_scan(self, image: Any, affine: Any) -> QualityReport:
        """The scan's verdict, from its intensities and extent in mm.

        Args:
            image: (1, X, Y, Z) or (X, Y, Z) values in HU (tensor or array).
            affine: the voxel-to-world matrix (mm).
        """
        report = QualityReport()
        if not self.enabled:
            return report
        volume = torch.as_tensor(image)
        volume = volume[0] if volume.ndim == 4 else volume
        step = _sampling_step(volume.numel())
        sample = volume[::step, ::step, ::step].float()
        low, high = float(sample.min()), float(sample.max())
        if high - low < 1.0:
            report.add(FAIL, f"constant image ({low:g}): not a CT")
            return report
        if low >= 0 and high > self.raw_values_max:
            report.add(
                FAIL,
                f"values {low:g} to {high:g} with none below 0: stored values without their "
                "rescale slope / intercept, or not CT in HU (air is -1000 HU)",
            )
            return report
        air = float((sample < self.air_hu).float().mean())
        if air < self.min_air_fraction:
            report.add(
                WARN,
                f"no air: {100 * air:.2f} % of voxels under {self.air_hu:g} HU (min "
                f"{low:g} HU): a crop inside the body, or not CT in HU",
            )
        matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
        spacing = np.linalg.norm(matrix, axis=0)
        axial = superior_voxel_axis(np.asarray(affine, dtype=np.float64))
        body = (sample > self.body_hu).numpy()
        if body.any():
            report.body_centre_mm = _world_centre(body, step, affine)
            extent = _extent_mm(body, spacing * step)
            widest = max(e for a, e in enumerate(extent) if a != axial)
            if not self.min_body_mm <= widest <= self.max_body_mm:
                report.add(
                    WARN,
                    f"the body is {widest:.0f} mm across, outside {self.min_body_mm:g}-"
                    f"{self.max_body_mm:g} mm for an abdomen: a stale voxel size in the "
                    f"header (spacing {np.round(spacing, 3).tolist()} mm)?",
                )
        z_mm = volume.shape[axial] * spacing[axial]
        if z_mm < self.min_z_mm:
            report.add(
                WARN,
                f"{volume.shape[axial]} slices cover {z_mm:.0f} mm, less than the network's "
                f"{self.min_z_mm:g} mm window: a liver (about 150 mm) may not fit",
            )
        return report

    def check_mask(self, labels: np.ndarray, affine: Any, report: QualityReport) -> None:
        """Add the mask's findings (liver volume, liver cut by the scan's edge) to ``report``."""
        if not self.enabled:
            return
        # Labels are 0, 1, 2: liver or tumour is every non-zero voxel, counted and tested
        # on the label map itself. A full-size mask (79 MB at 512 x 512 x 300) cost
        # 0.07-0.25 s, most of it the kernel's page faults for a fresh array.
        voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000
        liver_ml = float(np.count_nonzero(labels)) * voxel_ml
        if not self.min_liver_ml <= liver_ml <= self.max_liver_ml:
            report.add(
                WARN,
                f"predicted liver {liver_ml:.0f} mL, outside {self.min_liver_ml:g}-"
                f"{self.max_liver_ml:g} mL",
            )
        cut = edge_axes(labels)
        if cut:
            report.add(
                WARN,
                f"the liver touches the scan's edge (array axes {cut}): the field of view "
                "may cut it, and its volume is then too small",
            )
        if self.min_liver_right_mm is None or report.body_centre_mm is None or liver_ml == 0:
            return
        step = _sampling_step(labels.size)
        sample = labels[::step, ::step, ::step] > 0
        if not sample.any():
            return
        right_mm = float(_world_centre(sample, step, affine)[0] - report.body_centre_mm[0])
        if right_mm < self.min_liver_right_mm:
            side = (
                f"{-right_mm:.0f} mm to the patient's left of"
                if right_mm < 0
                else (f"only {right_mm:.0f} mm to the patient's right of")
            )
            report.add(
                WARN,
                f"the liver's centre lies {side} the body's centre: a liver lies on the "
                "right except in situs inversus; are left and right swapped in the "
                "header, or is another organ segmented as liver?",
            )


def _sampling_step(n_voxels: int) -> int:
    """The stride that leaves at most ``_MAX_SAMPLED_VOXELS`` of ``n_voxels``."""
    return max(1, int(np.ceil((n_voxels / _MAX_SAMPLED_VOXELS) ** (1 / 3))))


def _world_centre(mask: np.ndarray, step: int, affine: Any) -> np.ndarray:
    """The centre of ``mask`` (sampled every ``step`` voxels) in world mm."""
    voxel = np.array([index.mean() for index in np.nonzero(mask)]) * step
    matrix = np.asarray(affine, dtype=np.float64)
    return matrix[:3, :3] @ voxel + matrix[:3, 3]
