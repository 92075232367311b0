"""Channels-last training: the layout really changes, the numbers do not, the bundle's switch."""

from __future__ import annotations

import torch
from bundle_files import TRAIN_QUICK
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer, SlidingWindowInferer

from pipeline.nets.memory_format import ChannelsLastInferer, channels_last_3d
from pipeline.nets.networks import build_network

CL = torch.channels_last_3d


def _unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("unet", channels=[4, 8, 16], num_res_units=1, norm="instance",
                         roi_size=[16, 16, 16], spacing=[1.5, 1.5, 2.0])  # fmt: skip


class _InputRecorder(torch.nn.Module):
    """Wraps a network and records whether its input was channels-last."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last: channels fastest, a channel stride of 1 (the default layout has
        # a channel stride of D * H * W, even with one channel).
        self.seen.append(x.is_contiguous(memory_format=CL) and x.stride(1) == 1)
        return self.network(x)


def test_only_3d_convolution_weights_change_layout():
    net = channels_last_3d(_unet())
    five_d = [p for p in net.parameters() if p.dim() == 5]
    assert five_d and all(p.is_contiguous(memory_format=CL) for p in five_d)
    # Where the two layouts differ (more than one input channel, a kernel over one voxel).
    assert not any(p.is_contiguous() for p in five_d if p.shape[1] > 1 and p[0, 0].numel() > 1)
    assert all(p.is_contiguous() for p in net.parameters() if p.dim() < 5)
    untouched = channels_last_3d(_unet(), enabled=False)
    assert all(p.is_contiguous() for p in untouched.parameters())


def test_the_network_sees_channels_last_and_gives_the_same_output():
    x = torch.randn(2, 1, 16, 16, 16)
    reference = _unet().eval()(x)
    recorder = _InputRecorder(channels_last_3d(_unet()).eval())
    out = ChannelsLastInferer(SimpleInferer())(x, recorder)
    assert recorder.seen == [True]
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)
    # Sliding windows cut from a channels-last volume reach the network channels-last too.
    volume = torch.randn(1, 1, 24, 20, 18)
    recorder.seen.clear()
    windows = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.25)
    stitched = ChannelsLastInferer(windows)(volume, recorder)
    assert recorder.seen and all(recorder.seen)
    torch.testing.assert_close(stitched, windows(volume, _unet().eval()), atol=1e-5, rtol=1e-4)
    # Off, or a 2D (4D) input: passed as it is.
    recorder.seen.clear()
    ChannelsLastInferer(SimpleInferer(), enabled=False)(x, recorder)
    assert recorder.seen == [False]


def test_a_training_step_in_channels_last_gives_the_same_gradients():
    x = torch.randn(2, 1, 16, 16, 16)
    target = torch.randint(0, 3, (2, 16, 16, 16))
    grads = []
    for layout in (False, True):
        net = channels_last_3d(_unet(), enabled=layout)
        out = ChannelsLastInferer(SimpleInferer(), enabled=layout)(x, net)
        torch.nn.functional.cross_entropy(out, target).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for plain, last in zip(*grads, strict=True):
        torch.testing.assert_close(last, plain, atol=1e-5, rtol=1e-3)


def test_training_uses_channels_last_on_the_cpu():
    parser = ConfigParser()
    parser.read_config(TRAIN_QUICK)
    parser.update({"device": "$torch.device('cpu')"})
    assert parser.get_parsed_content("train_channels_last") is True
    for key in ("train#inferer", "validate#inferer"):
        inner = parser.get_parsed_content(key, instantiate=True).inferer
        assert isinstance(inner, ChannelsLastInferer) and inner.enabled
    network = parser.get_parsed_content("network")
    assert all(p.is_contiguous(memory_format=CL) for p in network.parameters() if p.dim() == 5)
    parser.update({"device": "$torch.device('cuda')"})
    assert parser.get_parsed_content("train_channels_last") is False
