"""Learning-rate schedules that end when the training budget ends, in epochs or in minutes.

A cosine or poly schedule planned over ``epochs`` only anneals when every epoch runs. Under
a wall-time limit (the demo's 12 minutes on two CPU cores) training stops at whatever
epoch fits: the recorded demo stopped at epoch 30 of 65, with the learning rate still at
56 % of its peak, so the kept model never saw the low-rate end of its schedule. Here the
schedule's progress is the larger of two fractions, epochs done out of ``epochs`` and
minutes used out of the time limit, so the rate reaches its end value when either budget
runs out. Epoch-level stepping and LambdaLR-style factors as torch's own schedulers; the
time term is what no torch, MONAI or Ignite scheduler offers, hence this module.

train.yaml passes the time limit only with ``lr_schedule_by_time: true``: on the demo's
cascade the annealed 12-minute refiner scored lower on test (model card, "What
mattered"), so by default the schedule is planned over the epochs alone, as before.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)

SHAPES = ("cosine", "poly", "constant")


def schedule_factor(shape: str, progress: float) -> float:
    """The learning rate as a share of its peak at ``progress`` (0 at the start, 1 at the end).

    Args:
        shape: "cosine" (half a cosine down to zero), "poly" (``(1 - progress) ** 0.9``, as
            nnU-Net) or "constant".
        progress: share of the training budget used, clipped to [0, 1].
    """
    progress = min(max(float(progress), 0.0), 1.0)
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "poly":
        return (1.0 - progress) ** 0.9
    if shape == "constant":
        return 1.0
    raise ValueError(f"lr schedule must be one of {SHAPES}, got {shape!r}")


class BudgetedSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Epoch-level schedule whose progress counts epochs and, under a time limit, minutes.

    Stepped once per epoch (``ScheduleStep``). After ``warmup_epochs`` of linear warm-up,
    progress is ``max(epochs after warm-up / epochs of the schedule, training seconds /
    time limit)``. The clock runs from the trainer's start (``start_clock``), so caching
    the data set before the first epoch does not count, as for ``TrainingTimeLimit``.
    A resumed run restores the epoch count from its checkpoint and starts a new clock with
    a new time limit, as ``TrainingTimeLimit`` does: the rate continues from the resumed
    epoch's place in the schedule and the new minutes.

    Args:
        optimizer: the optimizer whose rates are set.
        shape: "cosine", "poly" or "constant".
        epochs: total number of epochs.
        warmup_epochs: epochs of linear warm-up before the schedule.
        time_limit_minutes: the training's wall-time budget; 0 for epochs only.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        shape: str,
        epochs: int,
        warmup_epochs: int = 0,
        time_limit_minutes: float = 0.0,
    ) -> None:
        schedule_factor(shape, 0.0)  # an unknown shape fails here, before training
        self.shape = shape
        self.epochs = max(int(epochs), 1)
        self.warmup_epochs = max(int(warmup_epochs), 0)
        self.time_limit_seconds = max(float(time_limit_minutes), 0.0) * 60.0
        self._clock_start: float | None = None
        self.progress = 0.0
        super().__init__(optimizer)

    def start_clock(self) -> None:
        """Start counting training time (called when the trainer starts)."""
        self._clock_start = time.perf_counter()

    def seconds_trained(self) -> float:
        """Seconds since ``start_clock``; 0 before it."""
        return 0.0 if self._clock_start is None else time.perf_counter() - self._clock_start

    def _progress(self, epoch: int) -> float:
        by_epochs = (epoch - self.warmup_epochs) / max(self.epochs - self.warmup_epochs, 1)
        by_time = 0.0
        if self.time_limit_seconds > 0:
            by_time = self.seconds_trained() / self.time_limit_seconds
        return min(max(by_epochs, by_time, 0.0), 1.0)

    def get_lr(self) -> list[float]:  # noqa: D102 (torch's scheduler interface)
        epoch = self.last_epoch
        if epoch < self.warmup_epochs:
            factor = (epoch + 1) / (self.warmup_epochs + 1)
        else:
            self.progress = self._progress(epoch)
            factor = schedule_factor(self.shape, self.progress)
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        """The scheduler state (epoch, rates) without the settings and the clock.

        A resumed run keeps its own configured epochs and time limit (``--epochs`` may
        extend a run), and its own clock, which belongs to one process.
        """
        state = super().state_dict()
        for key in ("_clock_start", "shape", "epochs", "warmup_epochs", "time_limit_seconds"):
            state.pop(key, None)
        return state


class ScheduleStep:
    """Ignite handler: start a ``BudgetedSchedule``'s clock with the trainer, step it per epoch.

    Replaces MONAI's ``LrScheduleHandler`` for these schedules, which cannot start the
    clock. The rate and progress are logged at each step.

    Args:
        lr_scheduler: the schedule to drive.
    """

    def __init__(self, lr_scheduler: BudgetedSchedule) -> None:
        self.lr_scheduler = lr_scheduler

    def attach(self, trainer: Engine) -> None:
        """Start the clock when ``trainer`` starts; step after every epoch."""
        trainer.add_event_handler(Events.STARTED, lambda _: self.lr_scheduler.start_clock())
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._step)

    def _step(self, trainer: Engine) -> None:
        self.lr_scheduler.step()
        logger.info(
            "epoch %d: learning rate %.3g (schedule %.0f %% done)",
            trainer.state.epoch,
            self.lr_scheduler.get_last_lr()[0],
            100 * self.lr_scheduler.progress,
        )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    epochs: int,
    warmup_epochs: int = 0,
    time_limit_minutes: float = 0.0,
) -> BudgetedSchedule | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """The learning-rate schedule of ``train.yaml``'s ``lr_schedule``.

    Args:
        optimizer: the optimizer to schedule.
        name: "cosine" or "poly" (to zero when the epochs or the time limit run out),
            "constant", or "plateau" (halve when the key metric stops improving).
        epochs: total number of epochs.
        warmup_epochs: linear warm-up epochs before the schedule.
        time_limit_minutes: the training's time limit; 0 for none.
    """
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=5
        )
    if name not in SHAPES:
        raise ValueError(f"lr schedule must be cosine, poly, constant or plateau, got {name!r}")
    return BudgetedSchedule(optimizer, name, epochs, warmup_epochs, time_limit_minutes)
