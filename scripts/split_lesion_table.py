"""The drawn lesions of a synthetic data set's split, by size and contrast-to-noise ratio.

    python scripts/split_lesion_table.py --data runs/demo/data [--split test]

Prints a markdown table (cases, tumour-free cases, lesions per size bin and CNR bin) from
``phantoms.json`` and ``datalist.json``: what the model card shows when the generator's
settings change, to show that the test split stays as hard as before. Sizes are the
drawn diameters (before rasterising); CNR is |lesion body - liver| / noise SD in HU.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from pipeline.evaluation.detectability import cnr_bin, cnr_bins
from pipeline.names import strip_nifti_suffix

SIZE_BINS = ("<10mm", "10-20mm", ">=20mm")


def size_bin(diameter_mm: float) -> str:
    """The lesion-recall size bin of a drawn diameter."""
    return SIZE_BINS[0] if diameter_mm < 10 else SIZE_BINS[1] if diameter_mm < 20 else SIZE_BINS[2]


def split_table(data_dir: Path, split: str) -> str:
    """The markdown table of one split."""
    phantoms = json.loads((data_dir / "phantoms.json").read_text())
    datalist = json.loads((data_dir / "datalist.json").read_text())
    names = {strip_nifti_suffix(Path(r["image"]).name) for r in datalist[split]}
    cases = [c for c in phantoms["cases"] if c["case"] in names]
    counts: Counter[tuple[str, str]] = Counter()
    for case in cases:
        for tumour in case["tumours"]:
            contrast = abs(float(tumour["hu"]["body"]) - float(case["hu"]["liver"]))
            counts[(size_bin(tumour["diameter_mm"]), cnr_bin(contrast / case["noise_sd"]))] += 1
    settings = phantoms["settings"]
    lines = [
        f"{split} split of {data_dir} ({settings.get('n_cases')} cases, seed "
        f"{settings.get('seed')}, spacing {cases[0]['spacing'] if cases else '?'} mm): "
        f"{len(cases)} cases, {sum(not c['tumours'] for c in cases)} tumour-free, "
        f"{sum(counts.values())} lesions",
        "",
        "| size \\ CNR | " + " | ".join(cnr_bins()) + " | all |",
        "|---|" + "---|" * (len(cnr_bins()) + 1),
    ]
    for size in SIZE_BINS:
        row = [counts[(size, cnr)] for cnr in cnr_bins()]
        lines.append(f"| {size} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="synthetic data set folder")
    parser.add_argument("--split", default="test", choices=("training", "validation", "test"))
    args = parser.parse_args()
    print(split_table(args.data, args.split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
