"""Benchmark: inference per stage, network efficiency, memory and scaling, to JSON.

Generates full-size synthetic CTs (512 x 512 x N at 0.8 x 0.8 x 2 mm, by default
N = 150, 225 and 300) and segments each with the given checkpoint through exactly the
bundle's inference path, each in a fresh process so that its peak resident memory is
its own. Then the same scans as one folder run, reading the next scan while the network
runs (``prefetch``) and not. For every scan the JSON holds the seconds per stage (load,
preprocess, network, invert, postprocess, quantify, save), end-to-end over network-only
time, the sliding window's redundancy, the network's achieved GFLOP/s against a matrix
product's in the same process, and the peak RSS; over the scans, the slope and R^2 of
time and memory against voxel count. The largest scan is the headline. Where the CPU
computes bfloat16 natively, the largest scan is also segmented in the other precision
(``cpu_bf16``, off by default for inference), so the JSON holds the network's bfloat16 /
float32 time ratio (the matrix product the GFLOP/s are compared with is float32's).
Ratios within one run are what to read: absolute seconds drift on a shared machine.

    python scripts/benchmark_inference.py --ckpt runs/train/models/model.pt \\
        --out runs/benchmarks/inference.json

Overlays the model was trained with go to ``--overlay`` (e.g. demo.yaml). Any trained
checkpoint of the network measures its speed; post-processing depends a little on how
good its masks are, so use one trained for a few minutes at least.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pipeline.bundle import config_file
from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.io import save_nifti, write_json
from pipeline.nets.precision import native_cpu_bf16
from pipeline.workflows.inference_benchmark import measure_folder, measure_scan, summarise

ROOT = Path(__file__).resolve().parents[1]
SPACING_MM = (0.8, 0.8, 2.0)


def _config_files(overlays: list[str]) -> list[str]:
    """common.yaml and the overlays (a bare name is looked up in the bundle's configs)."""
    return [str(config_file("common.yaml"))] + [
        overlay if os.sep in overlay else str(config_file(overlay)) for overlay in overlays
    ]


def _worker(args: argparse.Namespace) -> int:
    """Measure one scan, or a folder run, in this process; print the JSON for the parent."""
    files = _config_files(args.overlay)
    if args.folder_prefetch is not None:
        result = measure_folder(args.worker, args.ckpt, files, args.folder_prefetch == "on")
    else:
        overrides = {} if args.cpu_bf16 is None else {"cpu_bf16": args.cpu_bf16 == "on"}
        result = measure_scan(args.worker, args.ckpt, files, overrides)
    print("RESULT " + json.dumps(result))
    return 0


def _measure_in_fresh_process(
    scan: Path,
    args: argparse.Namespace,
    folder_prefetch: str | None = None,
    cpu_bf16: str | None = None,
) -> dict:
    command = [sys.executable, __file__, "--worker", str(scan), "--ckpt", args.ckpt]
    if folder_prefetch is not None:
        command += ["--folder_prefetch", folder_prefetch]
    if cpu_bf16 is not None:
        command += ["--cpu_bf16", cpu_bf16]
    if args.overlay:
        command += ["--overlay", *args.overlay]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark of {scan} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="trained model.pt of the network")
    parser.add_argument("--overlay", nargs="*", default=[], help="configs after common.yaml")
    parser.add_argument(
        "--slices", type=int, nargs="+", default=[150, 225, 300], help="N of 512 x 512 x N"
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "inference.json"))
    parser.add_argument(
        "--no_folder", action="store_true", help="skip the folder run with and without prefetch"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder_prefetch", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--cpu_bf16", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)

    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for slices in sorted(args.slices):
            phantom = generate_phantom(
                11, PhantomConfig(shape=(512, 512, slices), spacing=SPACING_MM)
            )
            scan = save_nifti(phantom.image, phantom.affine, Path(folder) / f"full_{slices}.nii.gz")
            del phantom
            runs.append(_measure_in_fresh_process(scan, args))
            print(f"512 x 512 x {slices}: {json.dumps(runs[-1]['seconds'])}", flush=True)
        # The largest scan again in the other precision, where the CPU has native bfloat16.
        other_precision = None
        if runs[-1]["device"] == "cpu" and native_cpu_bf16():
            other = "off" if runs[-1]["cpu_bf16"] else "on"
            other_precision = _measure_in_fresh_process(scan, args, cpu_bf16=other)
            print(f"the same, cpu_bf16 {other}: {json.dumps(other_precision['seconds'])}")
        # The same scans as one folder, read one ahead while the network runs, or not.
        folder_runs = []
        if not args.no_folder:
            for prefetch in ("off", "on"):
                folder_runs.append(_measure_in_fresh_process(Path(folder), args, prefetch))
                print(f"folder, prefetch {prefetch}: {json.dumps(folder_runs[-1])}", flush=True)
    largest = runs[-1]
    result = {
        "spacing_mm": list(SPACING_MM),
        "checkpoint": args.ckpt,
        "overlay": args.overlay,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "headline": {
            "shape": largest["shape"],
            "seconds": largest["seconds"],
            "end_to_end_over_network": largest["end_to_end_over_network"],
            "invert_seconds": largest["seconds"]["invert"],
            "peak_rss_mb": largest["peak_rss_mb"],
            "network_over_matmul_gflops": largest["network_over_matmul_gflops"],
            "sliding_window_redundancy": largest["sliding_window_redundancy"],
        },
        "scaling": summarise(runs),
        "runs": runs,
        "folder_runs": folder_runs,
        "other_precision_run": other_precision,
    }
    if other_precision is not None:
        bf16, fp32 = (
            (largest, other_precision) if largest["cpu_bf16"] else (other_precision, largest)
        )
        result["headline"]["network_bfloat16_over_float32"] = round(
            bf16["seconds"]["network"] / fp32["seconds"]["network"], 3
        )
        result["headline"]["end_to_end_over_network_bfloat16"] = bf16["end_to_end_over_network"]
    if len(folder_runs) == 2:
        plain, ahead = folder_runs
        result["headline"]["folder_prefetch_wall_over_plain"] = round(
            ahead["wall_seconds"] / plain["wall_seconds"], 3
        )
    write_json(result, args.out)
    print(json.dumps(result["headline"], indent=2))
    print(f"written: {args.out}  (stage shares: {_shares(largest['seconds'])})")
    return 0


def _shares(seconds: dict[str, float]) -> str:
    total = seconds["total"]
    # load_wait is the part of load the run waited for: counted once, as load.
    stages = {k: v for k, v in seconds.items() if k not in ("total", "load_wait") and v}
    ranked = sorted(stages.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / total:.0%}" for k, v in ranked)


if __name__ == "__main__":
    sys.exit(main())
