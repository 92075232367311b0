"""Ignite handlers of the bundle: resumable checkpoints and the per-epoch report.

Ignite's Checkpoint (with the atomic saver of ``checkpointing.py``) and MONAI's
CheckpointLoader do the saving and loading; what is added here is wiring they cannot get
from a declarative config without a circular reference (the trainer, and its AMP scaler,
are only known once the trainer exists).
"""

from __future__ import annotations

import csv
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite import distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping as IgniteEarlyStopping
from monai.handlers import CheckpointLoader, from_engine, stopping_fn_from_metric

from pipeline.io import atomic_path
from pipeline.training.checkpointing import epoch_checkpoint
from pipeline.training.config_helpers import last_checkpoint

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


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The bare network inside DistributedDataParallel / DataParallel."""
    return network.module if hasattr(network, "module") else network


def named_handler(handler: Any) -> Any:
    """Return ``handler``: a handler list's entry for a handler defined under its own id.

    The best-model saver and early stopping are referred to by ResumableCheckpoint too;
    MONAI's workflow check wants each entry of a handler list to be a ``_target_`` dict,
    not a bare ``@id`` reference.
    """
    return handler


class GlobalRandomState:
    """Python's, NumPy's and torch's global random generators, as a checkpointable object.

    MONAI's random transforms draw from generators of their own, seeded by
    ``set_determinism`` at start: after a resume they repeat the first epochs' draws.
    """

    def state_dict(self) -> dict[str, Any]:
        """The three generators' states (plain lists and tensors: ``weights_only`` loads it)."""
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": list(random.getstate()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set the three generators to ``state``."""
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


class ResumableCheckpoint:
    """Save the last epoch's full training state each epoch; resume from it on request.

    The checkpoint holds the network, optimizer, LR scheduler, trainer state (epoch and
    iteration), with AMP the gradient scaler, and the objects of ``state_of`` (the best
    metric so far, the early-stopping counter, the random generators), so ``resume:
    true`` continues at the next epoch exactly and ``model.pt`` is only ever replaced by
    a better model. Only rank 0 writes (ignite's DiskSaver).

    Args:
        ckpt_dir: folder of ``checkpoint_epoch=N.pt`` (only the newest is kept).
        network: the trained network (DDP-wrapped or not).
        optimizer: its optimizer.
        lr_scheduler: its LR scheduler, or None.
        resume: load the newest checkpoint of ``ckpt_dir`` when training starts.
        device: where to map the loaded tensors (a CUDA checkpoint loads on CPU).
        state_of: further objects with ``state_dict`` / ``load_state_dict``, by name. A
            checkpoint written before one of them existed resumes without it (named in
            the log).
    """

    def __init__(
        self,
        ckpt_dir: str,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        resume: bool = False,
        device: str | torch.device = "cpu",
        state_of: dict[str, Any] | None = None,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.resume = resume
        self.device = device
        self.state_of = dict(state_of or {})
        self.resumed_from: str | None = None

    def attach(self, engine: Engine) -> None:
        """Attach saving (and loading when resuming) to the trainer ``engine``."""
        objects: dict[str, Any] = {
            "model": _unwrap(self.network),
            "optimizer": self.optimizer,
            "trainer": engine,
        }
        if self.lr_scheduler is not None:
            objects["lr_scheduler"] = self.lr_scheduler
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            objects["scaler"] = scaler
        objects.update(self.state_of)
        # A kill mid-write leaves a hidden temporary file (the checkpoint files are whole).
        for stale in Path(self.ckpt_dir).glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
        if self.resume:
            path = last_checkpoint(self.ckpt_dir)
            if path is None:
                logger.warning(
                    "resume requested but %s holds no checkpoint: starting anew", self.ckpt_dir
                )
            else:
                self.resumed_from = path
                logger.info("resuming from %s", path)
                stored = torch.load(path, map_location="cpu", weights_only=True).keys()
                missing = sorted(set(self.state_of) - set(stored))
                if missing:
                    logger.warning("%s holds no %s: resuming without", path, ", ".join(missing))
                to_load = {k: v for k, v in objects.items() if k not in missing}
                CheckpointLoader(path, to_load, map_location=torch.device(self.device)).attach(
                    engine
                )
        # Atomic, and the previous file is deleted only once this one is in place.
        checkpoint = epoch_checkpoint(self.ckpt_dir, objects)
        if self.resumed_from is not None:  # replaced by this run's first checkpoint
            checkpoint.save_handler.remove(Path(self.resumed_from).name)
        engine.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)


