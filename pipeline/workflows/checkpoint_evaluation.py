"""Score a checkpoint on a split of the training data set (``configs/evaluate.yaml``).

The scans are segmented in the same process by the inference pipeline (common.yaml's
``predictor``, built from the configs the model was trained with) and the inference loop
(:class:`~pipeline.inference.folder_run.FolderRun`), so the masks are on the original grid
after inversion, exactly as ``run inference`` writes them; they are then scored by
:mod:`pipeline.evaluation.scoring` into the usual report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.bundle import config_files_from_command_line
from pipeline.evaluation.pairing import pairs_from_datalist
from pipeline.evaluation.report.model import collect_provenance
from pipeline.evaluation.report.text import format_class_table
from pipeline.evaluation.scoring import EvaluationResult, evaluate_pairs
from pipeline.inference.folder_run import FolderRun
from pipeline.inference.predictor import ScanPredictor
from pipeline.inference.run_tables import RunSummary
from pipeline.inference.scans import scans_from_records
from pipeline.io import json_safe

logger = logging.getLogger(__name__)


def split_records(
    datalist: Mapping[str, Sequence[Mapping[str, Any]]], split: str
) -> tuple[str, list[Mapping[str, Any]]]:
    """The records of ``split``.

    A missing test split is an error, not a quiet fallback: the validation cases chose
    the checkpoint (and the post-processing), so their scores are not a test result.

    Returns:
        The split and its records.

    Raises:
        ValueError: the split is unknown or empty (for the test split, with what to do).
    """
    if split not in ("test", "validation", "training"):
        raise ValueError(f"eval_split must be test, validation or training, got {split!r}")
    records = list(datalist.get(split) or [])
    if not records and split == "test":
        raise ValueError(
            "the data set has no test split: its validation cases chose the checkpoint, so "
            "scoring them is no test. Hold out a test split (--test_fraction 0.2, the "
            'default, or a datalist\'s "test" list), or score validation knowingly with '
            "--eval_split validation"
        )
    if not records:
        raise ValueError(f"the {split} split is empty: nothing to evaluate")
    return split, records


def segment_records(
    predictor: ScanPredictor,
    records: Sequence[Mapping[str, Any]],
    predictions_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    progress: bool = True,
) -> RunSummary:
    """Segment the scans of datalist records by the inference loop (``FolderRun``).

    Args:
        predictor: the configured one-scan pipeline (common.yaml's ``predictor``).
        records: datalist entries with ``image`` (and ``label``, unused here).
        predictions_dir: gets the masks, case JSONs and run tables, as ``run inference``.
        checkpoint: the weights' file, recorded with its SHA-256.
        settings: what to record with every case (common.yaml's ``predictor_settings``).
        overwrite: segment again even when a prediction exists.
        progress: show a progress bar.
    """
    return FolderRun(
        predictor,
        scans_from_records(records),
        predictions_dir,
        checkpoint=checkpoint,
        settings=json_safe(dict(settings or {})),
        overwrite=overwrite,
        progress=progress,
    ).run()


def evaluate_checkpoint(
    predictor: ScanPredictor,
    datalist: Mapping[str, Sequence[Mapping[str, Any]]],
    split: str,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    settings: Mapping[str, Any] | None = None,
    label_map: Mapping[int, int] | None = None,
    training_metrics_csv: str | os.PathLike | None = None,
    configs: Sequence[str | os.PathLike] | None = None,
    overwrite: bool = True,
    progress: bool = True,
) -> EvaluationResult:
    """Segment a split with ``predictor`` and write the LiTS-style report.

    Args:
        predictor: the inference pipeline with the checkpoint's weights (common.yaml's
            ``predictor``, built from the same configs the model was trained with).
        datalist: ``{"training": [...], "validation": [...], "test": [...]}`` records
            with ``image`` and ``label``.
        split: "test" (refused when the data set has none), "validation" or "training".
        out_dir: gets ``predictions/`` and ``report/``.
        checkpoint: the weights' file, for the provenance and the case JSONs.
        settings: the inference settings to record (common.yaml's ``predictor_settings``).
        label_map: remapping of the reference labels (e.g. ``{5: 1}``).
        training_metrics_csv: the training run's ``metrics.csv``, for the curves.
        configs: config files to record (and hash) in the report's provenance (default:
            the ``--config_file`` list of the command line).
        overwrite: segment again even when a prediction exists (a new checkpoint).
        progress: show progress bars.

    Returns:
        The evaluation result; ``result.ok`` is False when a case could not be scored.
    """
    out = Path(out_dir)
    used_split, records = split_records(datalist, split)
    predictions = out / "predictions"
    run = segment_records(
        predictor,
        records,
        predictions,
        checkpoint=checkpoint,
        settings=settings,
        overwrite=overwrite,
        progress=progress,
    )
    provenance = collect_provenance(
        checkpoint=checkpoint,
        configs=list(config_files_from_command_line() if configs is None else configs),
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
    print(f"{used_split} split, {len(result.cases)} cases scored with {checkpoint}:")
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
