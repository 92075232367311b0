"""Measure inference on one scan: seconds per stage, network efficiency, memory, scaling.

``scripts/benchmark_inference.py`` runs :func:`measure_scan` in a fresh process per scan
(so the peak resident memory is that scan's alone) and :func:`summarise` over the scans.
The measured path is exactly the bundle's: :func:`~pipeline.inference.api.build_predictor`
from the config files, then :class:`~pipeline.inference.folder_run.FolderRun` on the scan.

What is measured besides the stage times of the case JSON:

* the windows the network computed (a forward hook counts the batch items), hence the
  sliding window's redundancy: window voxels computed / voxels of the network's grid;
* the network's floating-point work per window (``torch.utils.flop_counter``) and so its
  achieved GFLOP/s, as a ratio to a float32 matrix product's GFLOP/s measured in the same
  process (the machine's practical peak for dense work);
* the process's peak resident set (``getrusage``).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.inference.scans import Scan


def matmul_gflops(size: int = 1024, seconds: float = 2.0) -> float:
    """GFLOP/s of float32 matrix products on this machine, now (best of several)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool, allocation
    flops = 2.0 * size**3
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, flops / (time.perf_counter() - start))
    return best / 1e9


@contextmanager
def counted_windows(network: torch.nn.Module) -> Iterator[list[int]]:
    """Count the batch items (sliding windows) ``network`` computes inside the block."""
    count = [0]

    def hook(_module: torch.nn.Module, args: tuple[Any, ...], _output: Any) -> None:
        count[0] += int(args[0].shape[0])

    handle = network.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def window_flops(network: torch.nn.Module, in_channels: int, roi_size: Sequence[int]) -> float:
    """Floating-point operations of one forward pass over one window (batch of 1)."""
    window = torch.zeros((1, in_channels, *roi_size))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(window)
    return float(counter.get_total_flops())


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure_scan(
    scan_path: str | os.PathLike,
    ckpt: str | os.PathLike,
    config_files: Sequence[str | os.PathLike],
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment one scan as ``run inference`` does and measure it (see the module docstring).

    Call it in a fresh process: the peak memory is the process's.
    """
    from monai.bundle import ConfigParser

    from pipeline.bundle import bundle_root_of
    from pipeline.inference.api import build_predictor
    from pipeline.inference.folder_run import FolderRun

    gflops_matmul = matmul_gflops()
    files = [str(f) for f in config_files]
    predictor = build_predictor(ckpt, files, **(overrides or {}))
    config = ConfigParser()
    config.read_config(files)
    config.update({"bundle_root": bundle_root_of(files), **(overrides or {})})
    roi_size = list(config.get_parsed_content("roi_size"))
    in_channels = int(config.get_parsed_content("in_channels"))
    scan = Scan(Path(scan_path).name.split(".")[0], Path(scan_path), "nifti")
    with tempfile.TemporaryDirectory() as out, counted_windows(predictor.network) as windows:
        run = FolderRun(predictor, [scan], out, checkpoint=ckpt, progress=False)
        summary = run.run()
        if summary.failed:
            raise RuntimeError(f"{scan_path}: {summary.failed[0]['error']}")
        record = json.loads((Path(out) / f"{scan.case}.json").read_text())
    peak_mb = peak_rss_mb()  # before the measurements below, which the run does not need
    seconds = record["seconds"]
    network_grid = _network_grid_voxels(predictor, scan)
    per_window = window_flops(predictor.network, in_channels, roi_size)
    achieved = per_window * windows[0] / seconds["network"] / 1e9
    return {
        "scan": str(scan_path),
        "shape": record["shape"],
        "voxels": int(np.prod(record["shape"])),
        "network_grid_voxels": network_grid,
        "seconds": seconds,
        "non_network_seconds": round(seconds["total"] - seconds["network"], 3),
        "end_to_end_over_network": round(seconds["total"] / seconds["network"], 3),
        "windows": windows[0],
        "window_voxels": int(np.prod(roi_size)),
        "sliding_window_redundancy": round(windows[0] * np.prod(roi_size) / network_grid, 2),
        "gflop_per_window": round(per_window / 1e9, 2),
        "network_gflops": round(achieved, 2),
        "matmul_gflops": round(gflops_matmul, 2),
        "network_over_matmul_gflops": round(achieved / gflops_matmul, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "device": str(predictor.device),
        "cpu_bf16": bool(getattr(predictor, "cpu_bf16", False)),
        "torch_threads": torch.get_num_threads(),
    }


def measure_folder(
    folder: str | os.PathLike,
    ckpt: str | os.PathLike,
    config_files: Sequence[str | os.PathLike],
    prefetch: bool,
) -> dict[str, Any]:
    """Wall time of a folder run (as ``run inference``), reading ahead or not."""
    from pipeline.inference.api import build_predictor
    from pipeline.inference.folder_run import FolderRun

    predictor = build_predictor(ckpt, [str(f) for f in config_files])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = FolderRun(
            predictor, folder, out, checkpoint=ckpt, progress=False, prefetch=prefetch
        ).run()
        wall = time.perf_counter() - start
        cases = [json.loads((Path(out) / f"{case}.json").read_text()) for case in summary.done]
    return {
        "prefetch": prefetch,
        "scans": len(cases),
        "wall_seconds": round(wall, 2),
        "network_seconds": round(sum(c["seconds"]["network"] for c in cases), 2),
        "load_seconds": round(sum(c["seconds"]["load"] for c in cases), 2),
        "load_wait_seconds": round(sum(c["seconds"].get("load_wait", 0.0) for c in cases), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def _network_grid_voxels(predictor: Any, scan: Scan) -> int:
    """Voxels of the scan after pre-processing (the grid the sliding window covers)."""
    data = predictor.preprocessing(predictor.load(scan))
    return int(np.prod(data["image"].shape[1:]))


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line ``y = slope * x + intercept`` and its R^2."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(xs, ys, 1)
    residual = ys - (slope * xs + intercept)
    total = ((ys - ys.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": round(float(r2), 4)}


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Scaling of time and memory with voxel count over several scans' measurements."""
    voxels = [r["voxels"] / 1e6 for r in runs]
    if len(set(voxels)) < 2:
        return {"megavoxels": voxels}  # no line through one point
    fits = {
        "total_seconds_per_megavoxel": linear_fit(voxels, [r["seconds"]["total"] for r in runs]),
        "network_seconds_per_megavoxel": linear_fit(
            voxels, [r["seconds"]["network"] for r in runs]
        ),
        "non_network_seconds_per_megavoxel": linear_fit(
            voxels, [r["non_network_seconds"] for r in runs]
        ),
        "peak_rss_mb_per_megavoxel": linear_fit(voxels, [r["peak_rss_mb"] for r in runs]),
    }
    return {"megavoxels": voxels, "fits": fits}
