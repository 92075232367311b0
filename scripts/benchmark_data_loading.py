"""Benchmark: time per training iteration waiting for data against computing, per config.

Runs short trainings of the bundle's training configs on a subset of one data set and
writes, per config, the per-iteration split that the bundle's ``metrics.csv`` records
(``data_seconds_per_iter``: waiting for the loader, ``compute_seconds_per_iter``: the
optimiser step) and the data share of the step, to a JSON file:

- ``demo``: common + train + demo.yaml (the demo's single-stage model, 64^3 crops, 2 mm);
- ``cascade``: common + train + demo + cascade.yaml (the cascade's refiner on liver boxes);
- ``default``: common + train (96^3 crops, 1.5 mm, the larger batch: kept to one epoch).

Ratios within one run are what to read: absolute seconds drift on a shared machine.
``--baseline_configs DIR`` (the configs folder of another revision, e.g. extracted with
``git archive``) runs each config with those files too, alternating with the current
ones, so before and after are measured under the same load; ``--repeats N`` repeats
every setting and reports the medians (each run is kept in the JSON). ``--cache_rates 1
0`` adds runs without the RAM cache (load, reorient, resample and crop every volume at
every iteration). ``--profile_transforms`` also times each transform (in this process,
milliseconds per volume): those before the first random one, once per case (filling the
cache), and the rest on the cached volumes.

    python scripts/benchmark_data_loading.py --dataset_dir runs/demo/data \
        --out runs/benchmarks/data_loading.json
    git archive HEAD~1 bundles/liver_tumor/configs | tar -x -C /tmp/before
    python scripts/benchmark_data_loading.py --dataset_dir runs/demo/data --repeats 2 \
        --baseline_configs /tmp/before/bundles/liver_tumor/configs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "liver_tumor" / "configs"
# Each config's files after common.yaml and train.yaml.
OVERLAYS = {"demo": ["demo.yaml"], "cascade": ["demo.yaml", "cascade.yaml"], "default": []}


def config_files(name: str, configs_dir: Path) -> list[str]:
    """The ``--config_file`` list of config ``name`` from ``configs_dir``."""
    files = ["common.yaml", "train.yaml", *OVERLAYS[name]]
    return [str(configs_dir / f) for f in files]


def write_subset(dataset_dir: str, out: Path, train_cases: int, val_cases: int) -> Path:
    """A datalist JSON of the first cases of ``dataset_dir``'s own split (absolute paths)."""
    from pipeline.data.datalist import discover_dataset

    split = discover_dataset(dataset_dir).split(val_fraction=0.2, test_fraction=0.2)
    subset = {
        "training": split["training"][:train_cases],
        "validation": split["validation"][:val_cases],
    }
    if len(subset["training"]) < train_cases or not subset["validation"]:
        raise SystemExit(f"{dataset_dir}: too few cases for {train_cases} + {val_cases}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(subset, indent=1) + "\n")
    return out


def run_training(
    files: list[str], datalist: Path, out: Path, epochs: int, cache_rate: float
) -> dict[str, Any]:
    """One short training run; returns its last epoch's per-iteration times and wall time."""
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str(files),
        "--logging_file",
        "False",
        "--dataset_dir",
        str(datalist),
        "--epochs",
        str(epochs),
        "--val_interval",
        str(epochs),
        # The one validation only writes the metrics.csv row: no window overlap keeps the
        # default config's full-volume sliding window short. It is not part of the split.
        "--val_sw_overlap",
        "0.0",
        "--cache_rate",
        str(cache_rate),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(out / "models"),
    ]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(files)}):\n{done.stderr[-3000:]}")
    with open(out / "metrics.csv", newline="") as handle:
        row = list(csv.DictReader(handle))[-1]
    data = float(row["data_seconds_per_iter"])
    compute = float(row["compute_seconds_per_iter"])
    return {
        "cache_rate": cache_rate,
        "epochs": epochs,
        "wall_seconds": round(wall, 2),
        "data_seconds_per_iter": round(data, 4),
        "compute_seconds_per_iter": round(compute, 4),
        "data_share": round(data / (data + compute), 3),
    }


