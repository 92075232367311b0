"""Benchmark: network seconds of the cascade against one network on the whole scan.

Both at the refiner's fine voxel size, with the same refiner weights, on one full-size
synthetic CT (512 x 512 x 300 at 0.8 x 0.8 x 2 mm): the single-stage path runs the network
over the whole body; the cascade runs the 4 mm locator over the body and the network only
over the located liver's box. Writes seconds per stage of each, and their ratio, to JSON
(one run each, in one process, so the ratio is measured on the same machine state).

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
from pipeline.inference.scans import Scan
from pipeline.io import save_nifti, write_json


def _parser(files: list[str], **overrides: object) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"bundle_root": bundle_root_of(files), **overrides})
    return parser


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="the refiner's weights")
    parser.add_argument("--locator", required=True, help="the locator's weights")
    parser.add_argument("--overlay", nargs="*", default=["demo.yaml"], help="config names")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--out", default="runs/benchmarks/cascade.json")
    args = parser.parse_args()
    names = ["common.yaml", "inference.yaml", *args.overlay]
    cascade_files = [str(config_file(n)) for n in (*names, "cascade.yaml")]
    cascade_config = _parser(cascade_files, ckpt=args.ckpt, **{"locator#ckpt": args.locator})
    cascade = cascade_config.get_parsed_content("predictor")
    # One network on the whole scan at the refiner's voxel size and patch, same weights.
    geometry = {k: cascade_config.get_parsed_content(k) for k in ("pixdim", "roi_size")}
    single_files = [str(config_file(n)) for n in names]
    single = _parser(single_files, ckpt=args.ckpt, **geometry).get_parsed_content("predictor")

    phantom = generate_phantom(7, PhantomConfig(shape=tuple(args.shape), spacing=(0.8, 0.8, 2.0)))
    with tempfile.TemporaryDirectory() as folder:
        path = save_nifti(phantom.image, phantom.affine, Path(folder) / "full.nii.gz")
        scan = Scan("full", path, "nifti")
        cascade_seconds = cascade.predict(scan).seconds
        single_seconds = single.predict(scan).seconds
    network_cascade = cascade_seconds["network"] + cascade_seconds.get("locate_network", 0.0)
    result = {
        "shape": list(args.shape),
        "spacing_mm": [0.8, 0.8, 2.0],
        "refiner_checkpoint": args.ckpt,
        "locator_checkpoint": args.locator,
        "network_voxel_size_mm": geometry["pixdim"],
        "roi_size": geometry["roi_size"],
        "device": str(single.device),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "single_stage_seconds": single_seconds,
        "cascade_seconds": cascade_seconds,
        "network_seconds_single": single_seconds["network"],
        "network_seconds_cascade": network_cascade,
        "cascade_network_ratio": round(network_cascade / single_seconds["network"], 3),
    }
    write_json(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
