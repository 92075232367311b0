"""bfloat16 autocast on the CPU: where it applies, what comes out, and the bundle's switch."""

from __future__ import annotations

import numpy as np
import torch
from bundle_files import TRAIN_QUICK
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer, SlidingWindowInferer
from oracle_predictor import TINY, block_ct, inference_parser

from pipeline.inference.scans import Scan
from pipeline.io import save_nifti
from pipeline.nets.networks import build_network
from pipeline.nets.precision import (
    CpuBf16Inferer,
    autocast_for,
    cpu_bf16_default,
    native_cpu_bf16,
    to_float32,
)


class _ConvRecorder(torch.nn.Module):
    """A 1x1x1 convolution that records the dtype its output was computed in."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.dtypes.append(out.dtype)
        return out


def test_outputs_of_any_shape_come_back_as_float32():
    half = torch.ones(2, dtype=torch.bfloat16)
    labels = torch.ones(2, dtype=torch.int64)
    out = to_float32({"a": half, "b": [half, labels], "c": (half,), "d": "name"})
    assert out["a"].dtype == torch.float32
    assert [t.dtype for t in out["b"]] == [torch.float32, torch.int64]
    assert isinstance(out["c"], tuple) and out["c"][0].dtype == torch.float32
    assert out["d"] == "name"


def test_the_network_runs_in_bfloat16_and_returns_float32_close_to_float32():
    net = _ConvRecorder()
    x = torch.rand(1, 1, 8, 8, 8)
    reference = SimpleInferer()(x, net)
    out = CpuBf16Inferer(SimpleInferer(), enabled=True)(x, net)
    assert net.dtypes == [torch.float32, torch.bfloat16]
    assert out.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: relative error under 2^-7 per product, summed.
    torch.testing.assert_close(out, reference, rtol=0.02, atol=0.02)
    assert not torch.equal(out, reference)  # it really was computed in bfloat16


def test_disabled_it_is_the_wrapped_inferer_exactly():
    net = _ConvRecorder()
    x = torch.rand(1, 1, 12, 12, 12)
    window = SlidingWindowInferer(roi_size=(8, 8, 8), overlap=0.5, mode="gaussian")
    out = CpuBf16Inferer(window, enabled=False)(x, net)
    assert set(net.dtypes) == {torch.float32}
    torch.testing.assert_close(out, window(x, net), rtol=0, atol=0)


def test_a_training_step_under_bfloat16_keeps_float32_weights_and_gradients():
    torch.manual_seed(0)
    net = build_network("unet", channels=TINY["channels"], num_res_units=1, norm="instance",
                        roi_size=TINY["roi_size"], spacing=TINY["pixdim"])  # fmt: skip
    x = torch.rand(2, 1, 16, 16, 16)
    target = (x > 0.5).long()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)
    inferer = CpuBf16Inferer(SimpleInferer(), enabled=True)
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        logits = inferer(x, net)
        loss = torch.nn.functional.cross_entropy(logits, target[:, 0])
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in net.parameters()} == {torch.float32}
    assert losses[-1] < 0.7 * losses[0]  # it learns


def test_autocast_is_chosen_by_device_and_switch():
    with autocast_for("cpu", amp=True, cpu_bf16=True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast_for("cpu", amp=True, cpu_bf16=False):
        assert not torch.is_autocast_enabled("cpu")  # amp is CUDA's float16 only
    assert cpu_bf16_default("cuda") is False
    assert cpu_bf16_default("cpu") == native_cpu_bf16()


def test_training_defaults_to_native_bfloat16_and_inference_to_float32():
    parser = ConfigParser()
    parser.read_config(TRAIN_QUICK)
    assert parser.get_parsed_content("train_cpu_bf16") == native_cpu_bf16()
    assert parser.get_parsed_content("cpu_bf16") is False  # inference: see common.yaml
    assert parser["scan_predictor"]["cpu_bf16"] == "@cpu_bf16"
    assert parser["locator"]["predictor"]["cpu_bf16"] == "@cpu_bf16"
    parser.update({"train_cpu_bf16": True})
    for key in ("train#inferer", "validate#inferer"):
        inferer = parser.get_parsed_content(key, instantiate=True)
        assert isinstance(inferer, CpuBf16Inferer) and inferer.enabled
    parser = ConfigParser()
    parser.read_config(TRAIN_QUICK)
    parser.update({"train_cpu_bf16": False})
    assert not parser.get_parsed_content("validate#inferer").enabled


def test_predictor_probabilities_in_bfloat16_stay_within_a_percent(tmp_path):
    torch.manual_seed(3)
    net = build_network("unet", channels=TINY["channels"], num_res_units=1, norm="instance",
                        roi_size=TINY["roi_size"], spacing=TINY["pixdim"])  # fmt: skip
    torch.save(net.state_dict(), tmp_path / "model.pt")
    scan = Scan("case", save_nifti(block_ct((48, 44, 20))[0], np.diag([2.0, 2.0, 3.0, 1.0]),
                                   tmp_path / "case.nii.gz"), "nifti")  # fmt: skip
    results = {}
    for bf16 in (False, True):
        predictor = inference_parser(
            ckpt=str(tmp_path / "model.pt"), save_probabilities=True, cpu_bf16=bf16
        ).get_parsed_content("predictor")
        assert predictor.cpu_bf16 is bf16
        results[bf16] = predictor.predict(scan).probabilities
    difference = np.abs(results[True] - results[False])
    assert difference.max() < 0.02
    assert difference.max() > 0  # the bfloat16 path was taken
