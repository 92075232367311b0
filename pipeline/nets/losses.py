"""Segmentation losses by name, and the deep-supervision glue for the Ignite trainer.

    loss = build_loss("dice_focal")          # bundle: --loss_name dice_focal

Every loss takes logits ``(B, C, ...)`` and an index label map ``(B, 1, ...)`` (one-hot
inside, softmax over classes). Each is wrapped in :class:`StackedDeepSupervisionLoss`, a
no-op for one output, so a DynUNet with deep supervision (``--network_def#deep_supr_num
2``) trains without touching the loss entry.

Deep supervision and the trainer: in training mode DynUNet returns one tensor
``(B, 1 + deep_supr_num, C, ...)`` (the heads stacked, all up-sampled to full resolution);
in eval mode it returns ``(B, C, ...)``, so validation and inference see a normal output.
MONAI's ``DeepSupervisionLoss`` expects a list, so the wrapper unbinds the head axis.
``SupervisedTrainer`` keeps the stacked tensor as ``pred``; post-transforms and training
metrics would read the head axis as the class axis (softmax over heads, argmax to wrong
labels). :class:`FullResolutionPrediction`, added to the trainer's handlers, replaces
``pred`` by the full-resolution head right after the loss, before post-processing runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    DiceFocalLoss,
    DiceLoss,
    GeneralizedDiceLoss,
)
from monai.utils import CommonKeys
from torch.nn.modules.loss import _Loss

# Background, liver, tumour. In label-centred 96^3 crops (ratios 1:2:3) of the synthetic
# data, voxels are about 77 % background, 22 % liver and 1.5 % tumour, so unweighted
# cross-entropy is dominated by background. Inverse frequency relative to liver would be
# (0.29, 1, 15): a tumour weight of 15 makes the network paint tumour into every dark liver
# region and costs lesion precision, so tumour gets about the square-root value (3; sqrt
# gives 3.8). Background stays near inverse frequency (0.2) because most background voxels
# (air, fat, bone far from the liver) are easy, and the largest-component post-processing
# removes stray liver outside the organ. The Dice term is left unweighted: it is already a
# per-class ratio that ignores class size.
DEFAULT_CLASS_WEIGHTS = (0.2, 1.0, 3.0)


def known_losses() -> list[str]:
    """Names accepted by :func:`build_loss`."""
    return ["dice_ce", "dice_focal", "generalized_dice", "weighted_dice_ce"]


class WeightedDiceCELoss(_Loss):
    """Dice loss plus class-weighted cross-entropy.

    MONAI's ``DiceCELoss(weight=...)`` applies the class weights to both terms; here they
    act on the cross-entropy only, where the voxel imbalance matters.

    Args:
        class_weights: cross-entropy weight per class (background, liver, tumour).
        include_background: include class 0 in the Dice term.
        batch: pool the Dice over the batch before dividing (steadier for rare tumour).
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
    """

    def __init__(
        self,
        class_weights: Sequence[float] = DEFAULT_CLASS_WEIGHTS,
        include_background: bool = True,
        batch: bool = True,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(
            include_background=include_background, to_onehot_y=True, softmax=True, batch=batch
        )
        self.register_buffer("class_weights", torch.as_tensor(class_weights, dtype=torch.float))
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of logits ``(B, C, ...)`` against an index label map ``(B, 1, ...)``."""
        if input.shape[1] != len(self.class_weights):
            raise ValueError(
                f"{len(self.class_weights)} class weights for {input.shape[1]} output channels"
            )
        ce = torch.nn.functional.cross_entropy(
            input, target[:, 0].long(), weight=self.class_weights.to(input)
        )
        return self.lambda_dice * self.dice(input, target) + self.lambda_ce * ce


