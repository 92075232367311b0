"""Score a checkpoint on a split of the training data set (``configs/evaluate.yaml``).

The scans are segmented by exactly the inference pipeline (``configs/inference.yaml``
with the training config's network and geometry), so the masks are on the original grid
after inversion, and then scored by :mod:`pipeline.evaluation.scoring` into the usual report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.bundle import config_file
from pipeline.evaluation.pairing import pairs_from_datalist
from pipeline.evaluation.report.model import collect_provenance
from pipeline.evaluation.report.pages import format_class_table
from pipeline.evaluation.scoring import EvaluationResult, evaluate_pairs
from pipeline.inference.api import build_predictor
from pipeline.inference.folder_run import FolderRun
from pipeline.io import write_json

logger = logging.getLogger(__name__)


def split_records(
    datalist: Mapping[str, Sequence[Mapping[str, Any]]], split: str
) -> tuple[str, list[Mapping[str, Any]]]:
    """The records of ``split``; the validation split when a test split is asked but empty.

    Returns:
        The split actually used and its records.

    Raises:
        ValueError: the split is unknown, or it and the fallback are empty.
    """
    if split not in ("test", "validation", "training"):
        raise ValueError(f"eval_split must be test, validation or training, got {split!r}")
    records = list(datalist.get(split) or [])
    if not records and split == "test":
        logger.warning("the data set has no test split; scoring the validation split instead")
        split, records = "validation", list(datalist.get("validation") or [])
    if not records:
        raise ValueError(f"the {split} split is empty: nothing to evaluate")
    return split, records


def segment_records(
    ckpt: str | os.PathLike,
    records: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    predictor_settings: Mapping[str, Any],
    *,
    overwrite: bool = True,
    progress: bool = True,
) -> tuple[Path, Any]:
    """Segment the scans of datalist records with the inference pipeline.

    Args:
        ckpt: the weights.
        records: datalist entries with ``image`` (and ``label``, unused here).
        out_dir: gets ``cases.json`` (what was segmented) and ``predictions/``.
        predictor_settings: inference.yaml ids, nested ones as ``postprocess#...``.
        overwrite: segment again even when a prediction exists.
        progress: show a progress bar.

    Returns:
        The predictions folder and the finished :class:`~pipeline.inference.folder_run.FolderRun`.
    """
    out = Path(out_dir)
    # A datalist's "test" entries are what a folder run segments, whatever split they are.
    cases_file = write_json({"test": [dict(r) for r in records]}, out / "cases.json")
    predictor = build_predictor(ckpt, [config_file("inference.yaml")], **dict(predictor_settings))
    predictions = out / "predictions"
    run = FolderRun(
        predictor,
        cases_file,
        predictions,
        checkpoint=ckpt,
        settings={k: str(v) for k, v in predictor_settings.items()},
        overwrite=overwrite,
        progress=progress,
    ).run()
    return predictions, run


def evaluate_checkpoint(
    ckpt: str | os.PathLike,
    datalist: Mapping[str, Sequence[Mapping[str, Any]]],
    split: str,
    out_dir: str | os.PathLike,
    predictor_settings: Mapping[str, Any],
    *,
    label_map: Mapping[int, int] | None = None,
    postprocess: Mapping[str, Any] | None = None,
    training_metrics_csv: str | os.PathLike | None = None,
    configs: Sequence[str | os.PathLike] = (),
    overwrite: bool = True,
    progress: bool = True,
) -> EvaluationResult:
    """Segment a split with ``ckpt`` and write the LiTS-style report.

    Args:
        ckpt: the weights to score.
        datalist: ``{"training": [...], "validation": [...], "test": [...]}`` records
            with ``image`` and ``label``.
        split: "test" (falls back to "validation" when empty), "validation" or "training".
        out_dir: gets ``cases.json`` (what was scored), ``predictions/`` and ``report/``.
        predictor_settings: inference.yaml ids taken from the training config (network,
            geometry, window, sliding window, device...).
        label_map: remapping of the reference labels (e.g. ``{5: 1}``).
        postprocess: post-processing settings that differ from inference.yaml's
            (e.g. ``{"min_tumour_mm3": 65.0}`` chosen on validation).
        training_metrics_csv: the training run's ``metrics.csv``, for the curves.
        configs: config files to record (and hash) in the report's provenance.
        overwrite: segment again even when a prediction exists (a new checkpoint).
        progress: show progress bars.

    Returns:
        The evaluation result; ``result.ok`` is False when a case could not be scored.
    """
    out = Path(out_dir)
    used_split, records = split_records(datalist, split)
    if postprocess:
        predictor_settings = {
            **predictor_settings,
            **{f"postprocess#{key}": value for key, value in postprocess.items()},
        }
    predictions, run = segment_records(
        ckpt, records, out, predictor_settings, overwrite=overwrite, progress=progress
    )
    provenance = collect_provenance(
        checkpoint=ckpt,
        configs=list(configs),
        dataset=str(Path(records[0]["image"]).parent),
        split=used_split,
        predictions=str(predictions),
        segmentation_failures=run.failed,
    )
    result = evaluate_pairs(
        pairs_from_datalist(records, predictions),
        out / "report",
        label_map=label_map,
        provenance=provenance,
        training_metrics_csv=training_metrics_csv
        if training_metrics_csv and Path(training_metrics_csv).is_file()
        else None,
        progress=progress,
    )
    print(f"{used_split} split, {len(result.cases)} cases scored with {ckpt}:")
    print(format_class_table(result.summary))
    print(f"report: {result.files['html']}")
    return result


def evaluate_and_exit(*args: Any, **kwargs: Any) -> EvaluationResult:
    """:func:`evaluate_checkpoint`, exiting non-zero when a case failed (bundle entry)."""
    result = evaluate_checkpoint(*args, **kwargs)
    # A missing prediction is a scan that could not be segmented (predictions/failures.csv).
    if not result.ok or result.missing:
        raise SystemExit(
            f"{len(result.failures)} case(s) failed and {len(result.missing)} could not be "
            f"segmented; see {result.report_dir}"
        )
    return result
