"""The ``liver-tumor`` command: one sub-command per job.

Example:
    liver-tumor synth --out data/synthetic --cases 12 --seed 0 --shape 96 96 64
    liver-tumor evaluate --pred runs/pred --ref data/labels --out runs/report
    liver-tumor report runs/report
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from pipeline.data.synth.dataset import write_synthetic_dataset

    options = {}
    if args.phase:
        options["phase"] = args.phase
    if args.spacing:
        options["spacing"] = tuple(args.spacing)
    if args.partial_fov_prob:
        options["partial_fov_prob"] = args.partial_fov_prob
    start = time.perf_counter()
    datalist = write_synthetic_dataset(
        args.out,
        n_cases=args.cases,
        seed=args.seed,
        shape=tuple(args.shape),
        layout=args.layout,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        extra_training_cases=args.extra_train_cases,
        workers=args.workers,
        **options,
    )
    seconds = time.perf_counter() - start
    extra = f" + {args.extra_train_cases} for training only" if args.extra_train_cases else ""
    print(
        f"{args.cases}{extra} synthetic cases ({args.layout} layout) in {args.out} "
        f"({seconds:.1f} s, {args.workers} process(es))"
    )
    print(f"datalist: {datalist}")
    return 0


def parse_label_map(text: str) -> dict[int, int]:
    """Parse ``"5:1"`` or ``"5:1,6:2"`` into ``{5: 1, 6: 2}`` (an argparse type)."""
    mapping = {}
    for item in text.replace(" ", "").split(","):
        source, sep, target = item.partition(":")
        try:
            mapping[int(source)] = int(target)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"expected SOURCE:TARGET pairs like 5:1, got {text!r}")
    return mapping


def _merge_maps(maps: Sequence[dict[int, int]] | None) -> dict[int, int] | None:
    merged: dict[int, int] = {}
    for mapping in maps or ():
        merged.update(mapping)
    return merged or None


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluation.report.model import collect_provenance
    from pipeline.evaluation.report.text import format_class_table
    from pipeline.evaluation.scoring import PairingError, evaluate_pairs, pair_cases

    try:
        pairs = pair_cases(args.pred, args.ref, args.images, allow_missing=args.allow_missing)
    except PairingError as err:
        print(f"liver-tumor evaluate: pairing error: {err}", file=sys.stderr)
        return 2
    # Checked before scoring: scoring a large data set, then failing to write, loses it all.
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        print(f"liver-tumor evaluate: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"liver-tumor evaluate: cannot write --out {args.out}: {err}", file=sys.stderr)
        return 2
    provenance = collect_provenance(
        checkpoint=args.checkpoint,
        dataset=args.ref,
        predictions=args.pred,
        images=args.images,
        command=" ".join(["liver-tumor", *args.argv]),
    )
    result = evaluate_pairs(
        pairs,
        args.out,
        label_map=_merge_maps(args.label_map),
        pred_label_map=_merge_maps(args.pred_label_map),
        provenance=provenance,
        training_metrics_csv=args.training_metrics,
        nsd_tolerance_mm=args.nsd_tolerance,
        progress=not args.no_progress,
        viewers=not args.no_viewers,
    )
    print(format_class_table(result.summary))
    print(
        f"{len(result.cases)} cases scored, {len(result.failures)} failed, "
        f"{len(result.missing)} missing"
    )
    for failure in result.failures:
        print(f"FAILED {failure.case_id}: {failure.reason.splitlines()[0]}", file=sys.stderr)
    if result.failures:
        print(f"reasons in full: {result.files['failures']}", file=sys.stderr)
    print(f"report: {result.files['html']}")
    return 0 if result.ok else 1


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.evaluation.report.writer import build_report

    run_dir = Path(args.run_dir)
    # A report folder itself, or a run folder holding report folders one or two levels down.
    found = (
        [run_dir]
        if (run_dir / "cases.json").is_file()
        else sorted(
            p.parent
            for pattern in ("*/cases.json", "*/*/cases.json")
            for p in run_dir.glob(pattern)
        )
    )
    if not found:
        print(f"liver-tumor report: no cases.json in or under {run_dir}", file=sys.stderr)
        return 2
    for report_dir in found:
        written = build_report(report_dir)
        print(f"report: {written.files['html']}")
    return 0


def _record(args: argparse.Namespace) -> int:
    from pipeline.workflows.model_card import format_bars, record_results

    run = dict(item.split("=", 1) for item in args.run or [])
    bars = record_results(args.report, args.metadata, args.card, run)
    print(format_bars(bars))
    return 0 if all(bar.passed for bar in bars) or not args.strict else 1


def _sweep(args: argparse.Namespace) -> int:
    from pipeline.workflows.sweep import main as sweep_main

    return sweep_main(args.argv[1:], prog="liver-tumor sweep")


def _sim2real(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.workflows.sim2real import default_cases, run_sim2real
    from pipeline.workflows.sweep_grid import parse_settings

    cases = default_cases(Path(args.real_ct))
    overrides = parse_settings(args.settings)
    ckpt = args.ckpt[0] if len(args.ckpt) == 1 else args.ckpt
    record = run_sim2real(ckpt, args.out, args.overlay or [], cases=cases, **overrides)
    for case in record["cases"]:
        print(
            f"{case['case']}: liver Dice {case['liver_dice']:.3f}, "
            f"volume {case['liver_volume_pred_ml']:.0f} mL (reference "
            f"{case['liver_volume_ref_ml']:.0f} mL), {case['tumours_predicted']} tumour(s) "
            f"predicted ({case['tumour_volume_predicted_ml']:.1f} mL), figure {case['figure']}"
        )
        for reason in [*case["warnings"], *case["qc"].get("reasons", [])]:
            print(f"  {case['case']}: {reason}")
    return 0


def _visibility(args: argparse.Namespace) -> int:
    from pipeline.evaluation.detectability import write_visibility

    out = args.out or f"{args.report}/lesion_visibility.json"
    summary = write_visibility(args.report, args.data, out)
    print(f"reference lesions >= {summary['min_diameter_mm']:g} mm: {summary['n_lesions']}")
    print(f"{'size':<9} {'CNR':<5} {'n':>3} {'found':>5}  recall (IoU > 0.5)")
    for row in summary["bins"]:
        print(
            f"{row['size']:<9} {row['cnr']:<5} {row['n']:>3} {row['detected']:>5}  "
            f"{row['recall']:.2f}"
        )
    print(f"per lesion: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``liver-tumor`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="liver-tumor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="generate a synthetic CT dataset with liver/tumour labels")
    synth.add_argument("--out", required=True, help="destination folder")
    synth.add_argument("--cases", type=int, default=10, help="number of cases")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed")
    synth.add_argument("--shape", type=int, nargs=3, default=(96, 96, 64), metavar=("X", "Y", "Z"))
    synth.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=None,
        metavar=("SX", "SY", "SZ"),
        help="voxel size in mm (default: fits the body in the field of view)",
    )
    synth.add_argument("--layout", choices=("lits", "msd"), default="lits")
    synth.add_argument(
        "--phase",
        choices=("non_contrast", "portal_venous"),
        default=None,
        help="contrast phase (default: drawn per case)",
    )
    synth.add_argument(
        "--partial-fov-prob",
        type=float,
        default=0.0,
        help="share of cases that cover only a 36-120 mm slab of the liver along z",
    )
    synth.add_argument("--val-fraction", type=float, default=0.2)
    synth.add_argument("--test-fraction", type=float, default=0.2)
    synth.add_argument(
        "--extra-train-cases",
        type=int,
        default=0,
        help="more cases for the training split only; validation and test stay those "
        "of --cases alone",
    )
    synth.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes generating cases at once (same files for any number; default: "
        "the CPU count, at most 4)",
    )
    synth.set_defaults(func=_synth)

    evaluate = sub.add_parser(
        "evaluate",
        help="score predicted label maps against references (LiTS metrics, HTML report)",
        description="Pair NIfTI files of --pred and --ref by case name, score every case "
        "and write the report into --out. Exit code 0 when every case was scored, 1 when "
        "any case failed, 2 when the files could not be paired.",
    )
    evaluate.add_argument("--pred", required=True, help="folder of predicted label maps")
    evaluate.add_argument("--ref", required=True, help="folder of reference label maps")
    evaluate.add_argument("--out", required=True, help="report folder")
    evaluate.add_argument("--images", default=None, help="folder of the CT volumes (overlays)")
    evaluate.add_argument(
        "--label-map",
        type=parse_label_map,
        nargs="+",
        default=None,
        metavar="SRC:DST",
        help="remap reference values, e.g. 5:1 for TotalSegmentator (unlisted values -> 0)",
    )
    evaluate.add_argument(
        "--pred-label-map", type=parse_label_map, nargs="+", default=None, metavar="SRC:DST",
        help="remap prediction values the same way",
    )  # fmt: skip
    evaluate.add_argument("--training-metrics", default=None, help="training metrics.csv")
    evaluate.add_argument("--checkpoint", default=None, help="model file, hashed for provenance")
    evaluate.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance (mm)")
    evaluate.add_argument(
        "--allow-missing",
        action="store_true",
        help="list unpaired cases as missing instead of stopping",
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.add_argument(
        "--no-viewers",
        action="store_true",
        help="no slice viewer pages (report/viewer/<case>.html; about 0.7 s per case)",
    )
    evaluate.set_defaults(func=_evaluate)

    report = sub.add_parser("report", help="rebuild the report files from a report's cases.json")
    report.add_argument("run_dir", help="report folder (or a folder holding report folders)")
    report.set_defaults(func=_report)

    record = sub.add_parser(
        "record",
        help="check the quality bars of a report and write its figures into the model card",
    )
    record.add_argument("--report", required=True, help="evaluation report folder")
    record.add_argument("--metadata", default=None, help="bundle metadata.json to update")
    record.add_argument("--card", default=None, help="bundle docs/README.md to update")
    record.add_argument("--run", nargs="*", metavar="KEY=VALUE", help="facts about the run")
    record.add_argument("--strict", action="store_true", help="exit 1 when a bar is not met")
    record.set_defaults(func=_record)

    sim2real = sub.add_parser(
        "sim2real", help="score a phantom-trained model's liver on the real CTs in ../shared"
    )
    sim2real.add_argument(
        "--ckpt", required=True, nargs="+", help="model weights; several: their ensemble"
    )
    sim2real.add_argument("--out", required=True, help="output folder (JSON and figures)")
    sim2real.add_argument(
        "--overlay", nargs="*", help="configs stacked on common.yaml, e.g. demo.yaml"
    )
    sim2real.add_argument(
        "--real-ct",
        default="../shared/data/real_ct",
        help="folder of the real CTs with liver labels (default: ../shared/data/real_ct, "
        "beside the repository root)",
    )
    sim2real.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", dest="settings",
        help="config ids, e.g. locator#ckpt=runs/demo/locator/models/model.pt for the cascade",
    )  # fmt: skip
    sim2real.set_defaults(func=_sim2real)

    visibility = sub.add_parser(
        "visibility",
        help="recall of synthetic lesions by size and contrast-to-noise ratio (phantoms.json)",
    )
    visibility.add_argument("--report", required=True, help="evaluation report folder")
    visibility.add_argument("--data", required=True, help="the synthetic data set it scored")
    visibility.add_argument(
        "--out", default=None, help="JSON to write (default REPORT/lesion_visibility.json)"
    )
    visibility.set_defaults(func=_visibility)

    # The sweep parses its own options (pipeline/workflows/sweep.py); main() hands them over.
    sweep = sub.add_parser(
        "sweep", add_help=False,
        help="hyper-parameter sweep, one training per grid point (liver-tumor sweep --help)",
    )  # fmt: skip
    sweep.set_defaults(func=_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``liver-tumor`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:  # argparse would reject the sweep's own options
        return _sweep(argparse.Namespace(argv=argv))
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in the evaluation's provenance
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
