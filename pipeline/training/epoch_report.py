"""The per-validation report of training: metrics.csv, TensorBoard scalars, an overlay image.

MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` log each metric on its own; this
handler writes the one CSV row per validation that the demo, sweeps and resumed runs read
(loss, Dice per class, learning rate, and where the time went), appending across resumes.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite import distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from pipeline.io import atomic_path

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "epoch",
    "loss",
    "liver_dice",
    "tumour_dice",
    "mean_dice",
    "lr",
    "seconds",
    "data_seconds_per_iter",
    "compute_seconds_per_iter",
)


class EpochReport:
    """Per validation: one row of ``metrics.csv``, TensorBoard scalars and an overlay image.

    Columns: epoch, mean training loss of the epoch, liver / tumour / mean Dice of the
    validation, learning rate, seconds since the start, and the mean time per iteration
    spent waiting for data and computing (to tell a data-bound run from a compute-bound one).

    Args:
        output_dir: folder of ``metrics.csv`` and the TensorBoard events.
        evaluator: the validation engine whose metrics are reported.
        optimizer: read for the learning rate.
        metric_names: evaluator metric names of liver, tumour and mean Dice.
        tensorboard: also log scalars and an overlay image to TensorBoard.
    """

    def __init__(
        self,
        output_dir: str,
        evaluator: Engine,
        optimizer: torch.optim.Optimizer,
        metric_names: tuple[str, str, str] = ("val_liver_dice", "val_tumour_dice", "val_mean_dice"),
        tensorboard: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.metric_names = metric_names
        self.tensorboard = tensorboard
        self.rows: list[dict[str, Any]] = []
        self._writer = None
        self._start = time.perf_counter()
        self._reset()

    def _reset(self, *_: Any) -> None:
        self._losses: list[float] = []
        self._data_time = self._compute_time = 0.0
        self._iterations = 0

    def attach(self, trainer: Engine) -> None:
        """Attach to the trainer and its evaluator (rank 0 only writes)."""
        if idist.get_rank() != 0:
            return
        self.trainer = trainer
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.rows = self._existing_rows()
        trainer.add_event_handler(Events.EPOCH_STARTED, self._reset)
        trainer.add_event_handler(Events.GET_BATCH_STARTED, self._tick, "_batch_start")
        trainer.add_event_handler(
            Events.GET_BATCH_COMPLETED, self._tock, "_data_time", "_batch_start"
        )
        trainer.add_event_handler(Events.ITERATION_STARTED, self._tick, "_iter_start")
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)
        self.evaluator.add_event_handler(Events.COMPLETED, self._on_validation)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.output_dir))

    def _tick(self, _: Engine, name: str) -> None:
        setattr(self, name, time.perf_counter())

    def _tock(self, _: Engine, total: str, start: str) -> None:
        setattr(self, total, getattr(self, total) + time.perf_counter() - getattr(self, start))

    def _on_iteration(self, engine: Engine) -> None:
        self._compute_time += time.perf_counter() - self._iter_start
        self._iterations += 1
        loss = from_engine(["loss"], first=True)(engine.state.output)
        self._losses.append(float(loss))

    def _existing_rows(self) -> list[dict[str, Any]]:
        path = self.output_dir / "metrics.csv"
        if not path.exists():
            return []
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    def _on_validation(self, evaluator: Engine) -> None:
        epoch = self.trainer.state.epoch
        metrics = evaluator.state.metrics
        liver, tumour, mean = (float(metrics.get(name, float("nan"))) for name in self.metric_names)
        n = max(self._iterations, 1)
        row = {
            "epoch": epoch,
            "loss": float(np.mean(self._losses)) if self._losses else float("nan"),
            "liver_dice": liver,
            "tumour_dice": tumour,
            "mean_dice": mean,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - self._start,
            "data_seconds_per_iter": self._data_time / n,
            "compute_seconds_per_iter": self._compute_time / n,
        }
        # A resumed run replaces rows of epochs it trains again.
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        with atomic_path(self.output_dir / "metrics.csv") as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                writer.writerows(self.rows)
        logger.info(
            "epoch %d: loss %.4f liver Dice %.4f tumour Dice %.4f mean %.4f "
            "(data %.3f s/it, compute %.3f s/it)",
            epoch,
            row["loss"],
            liver,
            tumour,
            mean,
            row["data_seconds_per_iter"],
            row["compute_seconds_per_iter"],
        )
        if self._writer is not None:
            for key in (
                "loss",
                "liver_dice",
                "tumour_dice",
                "mean_dice",
                "lr",
                "data_seconds_per_iter",
                "compute_seconds_per_iter",
            ):
                self._writer.add_scalar(f"epoch/{key}", row[key], epoch)
            overlay = validation_overlay(evaluator.state.output)
            if overlay is not None:
                self._writer.add_image(
                    "validation/reference_vs_prediction", overlay, epoch, dataformats="HWC"
                )
            self._writer.flush()


def validation_overlay(output: Any) -> np.ndarray | None:
    """An RGB axial slice of the last validation case: reference left, prediction right.

    Liver is drawn green and tumour red over the CT (already scaled to [0, 1]); the slice
    is the one with the most reference tumour, or liver when there is no tumour.
    """
    items = output if isinstance(output, list) else [output]
    if not items or not isinstance(items[0], dict) or "image" not in items[0]:
        return None
    item = items[0]
    image = item["image"][0].detach().float().cpu().numpy()
    label = item["label"].detach().cpu().numpy().argmax(0)
    pred = item["pred"].detach().cpu().numpy().argmax(0)
    per_slice = (label == 2).sum(axis=(0, 1)) * 1000 + (label >= 1).sum(axis=(0, 1))
    z = int(per_slice.argmax())

    def colour(mask: np.ndarray) -> np.ndarray:
        rgb = np.repeat(np.clip(image[:, :, z], 0, 1)[..., None], 3, axis=-1)
        rgb[mask[:, :, z] == 1] = 0.6 * rgb[mask[:, :, z] == 1] + 0.4 * np.array([0, 1, 0])
        rgb[mask[:, :, z] == 2] = 0.4 * rgb[mask[:, :, z] == 2] + 0.6 * np.array([1, 0, 0])
        return np.flipud(rgb.transpose(1, 0, 2))

    return np.concatenate([colour(label), colour(pred)], axis=1).astype(np.float32)
