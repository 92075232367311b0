"""K-fold cross-validation: K models, an out-of-fold report, the fold ensemble on test.

Example:
    python scripts/cross_validate.py --out runs/cv --num_folds 5 [--dataset_dir DIR] \
        [--config_file "['.../common.yaml','.../train.yaml','.../demo.yaml']"] \
        [--set key=value]

The cases outside the test split are cut into K folds (``DiscoveredDataset.kfold``; the
test split stays out of every fold). Each fold trains with ``python -m monai.bundle run
training --num_folds K --fold k`` in a process of its own, one after another, into
``OUT/fold_k`` (a fold whose ``models/model.pt`` exists is kept, so a stopped run goes on
where it stopped). Then, in this process, by the inference loop with each fold's own
configs:

* every fold's model segments its validation cases into ``OUT/oof/predictions``: each
  case of the pool is segmented once, by the model that did not train on it, and
  ``OUT/oof/report`` scores them all with the evaluation report (out-of-fold);
* when the data set has a test split, each fold's model and the ensemble of all K (their
  probabilities averaged, ``pipeline.nets.ensemble``) segment it, into
  ``OUT/test/fold_k`` and ``OUT/test/ensemble``.

``OUT/cross_validation.json`` and ``.md`` gather the per-fold, out-of-fold and test
figures. Several GPUs: run the folds in parallel by hand (``--fold k`` per process, or
torchrun per fold); this runner is sequential.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.io import json_safe, write_json
from pipeline.workflows.measured_process import run_measured
from pipeline.workflows.sweep import DEFAULT_CONFIGS, bundle_root_of, config_list
from pipeline.workflows.sweep_grid import parse_settings

_CLASSES = ("liver", "tumour")


def _parser(files: Sequence[str], overrides: Mapping[str, Any]) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(files))
    parser["bundle_root"] = bundle_root_of(list(files))
    parser.update(dict(overrides))
    return parser


def _fold_overrides(out: Path, fixed: Mapping[str, Any], k: int, n: int) -> dict[str, Any]:
    fold_dir = out / f"fold_{k}"
    return {
        **fixed,
        "num_folds": n,
        "fold": k,
        "output_dir": str(fold_dir),
        "ckpt_dir": str(fold_dir / "models"),
    }


def _train(files: Sequence[str], overrides: Mapping[str, Any], log: Path) -> None:
    command = [sys.executable, "-m", "monai.bundle", "run", "training"]
    command += ["--config_file", json.dumps(list(files))]
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    run = run_measured(command, log)
    if run.returncode != 0:
        raise RuntimeError(f"training exited with code {run.returncode}; see {log}")


def _dice(summary: Mapping[str, Any]) -> dict[str, float]:
    """Dice per case (mean) and global, per class, from an evaluation summary."""
    out = {}
    for name in _CLASSES:
        per_class = summary[name]
        out[f"{name}_dice_per_case"] = per_class["dice"]["mean"]
        out[f"{name}_dice_global"] = per_class["dice_global"]
    return out


def _segment(
    parser: Any, records: Sequence[Mapping[str, Any]], pred_dir: Path, checkpoint: Any
) -> None:
    """Segment ``records`` with the predictor of ``parser`` (finished cases are kept)."""
    from pipeline.workflows.checkpoint_evaluation import segment_records

    segment_records(
        parser.get_parsed_content("predictor"),
        records,
        pred_dir,
        checkpoint=checkpoint,
        settings=parser.get_parsed_content("predictor_settings"),
        overwrite=False,
        progress=False,
    )


def _score(
    parser: Any, records: Sequence[Mapping[str, Any]], pred_dir: Path, report_dir: Path, ckpt: Any
) -> dict[str, float]:
    """Score the masks of ``pred_dir`` against ``records``; Dice per class."""
    from pipeline.evaluation.report.model import collect_provenance
    from pipeline.evaluation.scoring import evaluate_pairs, pairs_from_datalist

    result = evaluate_pairs(
        pairs_from_datalist(records, pred_dir),
        report_dir,
        label_map=parser.get_parsed_content("label_map"),
        provenance=collect_provenance(ckpt),
        progress=False,
    )
    if result.failures or result.missing:
        raise RuntimeError(f"{report_dir}: cases not scored, see its failures.csv")
    return _dice(result.summary)


def _segment_and_score(parser: Any, records: Sequence[Mapping[str, Any]], where: Path, ckpt: Any):
    _segment(parser, records, where / "predictions", ckpt)
    return _score(parser, records, where / "predictions", where / "report", ckpt)


def run_cross_validation(
    out: Path, num_folds: int, files: Sequence[str], fixed: Mapping[str, Any]
) -> dict[str, Any]:
    """Train the folds, score out of fold and on the test split; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    folds, oof_records, ckpts, test_records = [], [], [], []
    for k in range(num_folds):
        overrides = _fold_overrides(out, fixed, k, num_folds)
        parser = _parser(files, overrides)
        split = parser.get_parsed_content("datalist")  # refuses too few cases, bad k
        ckpt = Path(parser.get_parsed_content("ckpt"))
        if not ckpt.is_file():
            _train(files, overrides, out / f"fold_{k}.log")
        if not ckpt.is_file():
            raise RuntimeError(f"fold {k} left no {ckpt}: did a validation run?")
        ckpts.append(str(ckpt))
        test_records = list(split.get("test") or [])
        # Each fold's validation cases, segmented by the model that did not see them.
        _segment(parser, split["validation"], out / "oof" / "predictions", ckpt)
        oof_records += split["validation"]
        folds.append(
            {
                "fold": k,
                "checkpoint": str(ckpt),
                "validation_cases": [c.get("case", c["image"]) for c in split["validation"]],
            }
        )
    base = _parser(files, _fold_overrides(out, fixed, 0, num_folds))
    summary: dict[str, Any] = {"num_folds": num_folds, "configs": list(files), "fixed": fixed}
    summary["out_of_fold"] = _score(
        base, oof_records, out / "oof" / "predictions", out / "oof" / "report", ckpts
    )
    if test_records:
        for k, fold in enumerate(folds):
            parser = _parser(files, _fold_overrides(out, fixed, k, num_folds))
            fold["test"] = _segment_and_score(
                parser, test_records, out / "test" / f"fold_{k}", fold["checkpoint"]
            )
        ensemble = _parser(files, {**_fold_overrides(out, fixed, 0, num_folds), "ckpt": ckpts})
        summary["ensemble_test"] = _segment_and_score(
            ensemble, test_records, out / "test" / "ensemble", ckpts
        )
        summary["test_cases"] = len(test_records)
    summary["folds"] = folds
    write_json(json_safe(summary), out / "cross_validation.json")
    (out / "cross_validation.md").write_text(render_markdown(summary))
    return summary