class StackedDeepSupervisionLoss(DeepSupervisionLoss):
    """MONAI's ``DeepSupervisionLoss`` that also takes DynUNet's stacked training output.

    A tensor with one dimension more than the target, ``(B, heads, C, ...)``, is unbound
    along the head axis into the list ``DeepSupervisionLoss`` weighs (full resolution
    first, weight 1, then 0.5, 0.25... with ``weight_mode="exp"``). A normal output
    ``(B, C, ...)`` or a list passes through unchanged.

    Args:
        loss: loss of one output.
        weight_mode: "exp", "same" or "two" (see ``monai.losses.DeepSupervisionLoss``).
        weights: explicit weights per head, overriding ``weight_mode``.
    """

    def __init__(
        self, loss: _Loss, weight_mode: str = "exp", weights: list[float] | None = None
    ) -> None:
        super().__init__(loss, weight_mode=weight_mode, weights=weights)

    def forward(
        self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        """Weighted sum of the loss over the heads (or the loss of a single output)."""
        if isinstance(input, torch.Tensor) and input.ndim == target.ndim + 1:
            input = list(torch.unbind(input, dim=1))
        return super().forward(input, target)


class FullResolutionPrediction:
    """Ignite handler: after the loss, keep only the full-resolution head as ``pred``.

    Attach it to a ``SupervisedTrainer`` (``train#handlers``) when training a network with
    deep supervision; it does nothing when ``pred`` has no head axis. It runs on
    ``LOSS_COMPLETED``, before decollation and post-processing (``MODEL_COMPLETED``) and
    before training metrics (``ITERATION_COMPLETED``), and the loss and its gradients are
    already computed from all heads by then.
    """

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's ``LOSS_COMPLETED`` event."""
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Replace a stacked ``(B, heads, C, ...)`` prediction by its first head."""
        output = engine.state.output
        pred, label = output.get(CommonKeys.PRED), output.get(CommonKeys.LABEL)
        if isinstance(pred, torch.Tensor) and isinstance(label, torch.Tensor):
            if pred.ndim == label.ndim + 1:
                output[CommonKeys.PRED] = pred[:, 0]


def build_loss(
    name: str = "dice_ce",
    include_background: bool = True,
    batch: bool = True,
    class_weights: Sequence[float] | None = None,
    deep_supervision_weight_mode: str = "exp",
    **kwargs: Any,
) -> _Loss:
    """Build a segmentation loss by name.

    Args:
        name: one of :func:`known_losses`:

            - ``dice_ce`` (default): Dice + cross-entropy (MONAI ``DiceCELoss``).
            - ``dice_focal``: Dice + focal loss (gamma 2), which down-weights voxels the
              network already classifies confidently.
            - ``generalized_dice``: Dice with class weights 1 / volume^2, so small tumours
              count as much as the large liver.
            - ``weighted_dice_ce``: Dice + class-weighted cross-entropy
              (:class:`WeightedDiceCELoss`, weights ``class_weights``).
        include_background: include class 0 in the Dice term.
        batch: pool Dice numerator and denominator over the batch (patches without tumour
            then do not produce a 0/0 tumour Dice).
        class_weights: cross-entropy weights per class for ``weighted_dice_ce`` (default
            ``DEFAULT_CLASS_WEIGHTS`` = background 0.2, liver 1, tumour 3), or focal
            weights for ``dice_focal``.
        deep_supervision_weight_mode: weighting of deep-supervision heads ("exp", "same",
            "two"); irrelevant for networks with one output.
        **kwargs: passed to the MONAI loss (``gamma``, ``lambda_dice``...).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    key = name.lower()
    common = {"include_background": include_background, "batch": batch}
    base: _Loss
    if key == "dice_ce":
        base = DiceCELoss(to_onehot_y=True, softmax=True, **common, **kwargs)
    elif key == "dice_focal":
        kwargs.setdefault("gamma", 2.0)
        if class_weights is not None:
            kwargs["weight"] = torch.as_tensor(class_weights, dtype=torch.float)
        base = DiceFocalLoss(to_onehot_y=True, softmax=True, **common, **kwargs)
    elif key == "generalized_dice":
        base = GeneralizedDiceLoss(to_onehot_y=True, softmax=True, **common, **kwargs)
    elif key == "weighted_dice_ce":
        weights = DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights
        base = WeightedDiceCELoss(class_weights=weights, **common, **kwargs)
    else:
        raise ValueError(f"unknown loss name {name!r}; known: {known_losses()}")
    return StackedDeepSupervisionLoss(base, weight_mode=deep_supervision_weight_mode)
