"""Benchmark: network seconds of the cascade against one network on the whole scan.

All at the refiner's fine voxel size and patch, on one full-size synthetic CT (512 x 512
x 300 at 0.8 x 0.8 x 2 mm): the cascade runs the 4 mm locator over the body and the
refiner only over the located liver's box; the single-stage paths run one network over the
whole body, once with the refiner's width and depth (the like-for-like ratio) and once
with the single-stage model's network of the overlays (demo.yaml: 16-256 channels). The
single-stage networks get untrained weights, which cost the same time: the refiner's own
cannot run alone (it reads the located liver's contrast as a second channel). Writes
seconds per stage of each, and the ratios, to JSON (one run each, in one process, so the
ratios are measured on the same machine state).

    python scripts/benchmark_cascade.py --ckpt runs/demo/train/models/model.pt \\
        --locator runs/demo/locator/models/model.pt --overlay demo.yaml \\
        --out runs/benchmarks/cascade.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from pipeline.bundle import bundle_root_of, config_file
from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.inference.predictor import ScanPredictor
from pipeline.inference.scans import Scan
from pipeline.io import save_nifti, write_json
from pipeline.workflows.sweep_grid import parse_settings


def _parser(files: list[str], **overrides: object) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"bundle_root": bundle_root_of(files), **overrides})
    return parser


def _single_stage(files: list[str], weights: Path, **overrides: object) -> ScanPredictor:
    """The single-stage predictor of ``files`` with untrained weights saved to ``weights``."""
    network = _parser(files, **overrides).get_parsed_content("network_def")
    torch.save(network.state_dict(), weights)
    return _parser(files, ckpt=str(weights), **overrides).get_parsed_content("predictor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="the refiner's weights")
    parser.add_argument("--locator", required=True, help="the locator's weights")
    parser.add_argument("--overlay", nargs="*", default=["demo.yaml"], help="config names")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--out", default="runs/benchmarks/cascade.json")
    parser.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="settings",
        help="config overrides of the cascade, e.g. locator#channels=[8,16,32,64]",
    )  # fmt: skip
    args = parser.parse_args()
    settings = parse_settings(args.settings)
    names = ["common.yaml", "inference.yaml", *args.overlay]
    cascade_files = [str(config_file(n)) for n in (*names, "cascade.yaml")]
    cascade_config = _parser(
        cascade_files, ckpt=args.ckpt, **{"locator#ckpt": args.locator, **settings}
    )
    cascade = cascade_config.get_parsed_content("predictor")
    # One network on the whole scan at the refiner's voxel size and patch.
    geometry = {k: cascade_config.get_parsed_content(k) for k in ("pixdim", "roi_size")}
    refiner_shape = {k: cascade_config.get_parsed_content(k) for k in ("channels", "num_res_units")}
    single_files = [str(config_file(n)) for n in names]

    phantom = generate_phantom(7, PhantomConfig(shape=tuple(args.shape), spacing=(0.8, 0.8, 2.0)))
    with tempfile.TemporaryDirectory() as folder:
        singles = {
            name: _single_stage(single_files, Path(folder) / f"{name}.pt", **geometry, **shape)
            for name, shape in (("refiner_width", refiner_shape), ("single_model", {}))
        }
        path = save_nifti(phantom.image, phantom.affine, Path(folder) / "full.nii.gz")
        scan = Scan("full", path, "nifti")
        cascade_prediction = cascade.predict(scan)
        cascade_seconds = cascade_prediction.seconds
        single_seconds = {name: p.predict(scan).seconds for name, p in singles.items()}
    network_cascade = cascade_seconds["network"] + cascade_seconds.get("locate_network", 0.0)
    single_network = {name: seconds["network"] for name, seconds in single_seconds.items()}
    result = {
        "shape": list(args.shape),
        "spacing_mm": [0.8, 0.8, 2.0],
        "refiner_checkpoint": args.ckpt,
        "locator_checkpoint": args.locator,
        "settings": settings,
        "network_voxel_size_mm": geometry["pixdim"],
        "roi_size": geometry["roi_size"],
        "refiner_network": refiner_shape,
        "device": str(cascade.device),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "single_stage_seconds": single_seconds,
        "cascade_seconds": cascade_seconds,
        # What the cascade says about the scan: how many liver-sized regions stage 1
        # found (each costs a probe or a refiner pass) and which one was kept.
        "cascade_notes": cascade_prediction.notes,
        "cascade_warnings": cascade_prediction.warnings,
        "network_seconds_single": single_network,
        "network_seconds_cascade": network_cascade,
        # Against one network of the refiner's width: what cropping to the liver saves.
        "cascade_network_ratio": round(network_cascade / single_network["refiner_width"], 3),
        "cascade_network_ratio_to_single_model": round(
            network_cascade / single_network["single_model"], 3
        ),
    }
    write_json(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
