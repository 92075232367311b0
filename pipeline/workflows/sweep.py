"""Hyper-parameter sweep of the training bundle: one training process per grid point.

Example:
    python scripts/sweep.py --out runs/sweep --grid batch_size=1,2 epochs=10,20 \
        learning_rate=1e-3,3e-3 [--dataset_dir DIR] [--set network_name=segresnet]

Each point of the grid (the Cartesian product of the ``--grid`` values, any config id of
the training bundle) trains with ``python -m monai.bundle run training`` in a process of
its own, so its wall time and peak memory belong to it alone. Its best checkpoint
(``models/model.pt``) then segments the validation split in the sweep's process with
the predictor of the point's own configs (common.yaml's ``predictor``: the network,
geometry and intensities it was trained with, post-processing included) by the inference
loop, and :func:`pipeline.evaluation.scoring.evaluate_pairs` scores the masks
on the scans' own grids (liver = label >= 1, tumour = label 2). In ``OUT/<point>/``:
``config.yaml`` (the point's overrides, merged after the config files), ``train.log``,
``train/`` (metrics.csv, TensorBoard), ``models/``, ``val_pred/``, ``val_report/`` and
``result.json``, whose presence makes a re-run skip the point. ``OUT/sweep.csv`` and
``OUT/sweep.md`` hold one row per point; a failed point is a row with its error.
Parsing the grid is :mod:`pipeline.workflows.sweep_grid`, the tables
:mod:`pipeline.workflows.sweep_tables`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bundle import bundle_root_of, config_file
from pipeline.io import json_safe
from pipeline.workflows.measured_process import run_measured
from pipeline.workflows.sweep_grid import (
    GridSpecError,
    format_value,
    grid_points,
    parse_grid,
    parse_settings,
    parse_value,
    point_name,
)
from pipeline.workflows.sweep_tables import format_cell, write_tables

DEFAULT_CONFIGS = (str(config_file("common.yaml")), str(config_file("train.yaml")))
DEFAULT_GRID: dict[str, list[Any]] = {
    "batch_size": [1, 2],
    "epochs": [50, 100],
    "learning_rate": [1e-3, 3e-3],
}
# Training settings named in the "fixed settings" line of sweep.md (when not varied).
DESCRIBED_KEYS = (
    "network_name", "channels", "loss_name", "lr_schedule", "batch_size", "epochs",
    "learning_rate", "roi_size", "pixdim", "num_samples", "val_interval",
)  # fmt: skip


# ---- one point -------------------------------------------------------------------------------
@dataclass
class SweepSettings:
    """What a sweep runs.

    Attributes:
        out: the sweep folder.
        grid: values per config id.
        config_files: training configs, merged left to right (common.yaml, train.yaml,
            overlays); the validation predictions use their ``predictor``.
        fixed: overrides of every point (``--set``, ``--dataset_dir``).
        overwrite: run points again even when their result exists.
        timeout: seconds a training may take before it is stopped (None: no limit).
    """

    out: Path
    grid: dict[str, list[Any]]
    config_files: list[str] = field(default_factory=lambda: list(DEFAULT_CONFIGS))
    fixed: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    timeout: float | None = None


def _log_tail(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:400] if lines else "(no output)"


def _training_metrics(path: Path, train_seconds: float, epochs: int) -> dict[str, Any]:
    """Epochs run, seconds per epoch and best in-training validation Dice from metrics.csv."""
    from pipeline.evaluation.report.model import read_training_metrics

    rows = read_training_metrics(path) if path.exists() else []
    if not rows:
        return {"epochs_run": epochs, "seconds_per_epoch": train_seconds / max(epochs, 1)}
    last = rows[-1]
    dices = [r["mean_dice"] for r in rows if r.get("mean_dice") is not None]
    return {
        "epochs_run": int(last["epoch"] or 0),
        # metrics.csv's clock starts after data caching: epochs only, validation included.
        "seconds_per_epoch": (last["seconds"] or 0.0) / max(int(last["epoch"] or 1), 1),
        "train_val_mean_dice": max(dices) if dices else math.nan,
    }


def _evaluate(
    parser: Any,
    records: Sequence[Mapping[str, Any]],
    point_dir: Path,
    label_map: Mapping[int, int] | None,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """Segment the validation records with the point's model and score them on their grids.

    The predictor is the point's own config's (common.yaml's ``predictor`` with the point's
    overlays and overrides), so its network, geometry and intensities are the training's.
    """
    from pipeline.evaluation.scoring import evaluate_pairs, pairs_from_datalist
    from pipeline.workflows.checkpoint_evaluation import segment_records

    start = time.perf_counter()
    pred_dir = point_dir / "val_pred"
    segment_records(
        parser.get_parsed_content("predictor"),
        records,
        pred_dir,
        checkpoint=parser.get_parsed_content("ckpt"),
        settings=parser.get_parsed_content("predictor_settings"),
        progress=False,
    )
    train_csv = point_dir / "train" / "metrics.csv"
    result = evaluate_pairs(
        pairs_from_datalist(records, pred_dir),
        point_dir / "val_report",
        label_map=label_map,
        provenance=provenance,
        training_metrics_csv=train_csv if train_csv.exists() else None,
        progress=False,
        viewers=False,  # a sweep compares numbers; slice pages would double its scoring time
    )
    unscored = [
        f"{c.case_id}: {c.reason.splitlines()[0]}" for c in result.failures + result.missing
    ]
    if unscored:  # points scored on different case sets would not compare
        raise RuntimeError(f"validation cases not scored: {'; '.join(unscored)}")
    summary = result.summary

    def value(name: str, key: str) -> float:
        found = summary[name][key]
        found = found["mean"] if isinstance(found, dict) else found
        return math.nan if found is None else float(found)

    liver, tumour = value("liver", "dice"), value("tumour", "dice")
    return {
        "liver_dice": liver,
        "tumour_dice": tumour,
        "mean_dice": (liver + tumour) / 2,
        "liver_iou": value("liver", "iou"),
        "tumour_iou": value("tumour", "iou"),
        "liver_dice_global": value("liver", "dice_global"),
        "tumour_dice_global": value("tumour", "dice_global"),
        "n_val_cases": len(result.cases),
        "eval_seconds": time.perf_counter() - start,
    }


def point_config(
    settings: SweepSettings, values: Mapping[str, Any], point_dir: Path
) -> dict[str, Any]:
    """Config files and overrides of a point: fixed settings, grid values, output folders."""
    overrides = {
        **settings.fixed,
        **values,
        "output_dir": str(point_dir / "train"),
        "ckpt_dir": str(point_dir / "models"),
    }
    return {"config_files": list(settings.config_files), "overrides": _plain(overrides)}


def run_point(settings: SweepSettings, values: Mapping[str, Any], point_dir: Path) -> dict:
    """Train and score one point; errors are caught into the returned result.

    Returns:
        ``{"point", "values" (the grid values), "config", "status", "error", "described",
        "device", <METRIC_COLUMNS>}``, also written to ``point_dir/result.json``.
    """
    import yaml
    from monai.bundle import ConfigParser

    from pipeline.evaluation.report.model import collect_provenance
    from pipeline.io import atomic_path, write_json
    from pipeline.nets.networks import network_parameter_count

    for stale in ("train", "models", "val_pred", "val_report"):  # a half-finished earlier try
        shutil.rmtree(point_dir / stale, ignore_errors=True)
    (point_dir / "result.json").unlink(missing_ok=True)
    point_dir.mkdir(parents=True, exist_ok=True)
    config = point_config(settings, values, point_dir)
    overrides = config["overrides"]
    # YAML, not JSON: it keeps integer keys, as in label_map {5: 1}.
    with atomic_path(point_dir / "config.yaml", suffix=".yaml") as tmp:
        tmp.write_text(yaml.safe_dump(overrides, sort_keys=False))
    files = [*settings.config_files, str(point_dir / "config.yaml")]
    result: dict[str, Any] = {
        "point": point_dir.name,
        "values": dict(values),
        "config": config,
        "status": "failed",
        "error": "",
    }
    try:
        parser = ConfigParser()
        parser.read_config(files)
        # The bundle root the training command derives from its first config file.
        parser["bundle_root"] = bundle_root_of(files)
        # The network first: a bad name or geometry fails here, before any data is made.
        result["params"] = network_parameter_count(parser.get_parsed_content("network_def"))
        result["device"] = str(parser.get_parsed_content("device"))
        result["described"] = {
            k: parser.get_parsed_content(k) for k in (*DESCRIBED_KEYS, "dataset_dir") if k in parser
        }
        # Resolving the data list generates the synthetic default now, outside the clock.
        records = parser.get_parsed_content("datalist")["validation"]
        command = [sys.executable, "-m", "monai.bundle", "run", "training"]
        run = run_measured(
            [*command, "--config_file", json.dumps(files)],
            point_dir / "train.log",
            settings.timeout,
        )
        result.update(train_seconds=run.seconds, peak_memory_mb=run.peak_memory_mb)
        if run.returncode != 0:
            raise RuntimeError(
                f"training exited with code {run.returncode}: {_log_tail(point_dir / 'train.log')}"
                f" (see {point_dir / 'train.log'})"
            )
        epochs = int(parser.get_parsed_content("epochs"))
        result.update(_training_metrics(point_dir / "train" / "metrics.csv", run.seconds, epochs))
        ckpt = Path(parser.get_parsed_content("ckpt"))
        if not ckpt.is_file():
            raise RuntimeError(f"no best checkpoint {ckpt}: did a validation run (val_interval)?")
        label_map = parser.get_parsed_content("label_map") if "label_map" in parser else None
        provenance = collect_provenance(
            ckpt, files, result["described"].get("dataset_dir"), sweep_point=dict(values)
        )
        result.update(_evaluate(parser, records, point_dir, label_map, provenance))
        result["status"] = "ok"
    except Exception as err:  # one failed point must not end the sweep: record and go on
        result["error"] = _describe(err)
    write_json(json_safe(result), point_dir / "result.json")
    return result


def _describe(err: BaseException) -> str:
    """One line: the error and its causes (MONAI's config errors hide the real one there)."""
    parts, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts).replace("\n", " ")[:1000]


