"""Helpers the bundle configs call: paths, data lists, metric inputs.

Each is more than one line of ``$`` Python, so it lives here rather than in YAML.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.data.checks import check_training_cases
from pipeline.data.datalist import discover_dataset
from pipeline.data.synth.dataset import write_synthetic_dataset
from pipeline.io import write_json

logger = logging.getLogger(__name__)


def load_datalist(
    dataset_dir: str | None,
    synthetic_dir: str,
    synthetic: dict[str, Any] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    label_map: dict[int, int] | None = None,
    skip_bad_cases: bool = False,
    output_dir: str | None = None,
    num_folds: int = 0,
    fold: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """The training / validation / test split of the user's data or of the synthetic default.

    Every case's label is checked against its image's grid first
    (:func:`pipeline.data.checks.check_training_cases`): a misaligned case stops the run
    with both files named, or with ``skip_bad_cases`` is left out and listed in
    ``output_dir/excluded_cases.json``.

    Args:
        dataset_dir: a folder or datalist JSON in any layout that discovery knows; None
            (or empty) uses a synthetic dataset generated once into ``synthetic_dir``.
        synthetic_dir: cache folder of the synthetic default dataset.
        synthetic: options of :func:`write_synthetic_dataset` (n_cases, shape, seed...).
        val_fraction: validation share for folders without a predefined split.
        test_fraction: held-out test share for folders without a predefined split.
        seed: seed of the split.
        label_map: label remapping recorded with the dataset.
        skip_bad_cases: leave misaligned cases out instead of stopping.
        output_dir: where ``excluded_cases.json`` and ``split.json`` (the case names of
            each split, so a report can say which cases were held out) go.
        num_folds: K of a K-fold cross-validation of the cases outside the test split
            (0: a plain hold-out split).
        fold: which fold validates (0 .. K - 1).
    """
    if not dataset_dir:
        options = {"n_cases": 12, "shape": (96, 96, 64), "seed": 0, "val_fraction": val_fraction}
        options.update(synthetic or {})
        options["shape"] = tuple(options["shape"])
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        # One process generates the data; the others wait and then read the same files.
        if not distributed or torch.distributed.get_rank() == 0:
            dataset_dir = str(write_synthetic_dataset(synthetic_dir, **options))
        if distributed:
            torch.distributed.barrier()
            dataset_dir = str(write_synthetic_dataset(synthetic_dir, **options))
    found = discover_dataset(dataset_dir, require_labels=True, label_map=label_map)
    if num_folds:
        split = found.kfold(num_folds, fold, seed=seed, test_fraction=test_fraction)
    else:
        split = found.split(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    split, bad = check_training_cases(split, skip_bad_cases=skip_bad_cases)
    if bad:
        listed = [dataclasses.asdict(case) for case in bad]
        for case in listed:
            logger.warning("left out of training: %s: %s", case["label"], case["problem"])
        if output_dir:
            write_json({"excluded": listed}, Path(output_dir) / "excluded_cases.json")
    if output_dir and (not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0):
        names = {
            part: [case.get("case", case["image"]) for case in cases]
            for part, cases in split.items()
        }
        fold_info = {"num_folds": num_folds, "fold": fold} if num_folds else {}
        write_json({"dataset": str(dataset_dir), "seed": seed, **fold_info, **names},
                   Path(output_dir) / "split.json")  # fmt: skip
    if not split["training"] or not split["validation"]:
        raise ValueError(
            f"{dataset_dir}: need at least one training and one validation case, found "
            f"{len(split['training'])} and {len(split['validation'])}"
        )
    return split


def liver_tumour_masks(
    classes: Sequence[str] = ("liver", "tumour"),
) -> Callable[[Any], tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """An ignite ``output_transform`` giving LiTS masks from one-hot predictions and labels.

    LiTS scores the liver as label >= 1 (liver and tumour together) and the tumour as
    label == 2, which one-hot channel 1 alone does not give. The returned function maps a
    batch (list of dicts with one-hot "pred" and "label", 3 channels) to channel-stacked
    masks in the order of ``classes``, ready for MONAI's MeanDice.
    """
    for name in classes:
        if name not in ("liver", "tumour"):
            raise ValueError(f"classes must be 'liver' and/or 'tumour', got {name!r}")

    def masks(onehot: torch.Tensor) -> torch.Tensor:
        parts = {"liver": onehot[1:2] + onehot[2:3], "tumour": onehot[2:3]}
        return torch.cat([parts[name] for name in classes]).clamp(max=1)

    def transform(batch: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        items = batch if isinstance(batch, list) else [batch]
        return [masks(i["pred"]) for i in items], [masks(i["label"]) for i in items]

    return transform


def split_key_metric(
    metrics: dict[str, Any], key_name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split validation metrics into the evaluator's key metric and the others.

    The key metric picks the best model (and drives early stopping and the plateau
    schedule), so an overlay changes it by name (``key_metric_name``) instead of
    redefining the metrics: the locator is kept by its liver Dice.

    Returns:
        ``({key_name: metric}, {other name: metric, ...})``.

    Raises:
        ValueError: ``key_name`` is not one of ``metrics``.
    """
    if key_name not in metrics:
        raise ValueError(
            f"key_metric_name {key_name!r} is not a validation metric: {sorted(metrics)}"
        )
    others = {name: metric for name, metric in metrics.items() if name != key_name}
    return {key_name: metrics[key_name]}, others


def last_checkpoint(ckpt_dir: str) -> str | None:
    """Path of the newest ``checkpoint_epoch=N.pt`` in ``ckpt_dir``, or None."""
    found = []
    for path in Path(ckpt_dir).glob("checkpoint_epoch=*.pt"):
        match = re.search(r"epoch=(\d+)", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return str(max(found)[1]) if found else None
