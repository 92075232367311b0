"""Ignite handlers of the bundle: resumable checkpoints, early stopping, the time limit.

The per-epoch report (metrics.csv, TensorBoard) is ``epoch_report.py``.

Ignite's Checkpoint (with the atomic saver of ``checkpointing.py``) and MONAI's
CheckpointLoader do the saving and loading; what is added here is wiring they cannot get
from a declarative config without a circular reference (the trainer, and its AMP scaler,
are only known once the trainer exists).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping as IgniteEarlyStopping
from monai.handlers import CheckpointLoader, stopping_fn_from_metric

from pipeline.training.checkpointing import epoch_checkpoint
from pipeline.training.config_helpers import last_checkpoint

logger = logging.getLogger(__name__)


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