def _plain(value: Any) -> Any:
    """Tuples (from Python literals) -> lists, recursively, for YAML's safe dumper."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- the sweep -------------------------------------------------------------------------------
def _finished(result_path: Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored result when it succeeded with exactly this configuration, else None."""
    try:
        stored = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = stored.get("config") == json_safe(config)
    return stored if same and stored.get("status") == "ok" else None


def run_sweep(settings: SweepSettings, log: Any = print) -> list[dict[str, Any]]:
    """Run every point (skipping finished ones unless ``overwrite``) and write the tables.

    The tables are rewritten after each point, so an interrupted sweep still has its
    table so far. Failed points are run again by a re-run: their failure may be passing
    (another job held the memory).

    Returns:
        One result per point, in grid order.
    """
    points = grid_points(settings.grid)
    settings.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for number, values in enumerate(points, 1):
        point_dir = settings.out / point_name(values)
        config = point_config(settings, values, point_dir)
        stored = None if settings.overwrite else _finished(point_dir / "result.json", config)
        if stored is not None:
            log(f"[{number}/{len(points)}] {point_dir.name}: done before, skipped")
            results.append(stored)
        else:
            log(f"[{number}/{len(points)}] {point_dir.name}: training ...")
            results.append(json_safe(run_point(settings, values, point_dir)))
            r = results[-1]
            dice = format_cell(r.get("mean_dice"), 3)
            seconds = format_cell(r.get("train_seconds"), 0)
            log(
                f"    mean Dice {dice}, {seconds} s"
                if r["status"] == "ok"
                else f"    FAILED: {r['error']}"
            )
        write_tables(settings.out, list(settings.grid), results)
    return results


