"""The 2D slice path: slice2d.yaml trains 2D networks on axial slices of the 3D data."""

from __future__ import annotations

import csv

import torch
from bundle_files import CONFIGS, configs
from monai.bundle import ConfigWorkflow
from monai.engines import IterationEvents
from monai.inferers import SliceInferer

from pipeline.nets.networks import build_network

SLICE_QUICK = configs("common.yaml", "train.yaml", "quick.yaml", "slice2d.yaml")


def test_slice_inferer_runs_a_2d_network_over_axial_slices_to_a_3d_output():
    torch.manual_seed(0)
    net = build_network("unet2d", channels=(4, 8, 16), num_res_units=1, roi_size=[32, 32]).eval()
    volume = torch.rand(1, 1, 32, 32, 7)  # (B, C, H, W, D) in RAS: D is axial
    inferer = SliceInferer(spatial_dim=2, roi_size=(32, 32), sw_batch_size=4, progress=False)
    with torch.no_grad():
        out = inferer(volume, net)
        assert out.shape == (1, 3, 32, 32, 7)
        # With the slice as large as the window, each output slice is the network's output
        # for that axial slice alone.
        for z in (0, 3, 6):
            assert torch.allclose(out[..., z], net(volume[..., z]), atol=1e-5)
        # Slices larger than the window are tiled in-plane and keep the input's shape.
        assert inferer(torch.rand(1, 1, 40, 36, 5), net).shape == (1, 3, 40, 36, 5)


def test_quick_slice2d_training_through_config_workflow(tmp_path):
    workflow = ConfigWorkflow(
        config_file=SLICE_QUICK,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        output_dir=str(tmp_path / "run"),
        ckpt_dir=str(tmp_path / "run" / "models"),
        synthetic_dir=str(tmp_path / "synthetic"),
        epochs=1,
    )
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    trainer = workflow.parser.get_parsed_content("train#trainer")
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    batch_shapes: list[tuple[int, ...]] = []
    trainer.add_event_handler(  # before decollation: the whole batch the network saw
        IterationEvents.FORWARD_COMPLETED,
        lambda e: batch_shapes.append(tuple(e.state.output["image"].shape)),
    )
    workflow.run()
    workflow.finalize()
    assert network.__class__.__name__ == "UNet" and network.dimensions == 2
    # Training batches are 2D slices: (volumes x num_slices, C, 64, 64) in quick runs.
    assert batch_shapes and all(len(s) == 4 and s[2:] == (64, 64) for s in batch_shapes)
    # Validation predicted whole volumes, on the label's 3D grid.
    item = evaluator.state.output[0]
    assert item["pred"].ndim == 4 and item["pred"].shape == item["label"].shape
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1]
    assert 0.0 <= float(rows[0]["liver_dice"]) <= 1.0
    assert (tmp_path / "run" / "models" / "model.pt").exists()
