"""Benchmark: time per training iteration waiting for data against computing, cached or not.

Runs the same short training twice on one data set, with every pre-processed volume
cached in RAM (``cache_rate 1``) and with none (``cache_rate 0``: load, reorient, resample
and crop every volume at every iteration), and writes the per-iteration split that the
bundle's ``metrics.csv`` records, plus the ratios, to a JSON file. Ratios within one run
are what to read: absolute seconds drift on a shared machine.

    python scripts/benchmark_data_loading.py --dataset_dir runs/demo/data \
        --out runs/benchmarks/data_loading.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "liver_tumor" / "configs"


def run_training(dataset_dir: str, out: Path, cache_rate: float, overlay: str, epochs: int) -> dict:
    """One short training run; returns the last metrics.csv row and the wall time."""
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str([str(CONFIGS / "common.yaml"), str(CONFIGS / "train.yaml"), overlay]),
        "--logging_file",
        "False",
        "--dataset_dir",
        dataset_dir,
        "--epochs",
        str(epochs),
        "--val_interval",
        str(epochs),
        "--cache_rate",
        str(cache_rate),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(out / "models"),
    ]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with open(out / "metrics.csv", newline="") as handle:
        row = list(csv.DictReader(handle))[-1]
    return {
        "cache_rate": cache_rate,
        "wall_seconds": round(wall, 2),
        "data_seconds_per_iter": float(row["data_seconds_per_iter"]),
        "compute_seconds_per_iter": float(row["compute_seconds_per_iter"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "data_loading.json"))
    parser.add_argument("--overlay", default=str(CONFIGS / "demo.yaml"))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    runs = [
        run_training(
            args.dataset_dir, out.parent / f"cache_{rate}", rate, args.overlay, args.epochs
        )
        for rate in (1.0, 0.0)
    ]
    cached, uncached = runs
    result = {
        "dataset_dir": args.dataset_dir,
        "overlay": args.overlay,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "runs": runs,
        "uncached_over_cached_data_wait": round(
            uncached["data_seconds_per_iter"] / cached["data_seconds_per_iter"], 2
        ),
        "data_share_cached": round(
            cached["data_seconds_per_iter"]
            / (cached["data_seconds_per_iter"] + cached["compute_seconds_per_iter"]),
            3,
        ),
        "data_share_uncached": round(
            uncached["data_seconds_per_iter"]
            / (uncached["data_seconds_per_iter"] + uncached["compute_seconds_per_iter"]),
            3,
        ),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
