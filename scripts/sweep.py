"""Hyper-parameter sweep of the training bundle (the logic is pipeline/workflows/sweep.py).

    python scripts/sweep.py --out runs/sweep --grid batch_size=1,2 epochs=10,20 \
        learning_rate=1e-3,3e-3 [--dataset_dir DIR] [--config_file "['a.yaml','b.yaml']"] \
        [--set key=value ...] [--overwrite] [--dry_run]

Writes OUT/<point>/ per grid point and OUT/sweep.csv, OUT/sweep.md; re-runs skip
finished points.
"""

from __future__ import annotations

import sys

from pipeline.workflows.sweep import main

if __name__ == "__main__":
    sys.exit(main())