class EarlyStopping:
    """Stop training when the validation metric has not improved for ``patience`` validations.

    A thin wrapper of ignite's EarlyStopping: it needs the trainer, which a declarative
    config can only hand to the evaluator's handlers through a circular reference, so this
    handler is attached to the trainer and attaches the real one to the evaluator.
    (Ignite's own class, not MONAI's EarlyStopHandler: that one passes ignite the
    ``min_delta`` / ``cumulative_delta`` arguments that ignite 0.5.5 deprecates with a
    warning on every run.)

    Its counter and best score go into the epoch checkpoint (``state_dict``), so a
    resumed run keeps counting where it stopped.

    Args:
        evaluator: the validation engine whose metric is watched.
        patience: validations without improvement (by more than ``min_delta``) before
            stopping; 0 never stops.
        metric_name: the evaluator metric (higher is better).
        min_delta: the smallest change that counts as an improvement.
    """

    def __init__(
        self,
        evaluator: Engine,
        patience: int,
        metric_name: str = "val_mean_dice",
        min_delta: float = 0.001,
    ) -> None:
        if int(patience) < 0:
            raise ValueError(f"early stopping patience must be >= 0 (0: off), got {patience}")
        self.evaluator = evaluator
        self.patience = int(patience)
        self.metric_name = metric_name
        self.min_delta = min_delta
        self.handler: IgniteEarlyStopping | None = None

    def attach(self, trainer: Engine) -> None:
        """Watch the evaluator's metric and stop ``trainer`` when it stalls."""
        if self.patience == 0:
            return
        self.handler = IgniteEarlyStopping(
            patience=self.patience,
            score_function=stopping_fn_from_metric(self.metric_name),
            trainer=trainer,
            threshold=self.min_delta,
        )
        self.evaluator.add_event_handler(Events.COMPLETED, self.handler)

    def state_dict(self) -> dict[str, Any]:
        """The counter and best score so far (empty when off)."""
        return dict(self.handler.state_dict()) if self.handler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue counting from a checkpoint's ``state``."""
        if self.handler is not None and state:
            self.handler.load_state_dict(state)


class TrainingTimeLimit:
    """Stop training at the end of the last epoch that fits in ``minutes`` of wall time.

    Checked at each epoch's end (after that epoch's validation and checkpoint): when one
    more epoch of the mean length so far would overrun the budget, training ends there.
    If that epoch was not a validation epoch, it is validated before the end, so the
    epochs since the last validation can still give the best model (``model.pt``): on a
    machine a third slower, a 12-minute run that validates every 10 epochs stopped at
    epoch 19 and kept the model of epoch 10. Ignite's TimeLimit stops mid-epoch instead,
    which loses the partial epoch's work, so this small variant is written here.

    Args:
        minutes: the wall-time budget of the training run.
        evaluator: the validation engine (``validate#evaluator``), run once more at a stop
            that falls between validations; None: no final validation.
    """

    def __init__(self, minutes: float, evaluator: Engine | None = None) -> None:
        if float(minutes) <= 0:
            raise ValueError(f"the time limit must be positive, got {minutes} minutes")
        self.seconds = float(minutes) * 60.0
        self.evaluator = evaluator
        self._start = 0.0
        self._epochs = 0

    def attach(self, trainer: Engine) -> None:
        """Start the clock when ``trainer`` starts; check it after every epoch."""
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _started(self, _: Engine) -> None:
        self._start, self._epochs = time.perf_counter(), 0

    def _check(self, trainer: Engine) -> None:
        self._epochs += 1
        elapsed = time.perf_counter() - self._start
        if elapsed + elapsed / self._epochs <= self.seconds:
            return
        epoch = trainer.state.epoch
        logger.info(
            "time limit: %.1f of %.1f min used after epoch %d; stopping",
            elapsed / 60,
            self.seconds / 60,
            epoch,
        )
        # MONAI's evaluator ends a run with state.epoch at the trainer epoch it was given.
        if self.evaluator is not None and self.evaluator.state.epoch != epoch:
            logger.info("validating epoch %d, the last one, before stopping", epoch)
            self.evaluator.run(epoch)
        trainer.terminate()


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