def render_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table: out-of-fold, each fold on test, the ensemble."""
    keys = [f"{c}_dice_{kind}" for c in _CLASSES for kind in ("per_case", "global")]
    head = "| | " + " | ".join(k.replace("_", " ") for k in keys) + " |"
    rows = [head, "|---" * (len(keys) + 1) + "|"]

    def row(name: str, values: Mapping[str, float] | None) -> None:
        if values:
            rows.append(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in keys) + " |")

    row(f"out of fold ({summary['num_folds']} folds, validation cases)", summary["out_of_fold"])
    for fold in summary["folds"]:
        row(f"fold {fold['fold']} on test", fold.get("test"))
    row("ensemble of the folds on test", summary.get("ensemble_test"))
    note = (
        f"\nTest split: {summary['test_cases']} cases.\n"
        if summary.get("test_cases")
        else "\nNo test split: ensemble and folds were not compared on held-out cases.\n"
    )
    return "# Cross-validation\n\n" + "\n".join(rows) + "\n" + note


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (``scripts/cross_validate.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num_folds", type=int, default=5, help="K (>= 2)")
    parser.add_argument("--dataset_dir", default=None, help="data set (default: synthetic)")
    parser.add_argument(
        "--config_file", default=json.dumps(list(DEFAULT_CONFIGS)),
        help="training configs, e.g. \"['.../common.yaml','.../train.yaml','.../quick.yaml']\"",
    )  # fmt: skip
    parser.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="settings",
        help="config overrides for every fold (value parsed as JSON when possible)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.num_folds < 2:
        parser.error(f"--num_folds must be >= 2, got {args.num_folds}")
    files = config_list(args.config_file)
    fixed = parse_settings(args.settings)
    if args.dataset_dir:
        fixed["dataset_dir"] = str(Path(args.dataset_dir).resolve())
    summary = run_cross_validation(Path(args.out).resolve(), args.num_folds, files, fixed)
    print(render_markdown(summary))
    return 0
