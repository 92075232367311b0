"""K-fold cross-validation of the bundle (the logic is pipeline/workflows/cross_validation.py).

    python scripts/cross_validate.py --out runs/cv --num_folds 5 [--dataset_dir DIR] \
        [--config_file "['a.yaml','b.yaml']"] [--set key=value ...]

Trains fold 0 .. K-1 one after another (a fold with a model is kept), writes the
out-of-fold report (OUT/oof/report) and, with a test split, each fold and the ensemble of
all folds on it (OUT/test); OUT/cross_validation.json and .md gather the figures.
"""

from __future__ import annotations

import sys

from pipeline.workflows.cross_validation import main

if __name__ == "__main__":
    sys.exit(main())