# ---- command line ----------------------------------------------------------------------------
def config_list(text: str) -> list[str]:
    """``"['a.yaml','b.yaml']"`` (as monai.bundle takes it) or one path -> absolute paths."""
    value = parse_value(text) if text.lstrip().startswith("[") else text
    files = [value] if isinstance(value, str) else list(value)
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise GridSpecError(f"config file(s) not found: {missing}")
    return [str(Path(f).resolve()) for f in files]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The sweep's argument parser (``scripts/sweep.py`` and ``liver-tumor sweep``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train the bundle once per grid point and tabulate validation Dice, "
        "IoU, parameters, time and peak memory (OUT/sweep.csv, OUT/sweep.md).",
    )
    parser.add_argument("--out", required=True, help="sweep folder (one sub-folder per point)")
    parser.add_argument(
        "--grid", nargs="+", default=None, metavar="KEY=V1,V2",
        help="config ids and their values, JSON when possible (roi_size=[32,32,32],[48,48,48]); "
        f"default: {' '.join(f'{k}={format_value(v)[1:-1]}' for k, v in DEFAULT_GRID.items())}",
    )  # fmt: skip
    parser.add_argument("--dataset_dir", default=None, help="data set (default: synthetic)")
    parser.add_argument(
        "--config_file", default=str(list(DEFAULT_CONFIGS)),
        help="training configs, e.g. \"['.../common.yaml','.../train.yaml','.../quick.yaml']\"",
    )  # fmt: skip
    parser.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="settings",
        help="a fixed override of every point (value parsed as JSON when possible)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="run finished points again")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per training")
    parser.add_argument("--dry_run", action="store_true", help="list the points and stop")
    return parser


def settings_from_args(args: argparse.Namespace) -> SweepSettings:
    """Check and convert parsed arguments.

    Raises:
        GridSpecError: bad grid or settings syntax, a key both varied and fixed, or a
            missing config file.
    """
    grid = parse_grid(args.grid) if args.grid else dict(DEFAULT_GRID)
    fixed = parse_settings(args.settings)
    if args.dataset_dir:
        fixed["dataset_dir"] = str(Path(args.dataset_dir).resolve())
    both = sorted(set(grid) & set(fixed))
    if both:
        raise GridSpecError(f"{both} both varied (--grid) and fixed (--set / --dataset_dir)")
    grid_points(grid)  # name clashes surface before anything runs
    return SweepSettings(
        out=Path(args.out).resolve(),
        grid=grid,
        config_files=config_list(args.config_file),
        fixed=fixed,
        overwrite=args.overwrite,
        timeout=args.timeout,
    )


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the sweep from the command line; 0 when every point succeeded, 1 otherwise."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except GridSpecError as err:
        parser.error(str(err))  # exits with code 2 and the usage line
    if args.dry_run:
        for values in grid_points(settings.grid):
            print(f"{settings.out / point_name(values)}: {json.dumps(values)}")
        return 0
    results = run_sweep(settings)
    failed = sum(r["status"] != "ok" for r in results)
    print(f"{len(results) - failed} point(s) done, {failed} failed: {settings.out / 'sweep.md'}")
    return 1 if failed else 0
