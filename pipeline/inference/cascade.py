"""Two-stage liver-to-tumour cascade: find the liver coarsely, then segment inside its box.

A single network that sees the whole abdomen at 2 mm spends most of its steps outside the
liver, and a 5-9 mm lesion is two to four voxels across. The cascade (the approach of
nnU-Net's cascade and of TotalSegmentator's liver-lesion task) splits the job:

1. the **locator** (a :class:`~pipeline.inference.predictor.ScanPredictor` at about 4 mm)
   segments the whole scan; a liver-sized component of its liver (label >= 1) gives the
   box;
2. the **refiner** (a ScanPredictor at a finer voxel size, trained on liver boxes) reads
   the same loaded scan with the locator's liver as the ``liver_box`` key; its
   pre-processing (``configs/cascade.yaml``) crops image and box to the box plus a margin,
   and its inversion pads the result back onto the scan's grid (background outside).

The scan is read once. A scan in which the locator finds no liver gets an empty mask and
a warning in the case's JSON, never an exception. A liver that touches the scan's edge
(a field of view that cuts it) is flagged by the quality control of the final mask
(``quality.py``), as for a single-stage model.

The locator's largest component is not always the liver. On the real non-contrast 3 mm
CT of ``../shared`` the demo's locator labels 1.0-1.4 L of bladder and gluteal muscle as
liver, as much as the liver itself, and which of the two is larger (or whether a thin
bridge joins them) turns on half a voxel of resampling: a silent wrong answer of a
plausible volume. So every located component of at least ``min_liver_ml`` is a
candidate (the largest ``max_candidates``); when there are several, the refiner runs in
each one's box, and the box where the two stages agree on the most liver wins: the
refiner's liver inside the located region, in mL. The refiner's liver anywhere in the
box is not enough: refiners that see a liver-relative contrast or larger crops label
0.9-1.4 L of the pelvic box liver, nearly as much as of the real liver's, but there mostly
beside the located region (inside it: 355-574 mL against 759-885 mL in the liver's).
The case's JSON names every candidate and what the refiner found in it: as a note when
the largest is clearly confirmed, as a warning otherwise. With ``candidate_probe_mm`` the
candidates are compared in one refiner window each, a block around each one's deepest
point, and only the chosen one's whole box is refined: a false second region then costs
a window, not a box.

A coarse locator can miss part of a liver (on a real 3 mm CT the demo's found 933 of
1126 mL), and the refiner cannot segment what lies outside its box. When the refiner's
liver reaches the box's face (and the face is not the scan's edge), the box is grown
to hold the refiner's liver plus the margin, and the refiner runs once more
(``liver_box_growths`` of cascade.yaml; off until it is measured on real scans).

The refiner, for its part, can label liver well away from the located liver: on the real
non-contrast 3 mm CT, refiners trained on more phantoms label non-contrast muscle and
stomach wall in the box liver (1220-1245 mL against a reference of 1126). With
``keep_within_located_mm`` set, the refiner's labels farther than that from the chosen
located region are removed (the case's JSON says how many mL), so both stages must agree
that a voxel is near liver.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

from pipeline.inference.prediction import NetworkOutput, PendingScan, Prediction, grid_spacing
from pipeline.inference.predictor import ScanPredictor, timed
from pipeline.inference.prefetch import LoadedScan, read_scan
from pipeline.inference.quality import QualityReport
from pipeline.inference.scans import Scan
from pipeline.labels import LIVER
from pipeline.transforms.lesion_filter import LesionFilter
from pipeline.transforms.masks import label_components, within_distance

logger = logging.getLogger(__name__)

BOX_KEY = "liver_box"
"""The data key of the locator's liver mask, which the refiner's pre-processing crops to."""


def grown_box(
    box: np.ndarray, refined: np.ndarray, affine: np.ndarray, margin_mm: float
) -> np.ndarray | None:
    """The box to use instead of ``box`` when the refiner's liver reaches its crop's face.

    The refiner's crop is the bounding box of ``box`` plus ``margin_mm`` on each side,
    clipped to the scan. A refined liver that comes within a quarter of the margin of a
    face the clipping did not make (the scan's edge stays where it is) was probably cut by
    it.

    Args:
        box: the mask the crop was made from (the located liver), on the scan's grid.
        refined: the refiner's liver on the same grid.
        affine: the scan's voxel-to-world affine (for the voxel size).
        margin_mm: the crop's margin.

    Returns:
        ``box | refined``, or None when the refined liver stays clear of every face.
    """
    if not refined.any():
        return None
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    margin = np.ceil(margin_mm / spacing).astype(int)
    slack = np.maximum(margin // 4, 0)
    box_points, refined_points = np.nonzero(box), np.nonzero(refined)
    for axis, size in enumerate(box.shape):
        crop_lo = max(int(box_points[axis].min()) - margin[axis], 0)
        crop_hi = min(int(box_points[axis].max()) + margin[axis], size - 1)
        reaches_lo = crop_lo > 0 and refined_points[axis].min() <= crop_lo + slack[axis]
        reaches_hi = crop_hi < size - 1 and refined_points[axis].max() >= crop_hi - slack[axis]
        if reaches_lo or reaches_hi:
            return box | refined
    return None


def liver_candidates(
    liver: np.ndarray, voxel_ml: float, min_liver_ml: float, max_candidates: int
) -> list[tuple[np.ndarray, float]]:
    """The located liver's 26-connected components of at least ``min_liver_ml``.

    Args:
        liver: the locator's liver mask on the scan's grid.
        voxel_ml: one voxel's volume in mL.
        min_liver_ml: the smallest component that may be a liver.
        max_candidates: how many components to return at most.

    Returns:
        ``(mask, mL)`` per component, largest first.
    """
    components, count = label_components(liver)
    if count == 0:
        return []
    sizes = np.bincount(components.ravel())[1:] * voxel_ml
    order = [int(k) for k in np.argsort(-sizes, kind="stable") if sizes[k] >= min_liver_ml]
    return [(components == k + 1, float(sizes[k])) for k in order[:max_candidates]]


def probe_region(
    mask: np.ndarray, spacing: np.ndarray, size_mm: np.ndarray, coarse_mm: float = 4.0
) -> np.ndarray:
    """The part of ``mask`` inside a block of ``size_mm`` around its deepest voxel.

    The deepest voxel (farthest from the mask's surface) lies inside even a C-shaped
    liver, where its centroid may not. It is found on the mask sampled every
    ``coarse_mm`` or so (a full-resolution distance transform of a 512 x 512 x 300 scan
    takes seconds), over the mask's bounding box.

    Args:
        mask: a candidate's mask on the scan's grid.
        spacing: the voxel size along each array axis, in mm.
        size_mm: the block's extent along each array axis, in mm.
        coarse_mm: roughly the sampling step of the distance transform, in mm.

    Returns:
        The probe: ``mask`` inside the block, ``mask`` itself when it fits in the block.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    points = np.nonzero(mask)
    lo = np.array([int(p.min()) for p in points])
    hi = np.array([int(p.max()) + 1 for p in points])
    step = np.maximum(np.round(coarse_mm / spacing).astype(int), 1)
    sampled = mask[tuple(slice(a, b, s) for a, b, s in zip(lo, hi, step, strict=True))]
    # Padded by one: a mask that fills its bounding box still has a surface.
    depth = ndimage.distance_transform_edt(np.pad(sampled, 1), sampling=spacing * step)
    deepest = np.array(np.unravel_index(int(np.argmax(depth)), depth.shape)) - 1
    centre = lo + deepest * step
    half = np.floor(np.asarray(size_mm, dtype=np.float64) / spacing / 2).astype(int)
    block = tuple(
        slice(max(int(c - h), 0), min(int(c + h) + 1, n))
        for c, h, n in zip(centre, half, mask.shape, strict=True)
    )
    probe = np.zeros_like(mask, dtype=bool)
    probe[block] = mask[block]
    return probe


CLEAR_MARGIN = 1.5
"""How many times more agreed liver (the refiner's, inside the located region) the largest
located region needs than any other for the choice to be a note rather than a warning. On
the real 3 mm CT, liver against pelvis: 685-885 against 136-469 mL for refiners trained as
the demo's, 759 against 574 mL for one trained on larger crops."""


class CascadePredictor:
    """Runs the locator on the whole scan and the refiner inside the liver's box.

    Args:
        locator: the coarse whole-scan predictor. Its post-processing should keep every
            liver component: the cascade chooses among them (``max_candidates``), and
            components under ``min_liver_ml`` never reach the box.
        refiner: the fine predictor; its pre-processing must crop to ``BOX_KEY``.
        min_liver_ml: a located liver smaller than this counts as no liver (an adult
            liver is 1-2.5 L; a few mL are a false positive, not a liver).
        margin_mm: the box's margin around the located liver (the refiner's
            pre-processing applies it; here it tells when the refiner's liver reaches
            the box's face).
        max_box_growths: how often the box may grow to the refiner's liver (0: never).
        max_candidates: how many liver-sized located components the refiner may try
            (1: the largest, unchecked).
        keep_within_located_mm: when set, the refiner's liver and tumour labels farther
            than this (mm) from the chosen located region are set to background; None
            keeps all of them. The probabilities (when kept) are the refiner's, unchanged.
        candidate_probe_mm: when set (mm along the array axes, after the margin), several
            candidates are compared in a block of this size around each one's deepest
            voxel (:func:`probe_region`), and only the chosen one's whole box is refined;
            None refines every candidate's whole box.
    """

    def __init__(
        self,
        locator: ScanPredictor,
        refiner: ScanPredictor,
        min_liver_ml: float = 100.0,
        margin_mm: float = 20.0,
        max_box_growths: int = 0,
        max_candidates: int = 3,
        keep_within_located_mm: float | None = None,
        candidate_probe_mm: tuple[float, float, float] | None = None,
    ) -> None:
        if min_liver_ml < 0:
            raise ValueError(f"min_liver_ml must be >= 0, got {min_liver_ml}")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        if margin_mm < 0 or max_box_growths < 0:
            raise ValueError(
                f"margin_mm and max_box_growths must be >= 0, got {margin_mm}, {max_box_growths}"
            )
        if keep_within_located_mm is not None and keep_within_located_mm < 0:
            raise ValueError(
                f"keep_within_located_mm must be >= 0 or None, got {keep_within_located_mm}"
            )
        self.locator = locator
        self.refiner = refiner
        self.min_liver_ml = float(min_liver_ml)
        self.margin_mm = float(margin_mm)
        self.max_box_growths = int(max_box_growths)
        self.max_candidates = int(max_candidates)
        self.keep_within_located_mm = (
            None if keep_within_located_mm is None else float(keep_within_located_mm)
        )
        self.candidate_probe_mm = None
        if candidate_probe_mm is not None:
            probe = np.asarray(candidate_probe_mm, dtype=np.float64)
            if probe.shape != (3,) or not (probe > 0).all():
                raise ValueError(
                    f"candidate_probe_mm must be three positive sizes (mm) or None, "
                    f"got {candidate_probe_mm}"
                )
            self.candidate_probe_mm = probe

    @property
    def device(self) -> torch.device:
        """Where the refiner's network runs."""
        return self.refiner.device

    @property
    def postprocessing(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """The refiner's post-processing (what tuning varies)."""
        return self.refiner.postprocessing

    def with_postprocessing(
        self, postprocessing: Callable[[dict[str, Any]], dict[str, Any]] | None
    ) -> CascadePredictor:
        """The same cascade with other post-processing of the refiner's output."""
        changed = copy.copy(self)
        changed.refiner = self.refiner.with_postprocessing(postprocessing)
        return changed

    def load(self, scan: Scan) -> dict[str, Any]:
        """Read and check one scan (once, for both stages)."""
        return self.refiner.load(scan)

    def predict(self, scan: Scan, loaded: LoadedScan | None = None) -> Prediction:
        """Segment ``scan`` in two stages; the result lies on the scan's grid.

        Args:
            scan: the scan.
            loaded: the scan already read by :meth:`load` (a folder run reads ahead).
        """
        return self.begin(scan, loaded).finish()

    def begin(self, scan: Scan, loaded: LoadedScan | None = None) -> PendingScan:
        """Both stages' networks on ``scan``; labels come from ``.finish(...)``."""
        loaded = loaded or read_scan(self.load, scan)
        data, seconds = loaded.data, {"load": loaded.seconds}
        image = data["image"]
        affine = np.asarray(image.affine, dtype=np.float64)
        with timed(seconds, "locate"):
            # A copy: the locator's transforms must not add to the image's transform
            # history, which the refiner's inversion reads.
            located = self.locator.predict_loaded({"image": image.clone()}, scan)
        seconds["locate_network"] = located.seconds.get("network", 0.0)
        voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
        liver = located.labels >= LIVER
        candidates = liver_candidates(liver, voxel_ml, self.min_liver_ml, self.max_candidates)
        if not candidates:
            liver_ml = float(np.count_nonzero(liver)) * voxel_ml
            message = (
                f"stage 1 found no liver ({liver_ml:.0f} mL located, no part of it "
                f"{self.min_liver_ml:g} mL or more): the mask is empty"
            )
            logger.warning("%s: %s", scan.path, message)
            empty = np.zeros(located.labels.shape, dtype=np.uint8)
            quality = data[ScanPredictor.QC_KEY]
            self.refiner.quality.check_mask(empty, affine, quality)
            return PendingScan(
                lambda _: Prediction(empty, affine, None, dict(seconds), [message], quality)
            )
        # A liver cut by the field of view is flagged by the quality control of the
        # final mask (quality.py), like a single-stage model's.
        warnings: list[str] = []
        notes: list[str] = []
        box, output = candidates[0][0], None
        if len(candidates) > 1:
            box, output, note, clear = self._choose_candidate(
                candidates, data, scan, seconds, voxel_ml
            )
            # A clear confirmation of the largest is a note; anything else a warning.
            (notes if clear else warnings).append(note)
            logger.log(logging.INFO if clear else logging.WARNING, "%s: %s", scan.path, note)
        for growth in range(self.max_box_growths + 1):
            if output is None:
                output = self._refine(data, box, seconds, last=growth == self.max_box_growths)
            if growth == self.max_box_growths:
                break
            refined = self.refiner.finish(output, scan, {}, LesionFilter()).labels >= LIVER
            grown = grown_box(box, refined, affine, self.margin_mm)
            if grown is None:
                break
            box, output = grown, None
            warnings.append(
                "the refiner's liver reached the edge of the located liver's box: the box "
                "was grown to it (stage 1 found too little liver) and the refiner run again"
            )
            logger.info("%s: %s", scan.path, warnings[-1])

        near_located = None
        if self.keep_within_located_mm is not None:
            with timed(seconds, "postprocess"):
                spacing = np.linalg.norm(affine[:3, :3], axis=0)
                near_located = within_distance(box, spacing, self.keep_within_located_mm)

        def finish(lesion_filter: LesionFilter | None) -> Prediction:
            prediction = self.refiner.finish(output, scan, dict(seconds), lesion_filter)
            if near_located is not None:
                self._keep_near(prediction, near_located, output, voxel_ml)
            prediction.warnings.extend(warnings)
            prediction.notes.extend(notes)
            return prediction

        return PendingScan(finish, output)

    def _keep_near(
        self,
        prediction: Prediction,
        near_located: np.ndarray,
        output: NetworkOutput,
        voxel_ml: float,
    ) -> None:
        """Set the prediction's labels outside ``near_located`` to background, in place.

        The quality control is redone on the mask that remains (liver volume, edge
        contact), and a note gives the mL removed.
        """
        outside = (prediction.labels > 0) & ~near_located
        removed = int(np.count_nonzero(outside))
        if removed == 0:
            return
        prediction.labels[outside] = 0
        quality = copy.deepcopy(output.data.get(ScanPredictor.QC_KEY)) or QualityReport()
        self.refiner.quality.check_mask(prediction.labels, prediction.affine, quality)
        prediction.quality = quality
        prediction.notes.append(
            f"{removed * voxel_ml:.1f} mL of the refiner's liver and tumour lay more than "
            f"{self.keep_within_located_mm:g} mm from stage 1's liver and were removed"
        )

    def _refine(
        self, data: dict[str, Any], box: np.ndarray, seconds: dict[str, float], last: bool
    ) -> NetworkOutput:
        """The refiner's network pass in the box of ``box`` (a mask on the scan's grid)."""
        image = data["image"]
        # A pass that may be followed by another gets a copy: pre-processing adds to the
        # image's transform history, which each pass's inversion reads.
        pass_data = dict(data, image=image if last else image.clone())
        pass_data[BOX_KEY] = MetaTensor(
            torch.from_numpy(box[None].astype(np.uint8)), meta=copy.deepcopy(image.meta)
        )
        return self.refiner.forward(pass_data, seconds)

    def _choose_candidate(
        self,
        candidates: list[tuple[np.ndarray, float]],
        data: dict[str, Any],
        scan: Scan,
        seconds: dict[str, float],
        voxel_ml: float,
    ) -> tuple[np.ndarray, NetworkOutput | None, str, bool]:
        """Run the refiner in each candidate's box; keep the one where both stages agree most.

        With ``candidate_probe_mm`` the refiner runs in each candidate's probe block
        instead of its whole box, and the chosen candidate's box is left to the caller.

        Returns:
            The chosen candidate's mask, the refiner's output in its box (None after
            probes), a note for the case's JSON that names every candidate and what the
            refiner found there, and whether the choice is clear: the largest located
            region, with at least ``CLEAR_MARGIN`` times any other's agreed liver.
        """
        spacing = np.asarray(grid_spacing(data["image"]))
        # Per candidate: the refiner's liver in the box, the part of it inside the
        # located region (or its probe block), both in mL, and the refiner's output.
        found: list[tuple[float, float, NetworkOutput]] = []
        for mask, _ in candidates:
            region = mask
            if self.candidate_probe_mm is not None:
                region = probe_region(mask, spacing, self.candidate_probe_mm)
            output = self._refine(data, region, seconds, last=False)
            refined = self.refiner.finish(output, scan, {}, LesionFilter()).labels >= LIVER
            agreed = np.count_nonzero(refined & region)
            found.append((np.count_nonzero(refined) * voxel_ml, agreed * voxel_ml, output))
        best = max(range(len(candidates)), key=lambda k: found[k][1])
        listed = ", ".join(
            f"{located_ml:.0f} mL (refined: {found[k][0]:.0f} mL, {found[k][1]:.0f} mL "
            "of it inside)"
            for k, (_, located_ml) in enumerate(candidates)
        )
        probed = ""
        if self.candidate_probe_mm is not None:
            block = " x ".join(f"{size:g}" for size in self.candidate_probe_mm)
            probed = f" (each refined in a {block} mm block around its deepest point)"
        note = (
            f"stage 1 found {len(candidates)} liver-sized regions{probed}, {listed}; both "
            f"stages agree on most liver in the one of {candidates[best][1]:.0f} mL, which "
            "was kept"
        )
        others = [agreed for k, (_, agreed, _) in enumerate(found) if k != best]
        clear = best == 0 and found[best][1] >= CLEAR_MARGIN * max(others)
        chosen_output = found[best][2] if self.candidate_probe_mm is None else None
        return candidates[best][0], chosen_output, note, clear
