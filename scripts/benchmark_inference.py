"""Benchmark: time per inference stage on one full-size synthetic CT (512 x 512 x ~150).

Generates one phantom at full size (about 0.8 x 0.8 x 2 mm), segments it with the given
checkpoint through exactly the bundle's inference pipeline, and writes the seconds of each
stage (load, preprocess, network, invert, postprocess, quantify, save) and the network's
share of the total to JSON. Two repeats; the first also pays one-off warm-up costs.

    python scripts/benchmark_inference.py --ckpt runs/demo/train/models/model.pt \
        --overlay bundles/liver_tumor/configs/demo.yaml --out runs/benchmarks/inference.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from pipeline.bundle import config_file
from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.inference.api import build_predictor
from pipeline.inference.folder_run import FolderRun
from pipeline.io import save_nifti, write_json

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--overlay", nargs="*", default=[])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 150))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "inference.json"))
    args = parser.parse_args()
    phantom = generate_phantom(11, PhantomConfig(shape=tuple(args.shape), spacing=(0.8, 0.8, 2.0)))
    predictor = build_predictor(args.ckpt, [config_file("common.yaml"), *args.overlay])
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        scan = save_nifti(phantom.image, phantom.affine, Path(folder) / "in" / "full.nii.gz")
        for repeat in range(args.repeats):
            out = Path(folder) / f"out{repeat}"
            FolderRun(predictor, scan, out, checkpoint=args.ckpt, progress=False).run()
            record = json.loads((out / "full.json").read_text())
            runs.append(record["seconds"])
    last = runs[-1]
    result = {
        "shape": list(args.shape),
        "spacing_mm": [0.8, 0.8, 2.0],
        "checkpoint": args.ckpt,
        "overlay": args.overlay,
        "device": str(predictor.device),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "seconds_per_run": runs,
        "network_share_of_total": round(last["network"] / last["total"], 3),
    }
    write_json(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
