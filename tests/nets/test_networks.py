from __future__ import annotations

import socket

import pytest
import torch
from bundle_files import TRAIN_QUICK
from monai.bundle import ConfigParser

from pipeline.nets.losses import build_loss
from pipeline.nets.networks import (
    build_network,
    dynunet_kernels_strides,
    known_networks,
    network_parameter_count,
)

TWO_D = {"unet2d", "flexunet2d"}
# Tiny widths: SegResNet's group norm needs channels[0] divisible by 8.
TINY = {"channels": (8, 16, 32, 64), "num_res_units": 1}
# Window 4 tiles SwinUNETR's 16^3 tokens of a 32^3 patch exactly; the default 7 pads them
# to 21^3 and makes one training step several times slower on a CPU.
EXTRA = {
    "swin_unetr": {"feature_size": 12, "window_size": 4},
    "flexunet2d": {"backbone": "efficientnet-b0"},
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every network here must build offline: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _tiny(name: str, in_channels: int = 2, **kwargs) -> tuple[torch.nn.Module, list[int]]:
    roi = [32, 32] if name in TWO_D else [32, 32, 32]
    options = {**TINY, **EXTRA.get(name, {}), **kwargs}
    return build_network(name, in_channels=in_channels, roi_size=roi, **options), roi


_BUILT: dict[str, tuple[torch.nn.Module, list[int]]] = {}


def _shared(name: str) -> tuple[torch.nn.Module, list[int]]:
    """One tiny network per name for the shape and the training test (builds are slow)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = _tiny(name)  # two input channels: two stacked HU windows
    return _BUILT[name]


@pytest.mark.parametrize("name", known_networks())
def test_every_network_maps_a_patch_to_class_logits_of_the_same_shape(name):
    net, roi = _shared(name)
    # What monai.bundle verify_net_in_out checks: eval mode, one patch, shape and dtype out.
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(1, 2, *roi))
    assert out.shape == (1, 3, *roi)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", known_networks())
def test_every_network_trains_one_step_with_its_loss(name):
    torch.manual_seed(0)
    net, roi = _shared(name)
    loss_fn = build_loss("dice_ce")
    image = torch.rand(2, 2, *roi)
    label = torch.zeros(2, 1, *roi)
    label[..., 8:24, 8:24] = 1
    label[..., 12:18, 12:18] = 2
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    net.train()
    before = [p.detach().clone() for p in net.parameters()]
    loss = loss_fn(net(image), label)
    optimizer.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    optimizer.step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert changed > 0
    with torch.no_grad():
        assert torch.isfinite(loss_fn(net(image), label))


def test_flexunet_resnet34_backbone_builds_offline_and_unpretrained():
    net = build_network("flexunet2d", channels=(8, 16, 32, 64), roi_size=[32, 32])
    assert net.encoder.__class__.__name__ == "ResNetEncoder"
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_dynunet_plan_on_anisotropic_spacing_matches_hand_computation():
    # 0.8 x 0.8 x 2.5 mm: z is 3.1 times coarser, so no z pooling (and z kernel 1) until two
    # in-plane halvings bring the spacing to 1.6 x 1.6 x 2.5 (ratio 1.6). z stops at 4
    # voxels (32 -> 16 -> 8 -> 4), x and y after the fifth pooling (128 -> 4).
    kernels, strides = dynunet_kernels_strides([128, 128, 32], [0.8, 0.8, 2.5])
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert kernels == [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    # Very thick slices: z never becomes comparable within 4 poolings of x / y.
    kernels, strides = dynunet_kernels_strides([64, 64, 16], [0.7, 0.7, 5.0])
    # spacing x: 0.7 1.4 2.8 5.6 (z 5.0 comparable from level 2); sizes 64 32 16 8 4
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]]
    assert kernels == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]]


def test_dynunet_plan_for_the_bundle_patches():
    # train.yaml: 96^3 at 1.5 x 1.5 x 2 mm (ratio 1.33, comparable): 96 -> 48 -> 24 -> 12 -> 6.
    kernels, strides = dynunet_kernels_strides([96, 96, 96], [1.5, 1.5, 2.0])
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 4
    assert kernels == [[3, 3, 3]] * 5
    # quick.yaml: 32^3 at 6 mm: 32 -> 16 -> 8 -> 4.
    assert dynunet_kernels_strides([32] * 3, [6.0] * 3)[1] == [[1, 1, 1]] + [[2, 2, 2]] * 3
    # The pooling cap holds even for a large isotropic patch.
    assert len(dynunet_kernels_strides([512] * 3, [1.0] * 3)[1]) == 6


def test_dynunet_uses_the_plan_and_widths_from_channels():
    net = build_network("dynunet", roi_size=[64, 64, 16], spacing=[0.7, 0.7, 5.0], channels=(8, 16))
    assert [list(s) for s in net.strides] == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]]
    assert net.filters == [8, 16, 32, 64, 128]  # doubling past the given widths
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 64, 64, 16)).shape == (1, 3, 64, 64, 16)


def test_dynunet_explicit_strides_count_like_the_unets():
    net = build_network("dynunet", channels=(8, 16, 32), strides=[2, [2, 2, 1]], roi_size=[16] * 3)
    assert [list(s) for s in net.strides] == [[1, 1, 1], [2, 2, 2], [2, 2, 1]]
    assert [list(k) for k in net.kernel_size] == [[3, 3, 3]] * 3
    with pytest.raises(ValueError, match=r"divisible by \[4, 4, 2\]"):
        build_network("dynunet", strides=[2, [2, 2, 1]], roi_size=[16, 16, 9])


def test_dynunet_deep_supervision_stacks_heads_in_training_only():
    net, roi = _tiny("dynunet", in_channels=1, deep_supr_num=2)
    net.train()
    stacked = net(torch.rand(2, 1, *roi))
    assert stacked.shape == (2, 3, 3, *roi)  # (batch, 1 + deep_supr_num, classes, ...)
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, *roi)).shape == (2, 3, *roi)


def test_resunet_is_dynunet_with_residual_blocks():
    assert _tiny("resunet")[0].input_block.__class__.__name__ == "UnetResBlock"
    assert _tiny("dynunet")[0].input_block.__class__.__name__ == "UnetBasicBlock"


def test_unknown_and_inconsistent_requests_raise_clear_errors():
    with pytest.raises(ValueError, match="known: .*'segresnet'.*'flexunet2d'"):
        build_network("vnet")
    with pytest.raises(ValueError, match="2D network.*slice2d.yaml"):
        build_network("unet2d", spatial_dims=3)
    with pytest.raises(ValueError, match=r"divisible by \[32, 32, 32\].*\[64, 64, 64\]"):
        build_network("swin_unetr", roi_size=[48, 48, 48])
    with pytest.raises(ValueError, match="divisible"):
        build_network("unet", roi_size=[36, 36, 36])  # 4 halvings need multiples of 16
    with pytest.raises(ValueError, match="deep_supr_num is only available"):
        build_network("unet", deep_supr_num=1)
    with pytest.raises(ValueError, match="deep_supr_num=4 needs at least 6 levels"):
        build_network("dynunet", roi_size=[32] * 3, spacing=[6.0] * 3, deep_supr_num=4)
    with pytest.raises(ValueError, match="pretrained"):
        build_network("flexunet2d", pretrained=True)
    with pytest.raises(ValueError, match="is not 3D"):
        build_network("unet", roi_size=[32, 32])


def test_build_network_keeps_the_old_call():
    # The call train.yaml made before the factory grew: residual UNet, batch norm.
    net = build_network(
        name="unet",
        spatial_dims=3,
        in_channels=1,
        out_channels=3,
        channels=[8, 16, 32],
        strides=[2, 2],
        num_res_units=2,
        norm="batch",
        dropout=0.1,
    )
    assert net.__class__.__name__ == "UNet"
    assert net.num_res_units == 2 and net.norm == "batch" and net.dropout == 0.1


def test_network_parameter_count():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))  # 16 + 10
    assert network_parameter_count(net) == 26
    net[0].requires_grad_(False)
    assert network_parameter_count(net, trainable_only=True) == 10
    assert network_parameter_count(net) == 26


def test_bundle_switches_network_and_loss_by_name():
    # common.yaml + train.yaml + quick.yaml with --network_name / --loss_name overrides.
    parser = ConfigParser()
    parser.read_config(TRAIN_QUICK)
    for name in ("unet", "attention_unet", "segresnet", "dynunet"):
        parser["network_name"] = name
        parser.parse()
        net = parser.get_parsed_content("network_def", instantiate=True)
        net.eval()
        with torch.no_grad():
            assert net(torch.rand(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    parser["loss_name"] = "weighted_dice_ce"
    parser.parse()
    loss = parser.get_parsed_content("loss", instantiate=True)
    assert loss.loss.__class__.__name__ == "WeightedDiceCELoss"