def profile_transforms(files: list[str], datalist: Path, passes: int) -> dict[str, Any]:
    """Milliseconds per volume of each transform: the cached part, and the random part.

    The training dataset is built as the config builds it (``CacheDataset``). ``cached``:
    each training case goes once through the transforms before the first random one (what
    filling the cache costs, before the first epoch). ``per_draw``: each cached volume then
    goes ``passes`` times through the rest of the list, one transform at a time (a
    transform after the crop runs once per crop: its time is per volume).
    """
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Randomizable
    from monai.transforms.transform import apply_transform
    from monai.utils import set_determinism

    parser = ConfigParser()
    parser.read_config(files)
    parser["bundle_root"] = str(CONFIGS.parent)
    parser["dataset_dir"] = str(datalist)
    parser["output_dir"] = str(datalist.parent / "profile")
    set_determinism(seed=0)
    dataset = parser.get_parsed_content("train#dataset")
    transforms = dataset.transform.transforms
    first = next(i for i, t in enumerate(transforms) if isinstance(t, Randomizable))

    def timed(data: Any, positions: range, totals: dict[str, float]) -> Any:
        for position in positions:
            transform = transforms[position]
            name = f"{position:02d} {type(transform).__name__}"
            start = time.perf_counter()
            data = apply_transform(transform, data, map_items=True)
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return data

    cached: dict[str, float] = {}
    for item in dataset.data:
        timed(dict(item), range(first), cached)
    per_draw: dict[str, float] = {}
    count = 0
    for _ in range(passes):
        for index in range(len(dataset)):
            volume = dataset._cache[index]  # noqa: SLF001 (the cached, pre-random part)
            data = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in volume.items()}
            timed(data, range(first, len(transforms)), per_draw)
            count += 1

    def per_volume(totals: dict[str, float], volumes: int) -> dict[str, float]:
        table = {name: round(1000 * total / volumes, 2) for name, total in totals.items()}
        return {**table, "total": round(sum(table.values()), 2)}

    return {
        "cached": per_volume(cached, len(dataset.data)),
        "per_draw": per_volume(per_draw, count),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median per-iteration figures of repeated runs of one setting, and the runs."""
    data = statistics.median(r["data_seconds_per_iter"] for r in runs)
    compute = statistics.median(r["compute_seconds_per_iter"] for r in runs)
    return {
        "data_seconds_per_iter": round(data, 4),
        "compute_seconds_per_iter": round(compute, 4),
        "step_seconds": round(data + compute, 4),
        "data_share": round(statistics.median(r["data_share"] for r in runs), 3),
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", required=True, help="a data set or datalist JSON")
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "data_loading.json"))
    parser.add_argument(
        "--configs", nargs="+", choices=sorted(OVERLAYS), default=["demo", "cascade", "default"]
    )
    parser.add_argument("--train_cases", type=int, default=8, help="training cases used")
    parser.add_argument("--val_cases", type=int, default=1, help="validation cases used")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of demo and cascade")
    parser.add_argument(
        "--default_epochs", type=int, default=1, help="epochs of the default config"
    )
    parser.add_argument(
        "--cache_rates", type=float, nargs="+", default=[1.0], help="1 0: also uncached"
    )
    parser.add_argument(
        "--baseline_configs", default=None, help="another revision's configs folder"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each setting, alternated; medians"
    )
    parser.add_argument("--profile_transforms", action="store_true")
    parser.add_argument("--profile_passes", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    datalist = write_subset(
        args.dataset_dir, out.parent / "subset_datalist.json", args.train_cases, args.val_cases
    )
    variants = {"current": CONFIGS}
    if args.baseline_configs:
        variants = {"baseline": Path(args.baseline_configs).resolve(), **variants}
    results: dict[str, Any] = {}
    for name in args.configs:
        epochs = args.default_epochs if name == "default" else args.epochs
        entry: dict[str, Any] = {"config_files": ["common.yaml", "train.yaml", *OVERLAYS[name]]}
        runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
        # Settings alternate within each repeat, so a change of machine load hits them alike.
        for repeat in range(args.repeats):
            for rate in args.cache_rates:
                for variant, configs_dir in variants.items():
                    folder = out.parent / f"{name}_{variant}_cache_{rate}_{repeat}"
                    run = run_training(
                        config_files(name, configs_dir), datalist, folder, epochs, rate
                    )
                    runs.setdefault((variant, rate), []).append(run)
        for (variant, rate), done in runs.items():
            entry[variant if rate == 1.0 else f"{variant}_cache_{rate}"] = summarise(done)
        if "baseline" in entry:
            entry["current_over_baseline_data_wait"] = round(
                entry["current"]["data_seconds_per_iter"]
                / entry["baseline"]["data_seconds_per_iter"],
                3,
            )
        if args.profile_transforms:
            for variant, configs_dir in variants.items():
                entry[f"{variant}_transform_ms_per_volume"] = profile_transforms(
                    config_files(name, configs_dir), datalist, args.profile_passes
                )
        results[name] = entry
        print(name, json.dumps(entry), flush=True)
    result = {
        "dataset_dir": args.dataset_dir,
        "train_cases": args.train_cases,
        "val_cases": args.val_cases,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "baseline_configs": args.baseline_configs,
        "configs": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
