"""Segment one CT scan: load, check, pre-process, sliding window, invert, post-process.

The steps are MONAI components built by ``configs/common.yaml``; this class only runs
them in order for one scan and times each stage, so a folder run (``folder_run.py``) and
the notebook entry point (``pipeline.predict``) share exactly the same path.

Order matters for speed and for exactness: the network's output is turned into a label
map (argmax) on the network's grid first, and only that uint8 map is brought back to the
scan's grid, by nearest neighbour: a per-axis index map (``inversion.py``) when the
pre-processing is axis-aligned (it is for this bundle's configs), MONAI's ``Invertd``
otherwise. Resampling float probabilities of three classes at 512 x 512 x N costs more
than the network on a CPU.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import Compose, Invertd

from pipeline.inference.dicom_series import read_series
from pipeline.inference.inferers import FlipTTAInferer
from pipeline.inference.inversion import (
    IndexMaps,
    axis_index_maps,
    block_sizes,
    invert_labels,
    invert_probabilities,
)
from pipeline.inference.prediction import (
    NetworkOutput,
    PendingScan,
    Prediction,
    class_labels,
    grid_spacing,
)
from pipeline.inference.prefetch import LoadedScan, read_scan
from pipeline.inference.quality import FAIL, WARN, QualityControl, QualityReport
from pipeline.inference.scans import (
    InvalidScanError,
    Scan,
    check_ct_volume,
    check_dicom_folder,
    check_nifti_header,
    describe_error,
)
from pipeline.nets.precision import autocast_for
from pipeline.transforms.lesion_filter import LesionFilter
from pipeline.transforms.postprocess_blocks import (
    keep_largest_liver_blocks,
    postprocess_label_blocks,
)
from pipeline.transforms.spacing import voxel_sizes

logger = logging.getLogger(__name__)

STAGES = ("load", "preprocess", "network", "invert", "postprocess")
"""Timed stages of :meth:`ScanPredictor.predict`; the folder run adds "quantify" and "save"."""


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall time of the ``with`` block to ``seconds[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


class ScanPredictor:
    """Runs the configured MONAI components on one scan.

    Args:
        network: the network, weights loaded, in eval mode.
        loading: transforms that read ``{"image": path}`` into a channel-first MetaTensor
            (LoadImaged, EnsureChannelFirstd).
        preprocessing: invertible transforms to the network's grid and intensities
            (Orientationd, Spacingd, CropForegroundd, ScaleIntensityRanged ...).
        inferer: returns class scores for a (1, C, X, Y, Z) batch (SlidingWindowInferer,
            possibly wrapped in FlipTTAInferer for mirror test-time augmentation).
        postprocessing: transforms on ``{"pred": labels}`` on the scan's grid
            (PostprocessLabelsd).
        device: where the network runs.
        amp: float16 autocast on CUDA (ignored on CPU).
        cpu_bf16: bfloat16 autocast on the CPU (``pipeline.nets.precision``; ignored on
            CUDA).
        keep_probabilities: also return class probabilities on the scan's grid (costly).
        lesion_filter: confidence rules applied on the network's grid before inversion
            (:class:`~pipeline.transforms.lesion_filter.LesionFilter`; default: off).
        quality: the quality control of each scan and mask (default thresholds when None).
    """

    QC_KEY = "qc"
    """Data key of the scan's quality report, from :meth:`load` to :meth:`finish`."""

    def __init__(
        self,
        network: torch.nn.Module,
        loading: Callable[[dict[str, Any]], dict[str, Any]],
        preprocessing: Compose,
        inferer: Inferer,
        postprocessing: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        cpu_bf16: bool = False,
        keep_probabilities: bool = False,
        lesion_filter: LesionFilter | None = None,
        quality: QualityControl | None = None,
    ) -> None:
        self.network = network.eval()
        self.loading = loading
        self.preprocessing = preprocessing
        # Always through FlipTTAInferer (one pass when TTA is off): it returns softmax
        # probabilities whatever the inner inferer returns.
        self.inferer = (
            inferer
            if isinstance(inferer, FlipTTAInferer)
            else FlipTTAInferer(inferer, enabled=False)
        )
        self.postprocessing = postprocessing
        self.device = torch.device(device)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.cpu_bf16 = bool(cpu_bf16) and self.device.type == "cpu"
        self.keep_probabilities = keep_probabilities
        self.lesion_filter = lesion_filter or LesionFilter()
        self.quality = quality or QualityControl()
        self._invert = Invertd(
            keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=True
        )
        self._invert_probabilities = Invertd(
            keys="prob", transform=preprocessing, orig_keys="image", nearest_interp=False
        )

    def with_postprocessing(
        self, postprocessing: Callable[[dict[str, Any]], dict[str, Any]] | None
    ) -> ScanPredictor:
        """The same network and steps with other post-processing (the network is shared)."""
        changed = copy.copy(self)
        changed.postprocessing = postprocessing
        return changed

    def load(self, scan: Scan) -> dict[str, Any]:
        """Read and check one scan; errors name the file and the problem."""
        if scan.kind == "dicom":
            check_dicom_folder(scan.path)
            # ITK would silently read one of several series, or a series with a missing
            # slice on a wrong grid: the headers are checked first.
            read_series(scan.path)
        header_notes: list[str] = []
        if scan.kind == "nifti":
            header_notes = check_nifti_header(scan.path)
        try:
            data = self.loading({"image": str(scan.path)})
        except Exception as err:  # readers raise many types; the cause is what matters
            raise InvalidScanError(f"{scan.path}: unreadable ({describe_error(err)})") from err
        check_ct_volume(data["image"], scan.path)
        report = self.quality.check_scan(data["image"], data["image"].affine)
        for note in header_notes:
            report.add(WARN, note)
        if report.verdict == FAIL:
            raise InvalidScanError(f"{scan.path}: quality control: {'; '.join(report.reasons)}")
        data[self.QC_KEY] = report
        return data

    def predict(self, scan: Scan, loaded: LoadedScan | None = None) -> Prediction:
        """Segment ``scan``; the result lies on the scan's grid, voxel for voxel.

        Args:
            scan: the scan.
            loaded: the scan already read by :meth:`load` (a folder run reads ahead).
        """
        return self.begin(scan, loaded).finish()

    def begin(self, scan: Scan, loaded: LoadedScan | None = None) -> PendingScan:
        """Load and run the network on ``scan``; labels come from ``.finish(...)``.

        Tuning finishes one network pass with several lesion filters.
        """
        loaded = loaded or read_scan(self.load, scan)
        data, seconds = loaded.data, {"load": loaded.seconds}
        output = self.forward(data, seconds)
        return PendingScan(
            lambda lesion_filter: self.finish(output, scan, dict(seconds), lesion_filter), output
        )

    def predict_loaded(
        self, data: dict[str, Any], scan: Scan, seconds: dict[str, float] | None = None
    ) -> Prediction:
        """Segment a scan already read by :meth:`load` (a cascade reads it once).

        Args:
            data: ``{"image": MetaTensor, ...}`` as :meth:`load` returns it; further keys
                (a cascade's liver box) go through the pre-processing with the image.
            scan: the scan, for error messages.
            seconds: stage times so far; this adds its own stages.
        """
        seconds = {} if seconds is None else seconds
        output = self.forward(data, seconds)
        return self.finish(output, scan, seconds)

    def forward(self, data: dict[str, Any], seconds: dict[str, float]) -> NetworkOutput:
        """Pre-process a loaded scan and run the network: probabilities on its grid."""
        original = (
            np.asarray(data["image"].affine, dtype=np.float64),
            tuple(data["image"].shape[1:]),
        )
        with timed(seconds, "preprocess"):
            data = self.preprocessing(data)
        with timed(seconds, "network"):
            probabilities = self._run_network(data["image"])
        return NetworkOutput(data, probabilities, *original)

    def finish(
        self,
        output: NetworkOutput,
        scan: Scan,
        seconds: dict[str, float],
        lesion_filter: LesionFilter | None = None,
    ) -> Prediction:
        """Labels from the network's output, on the scan's grid, post-processed.

        Args:
            output: what :meth:`forward` returned (unchanged by this call, so tuning can
                finish one network pass with several lesion filters).
            scan: the scan, for error messages.
            seconds: stage times so far; this adds its own stages.
            lesion_filter: the confidence rules (default: the predictor's own).
        """
        lesion_filter = self.lesion_filter if lesion_filter is None else lesion_filter
        probabilities = output.probabilities
        data = dict(output.data)
        with timed(seconds, "invert"):
            labels = class_labels(probabilities)
            # The confidence rules act where the probabilities are: the network's grid.
            labels = lesion_filter(labels, probabilities, grid_spacing(data["image"]))
            maps = axis_index_maps(data["image"], output.original_affine, output.original_shape)
        with timed(seconds, "postprocess"):
            labels, postprocessed = self._postprocess_on_network_grid(
                labels, maps, output.original_affine
            )
        with timed(seconds, "invert"):
            inverted = self._invert_labels(labels, data, output, maps)
            prob_out = None
            if self.keep_probabilities and maps is not None:
                prob_out = invert_probabilities(probabilities, maps)
            elif self.keep_probabilities:
                data["prob"] = MetaTensor(probabilities, meta=dict(data["image"].meta))
                prob_out = np.asarray(self._invert_probabilities(data)["prob"], np.float32)
        with timed(seconds, "postprocess"):
            if self.postprocessing is not None and not postprocessed:
                inverted = self.postprocessing({"pred": inverted})["pred"]
            labels_out = torch.as_tensor(inverted)[0]
            if labels_out.is_floating_point():  # Invertd's output; the index map's is uint8
                labels_out = labels_out.round()
            result = np.asarray(labels_out.cpu().numpy(), np.uint8)
        if result.shape != output.original_shape:  # Invertd restores the grid; guard it
            raise RuntimeError(
                f"{scan.path}: mask shape {result.shape} differs from the scan's "
                f"{output.original_shape}"
            )
        quality = copy.deepcopy(output.data.get(self.QC_KEY)) or QualityReport()
        self.quality.check_mask(result, output.original_affine, quality)
        return Prediction(result, output.original_affine, prob_out, seconds, quality=quality)

    def _postprocess_on_network_grid(
        self, labels: torch.Tensor, maps: IndexMaps | None, original_affine: np.ndarray
    ) -> tuple[torch.Tensor, bool]:
        """Post-processing done early, on the network's grid, where that is exact.

        When the inversion is a block map without gaps (``inversion.block_sizes``), every
        step but the morphology gives on the network's grid, with components weighted by
        their blocks, exactly the scan grid's result
        (:func:`~pipeline.transforms.postprocess_blocks.postprocess_label_blocks`): 12 million
        voxels to label instead of 79 million at 512 x 512 x 300. With morphology only
        the largest-liver step is done early, so that the scan grid's steps work in one
        liver's box.

        Returns:
            The labels, and whether they are post-processed in full (the scan grid's
            pass is then skipped).
        """
        transform = getattr(self.postprocessing, "transform", None)
        config = getattr(transform, "config", None)
        if maps is None or config is None:
            return labels, False
        sizes = block_sizes(maps, labels.shape[1:])
        if sizes is None:
            return labels, False
        # The scan's voxel size along the network's axes (maps[0]: the network axis of
        # each scan axis), for the tumours' volumes in mm^3.
        scan_spacing = voxel_sizes(original_affine)
        spacing = [0.0] * 3
        for scan_axis, network_axis in enumerate(maps[0]):
            spacing[network_axis] = float(scan_spacing[scan_axis])
        coarse = np.asarray(labels[0])
        done = postprocess_label_blocks(coarse, sizes, spacing, config)
        if done is not None:
            return torch.from_numpy(done)[None], True
        if not config.keep_largest_liver:
            return labels, False
        kept = keep_largest_liver_blocks(coarse, sizes)
        return (labels if kept is None else torch.from_numpy(kept)[None]), False

    def _invert_labels(
        self,
        labels: torch.Tensor,
        data: dict[str, Any],
        output: NetworkOutput,
        maps: IndexMaps | None = None,
    ) -> MetaTensor:
        """The label map on the scan's grid, as a (1, X, Y, Z) MetaTensor with its affine.

        A per-axis index map (``inversion.py``: 0.03 s and no sampling grid for a 512 x
        512 x 300 scan, against 11 s and 1 GB for ``Invertd``) whenever the
        pre-processing allows one; ``Invertd`` otherwise.
        """
        image = data["image"]
        fast = invert_labels(labels, image, output.original_affine, output.original_shape, maps)
        if fast is not None:
            return MetaTensor(
                torch.from_numpy(fast)[None], affine=torch.as_tensor(output.original_affine)
            )
        data = dict(data)
        data["pred"] = MetaTensor(labels, meta=dict(image.meta))
        return self._invert(data)["pred"]

    @torch.no_grad()
    def _run_network(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities (C, X, Y, Z) on the network's grid, on the CPU."""
        # A plain tensor: the network needs no MetaTensor bookkeeping on every op, and
        # the geometry needed for inversion stays in the data dict.
        plain = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        batch = plain.unsqueeze(0).to(self.device)
        with autocast_for(self.device, self.amp, self.cpu_bf16):
            scores = self.inferer(batch, self.network)
        return torch.as_tensor(scores)[0].float().cpu()
