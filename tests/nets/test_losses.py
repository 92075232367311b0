from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import IterationEvents, SupervisedTrainer
from monai.handlers import MeanDice, from_engine
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import Activationsd, AsDiscreted, Compose

from pipeline.nets.losses import (
    DEFAULT_CLASS_WEIGHTS,
    FullResolutionPrediction,
    StackedDeepSupervisionLoss,
    WeightedDiceCELoss,
    build_loss,
    known_losses,
)
from pipeline.nets.networks import build_network


def _label(shape=(2, 1, 16, 16, 16)) -> torch.Tensor:
    label = torch.zeros(shape)
    label[..., 4:12, 4:12, 4:12] = 1
    label[..., 6:9, 6:9, 6:9] = 2
    return label


def _logits(label: torch.Tensor, confidence: float) -> torch.Tensor:
    """Logits that favour the true class by ``confidence`` (0: uninformative)."""
    onehot = torch.cat([(label == c).float() for c in range(3)], dim=1)
    return confidence * (2 * onehot - 1)


@pytest.mark.parametrize("name", known_losses())
def test_every_loss_is_finite_differentiable_and_rewards_correct_predictions(name):
    label = _label()
    loss_fn = build_loss(name)
    logits = torch.zeros(2, 3, 16, 16, 16, requires_grad=True)
    loss = loss_fn(logits, label)
    loss.backward()
    assert torch.isfinite(loss) and loss.ndim == 0
    assert logits.grad.abs().sum() > 0
    good, bad = loss_fn(_logits(label, 5.0), label), loss_fn(_logits(label, -5.0), label)
    assert good < loss.detach() < bad


def test_dice_ce_is_monai_dice_ce_with_softmax_and_onehot_labels():
    label, logits = _label(), torch.randn(2, 3, 16, 16, 16)
    expected = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(logits, label)
    assert torch.allclose(build_loss("dice_ce")(logits, label), expected)


def test_weighted_dice_ce_weights_the_cross_entropy_only():
    torch.manual_seed(0)
    label, logits = _label(), torch.randn(2, 3, 16, 16, 16)
    assert DEFAULT_CLASS_WEIGHTS == (0.2, 1.0, 3.0)
    weights = torch.tensor(DEFAULT_CLASS_WEIGHTS)
    dice = DiceLoss(to_onehot_y=True, softmax=True, batch=True)(logits, label)
    # Weighted mean over voxels: sum_i w[y_i] * nll_i / sum_i w[y_i].
    nll = -torch.log_softmax(logits, dim=1).gather(1, label.long())
    w = weights[label.long()]
    expected = dice + (w * nll).sum() / w.sum()
    assert torch.allclose(build_loss("weighted_dice_ce")(logits, label), expected, atol=1e-6)
    heavier = build_loss("weighted_dice_ce", class_weights=(0.2, 1.0, 10.0))(logits, label)
    assert not torch.allclose(heavier, expected)
    with pytest.raises(ValueError, match="3 class weights for 2 output channels"):
        WeightedDiceCELoss()(logits[:, :2], label.clamp(max=1))


def test_unknown_loss_raises_with_the_known_names():
    with pytest.raises(ValueError, match="known: .*'dice_focal'.*'weighted_dice_ce'"):
        build_loss("tversky")


def test_deep_supervision_unbinds_stacked_heads_and_weighs_them():
    torch.manual_seed(0)
    label = _label()
    heads = torch.randn(2, 3, 3, 16, 16, 16)  # (batch, heads, classes, ...) as DynUNet returns
    base = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    wrapped = StackedDeepSupervisionLoss(base)
    expected = sum(w * base(heads[:, k], label) for k, w in enumerate((1.0, 0.5, 0.25)))
    assert torch.allclose(wrapped(heads, label), expected)
    assert torch.allclose(wrapped(list(heads.unbind(1)), label), expected)
    # One output (eval mode, or a network without deep supervision) passes through.
    assert torch.allclose(wrapped(heads[:, 0], label), base(heads[:, 0], label))
    same = StackedDeepSupervisionLoss(base, weight_mode="same")(heads, label)
    assert torch.allclose(same, sum(base(heads[:, k], label) for k in range(3)))
    # Every loss of the factory handles stacked heads.
    for name in known_losses():
        assert torch.isfinite(build_loss(name)(heads, label))


def _batches(n: int = 2):
    torch.manual_seed(0)
    return [{"image": torch.rand(2, 1, 32, 32, 32), "label": _label((2, 1, 32, 32, 32))}] * n


def _trainer(net, postprocessing=None, handlers=(), metric=None) -> SupervisedTrainer:
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=_batches(),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=build_loss("dice_ce"),
        postprocessing=postprocessing,
        key_train_metric=metric,
        train_handlers=list(handlers),
    )


def _deep_dynunet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(
        "dynunet", channels=(8, 16, 32, 64), roi_size=[32] * 3, spacing=[6.0] * 3, deep_supr_num=2
    )


def test_supervised_trainer_with_deep_supervision_and_the_bundle_postprocessing():
    # train.yaml's train#postprocessing is an empty Compose and has no training metric: the
    # stacked prediction goes through decollation untouched and the loss sees every head.
    trainer = _trainer(_deep_dynunet(), postprocessing=Compose([]))
    trainer.run()
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))
    assert trainer.state.output[0]["pred"].shape == (3, 3, 32, 32, 32)  # heads, classes, ...


def test_full_resolution_prediction_makes_post_transforms_and_metrics_work():
    # With post-transforms and a training Dice (as a user may add), pred must be (C, ...):
    # FullResolutionPrediction swaps in the full-resolution head after the loss.
    post = Compose(
        [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=3),
        ]
    )
    metric = {"train_dice": MeanDice(output_transform=from_engine(["pred", "label"]))}
    trainer = _trainer(_deep_dynunet(), post, [FullResolutionPrediction()], metric)
    seen_by_loss: list[tuple[int, ...]] = []
    losses: list[float] = []

    @trainer.on(IterationEvents.FORWARD_COMPLETED)
    def _forward(engine):
        seen_by_loss.append(tuple(engine.state.output["pred"].shape))

    @trainer.on(Events.ITERATION_COMPLETED)
    def _loss(engine):
        losses.append(float(from_engine(["loss"], first=True)(engine.state.output)))

    trainer.run()
    assert seen_by_loss == [(2, 3, 3, 32, 32, 32)] * 2  # the loss still gets every head
    item = trainer.state.output[0]
    assert item["pred"].shape == (3, 32, 32, 32) == item["label"].shape
    assert set(torch.unique(item["pred"]).tolist()) <= {0.0, 1.0}
    assert 0.0 <= trainer.state.metrics["train_dice"] <= 1.0
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_full_resolution_prediction_leaves_single_outputs_alone():
    net = build_network("unet", channels=(8, 16, 32), num_res_units=1)
    trainer = _trainer(net, handlers=[FullResolutionPrediction()])
    trainer.run()
    assert trainer.state.output[0]["pred"].shape == (3, 32, 32, 32)
