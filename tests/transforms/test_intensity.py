from __future__ import annotations

import numpy as np
import pytest
import torch
from bundle_files import configs
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import HistogramNormalize, ScaleIntensityRange

from pipeline.data.datalist import discover_dataset
from pipeline.transforms.intensity import MultiWindow, MultiWindowd

WINDOWS = [[-100, 400], [-1000, 1000]]


def test_each_window_is_clipped_and_scaled_to_its_own_channel():
    hu = torch.tensor([[-1200.0, -1000.0, -100.0, 150.0, 400.0, 1000.0, 1500.0]])
    out = MultiWindow(WINDOWS)(hu)
    assert out.shape == (2, 7)
    expected_liver = [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    expected_wide = [0.0, 0.0, 0.45, 0.575, 0.7, 1.0, 1.0]
    assert torch.allclose(out[0], torch.tensor(expected_liver))
    assert torch.allclose(out[1], torch.tensor(expected_wide))
    # The first window is exactly what the single-window ScaleIntensityRanged gives.
    single = ScaleIntensityRange(-100, 400, 0.0, 1.0, clip=True)(hu)
    assert torch.allclose(out[0:1], torch.as_tensor(single))


def test_metadata_and_array_type_are_kept():
    affine = torch.diag(torch.tensor([1.5, 1.5, 2.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.full((1, 4, 4, 3), 150.0), affine=affine)
    out = MultiWindowd("image", WINDOWS)({"image": image, "label": "kept"})
    assert isinstance(out["image"], MetaTensor)
    assert torch.equal(out["image"].affine, affine)
    assert out["image"].shape == (2, 4, 4, 3) and out["label"] == "kept"
    as_numpy = MultiWindow(WINDOWS)(np.full((1, 2, 2), 150.0))
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (2, 2, 2)


def test_equalisation_uses_monai_histogram_normalize_per_channel():
    torch.manual_seed(0)
    hu = torch.randn(1, 16, 16, 8) * 60 + 90  # liver-like HU
    out = MultiWindow(WINDOWS, equalise=[True, False])(hu)
    windowed = ((hu - -100) / 500).clamp(0, 1)
    expected = HistogramNormalize(num_bins=256, min=0, max=1)(windowed)
    assert torch.allclose(out[0:1], torch.as_tensor(expected, dtype=torch.float32), atol=1e-6)
    assert torch.allclose(out[1:2], ((hu + 1000) / 2000).clamp(0, 1))
    # Equalised values fill [0, 1] and keep the order of the HU values.
    assert out[0].min() == 0 and out[0].max() == pytest.approx(1.0)
    order = hu.flatten().argsort()
    assert torch.all(out[0].flatten()[order].diff() >= -1e-6)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="one HU channel"):
        MultiWindow(WINDOWS)(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="high must be above low"):
        MultiWindow([[400, -100]])
    with pytest.raises(ValueError, match="2 equalise flags for 1 windows"):
        MultiWindow([[-100, 400]], equalise=[True, False])
    with pytest.raises(ValueError, match="at least one window"):
        MultiWindow([])


def _parser(*overlays: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(configs("common.yaml", "train.yaml", *overlays))
    return parser


def test_multi_window_overlay_replaces_the_intensity_step_and_sets_in_channels(tiny_lits):
    # The overlay replaces the named `intensity` id, which the pre-processing references.
    base = _parser("quick.yaml")
    assert base["intensity"]["_target_"] == "ScaleIntensityRanged"
    assert base["preprocess_transforms"].count("@intensity") == 1
    parser = _parser("quick.yaml", "multi_window.yaml")
    parser.parse()
    built = parser.get_parsed_content("preprocess_transforms")
    assert not any(type(t).__name__ == "ScaleIntensityRanged" for t in built)
    assert sum(isinstance(t, MultiWindowd) for t in built) == 1
    assert parser.get_parsed_content("in_channels") == 2
    case = discover_dataset(tiny_lits, require_labels=True).cases[0]
    preprocess = parser.get_parsed_content("validate#preprocessing")
    data = preprocess({"image": case["image"], "label": case["label"]})
    assert data["image"].shape[0] == 2 and data["label"].shape[0] == 1
    assert 0.0 <= float(data["image"].min()) and float(data["image"].max()) <= 1.0
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        assert net(torch.rand(1, 2, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
