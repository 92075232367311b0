"""Checkpoint files that a kill cannot break: the best model and the resumable epoch state.

MONAI's CheckpointSaver writes in place (``atomic=False``, so that files keep group read
permission), and ignite deletes the previous checkpoint before it writes the next one. A
kill at the wrong moment then leaves a truncated ``model.pt``, or no epoch checkpoint at
all to resume from. Here ignite's :class:`~ignite.handlers.Checkpoint` decides what to
keep, and :class:`AtomicDiskSaver` writes each file under a temporary name, renames it
into place (with the usual permissions, ``pipeline.io.atomic_path``), and only then
deletes the file it replaces.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite import distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler

from pipeline.io import atomic_path


class AtomicDiskSaver(BaseSaveHandler):
    """Write checkpoints atomically; delete replaced ones only after the new one is in place.

    Args:
        dirname: the checkpoint folder (created).
        filename: a fixed file name (``model.pt``) instead of ignite's generated ones.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename
        self._replaced: list[Path] = []

    def _path(self, filename: str) -> Path:
        return self.dirname / (self.filename or filename)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        """Save ``checkpoint`` (rank 0 only), then delete the files it replaces."""
        if idist.get_rank() != 0:
            return
        target = self._path(filename)
        with atomic_path(target) as tmp:
            torch.save(checkpoint, tmp)
        for old in self._replaced:
            if old != target:
                old.unlink(missing_ok=True)
        self._replaced = []

    def remove(self, filename: str) -> None:
        """Called by ignite before the next save: the deletion waits for that save."""
        self._replaced.append(self._path(filename))


class BestModelSaver:
    """Keep the best model by the evaluator's key metric in one file, ``model.pt``.

    Its record of the best score (``state_dict``) goes into the epoch checkpoint, so after
    ``--resume`` only a better model replaces the file.

    Args:
        save_dir: the checkpoint folder.
        save_dict: what the file holds, e.g. ``{"model": network, "trained_for": ...}``.
        filename: the file name.
    """

    def __init__(
        self, save_dir: str | os.PathLike, save_dict: Mapping[str, Any], filename: str = "model.pt"
    ) -> None:
        self.checkpoint = Checkpoint(
            to_save=dict(save_dict),
            save_handler=AtomicDiskSaver(save_dir, filename),
            score_function=lambda engine: float(engine.state.metrics[engine.state.key_metric_name]),
            score_name="key_metric",
            n_saved=1,
        )

    def attach(self, evaluator: Engine) -> None:
        """Save after each validation whose key metric beats the best so far."""
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.checkpoint)

    def state_dict(self) -> dict[str, Any]:
        """The best score so far and its file (ignite's record)."""
        return self.checkpoint.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's record of the best score."""
        self.checkpoint.load_state_dict(state)


def epoch_checkpoint(ckpt_dir: str | os.PathLike, objects: Mapping[str, Any]) -> Checkpoint:
    """The resumable state as ``checkpoint_epoch=N.pt``, only the newest kept.

    The name is the one MONAI's CheckpointSaver gives, so ``last_checkpoint`` finds files
    of older runs too.
    """
    return Checkpoint(
        to_save=dict(objects),
        save_handler=AtomicDiskSaver(ckpt_dir),
        filename_prefix="",
        score_function=lambda engine: engine.state.epoch,
        score_name="epoch",
        n_saved=1,
    )
