from __future__ import annotations

import json
import shutil

import pytest
from bundle_files import CONFIGS

from pipeline.workflows.model_card import (
    CARD_END,
    CARD_START,
    lesion_recall,
    quality_bars,
    record_results,
)


def _summary(liver=0.96, tumour=0.65, by_size=None) -> dict:
    by_size = by_size or {
        "<10mm": {"n_ref": 5, "tp_iou": 0},
        "10-20mm": {"n_ref": 4, "tp_iou": 3},
        ">20mm": {"n_ref": 6, "tp_iou": 6},
    }
    return {
        "n_cases": 8,
        "liver": {"dice": {"mean": liver}, "dice_global": 0.97},
        "tumour": {"dice": {"mean": tumour}, "dice_global": 0.8},
        "lesions": {"by_size": by_size},
    }


def test_lesion_recall_counts_only_lesions_of_10_mm_and_more():
    # (3 + 6) detected of (4 + 6) reference lesions; the five small ones do not count.
    assert lesion_recall(_summary()) == pytest.approx(0.9)
    empty = {k: {"n_ref": 0, "tp_iou": 0} for k in ("<10mm", "10-20mm", ">20mm")}
    assert lesion_recall(_summary(by_size=empty)) is None


def test_bars_pass_and_fail_at_their_targets():
    bars = quality_bars(_summary(liver=0.95, tumour=0.69))
    assert [b.passed for b in bars] == [True, False, True]
    assert [b.target for b in bars] == [0.95, 0.70, 0.80]


def test_record_writes_metadata_and_the_card_table(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text(json.dumps(_summary()))
    metadata = tmp_path / "metadata.json"
    shutil.copy(CONFIGS / "metadata.json", metadata)
    card = tmp_path / "README.md"
    card.write_text(f"# card\n\nbefore\n{CARD_START}\nold table\n{CARD_END}\nafter\n")
    record_results(report, metadata, card, {"budget": "standard"})
    written = json.loads(metadata.read_text())["eval_metrics"]
    assert written["liver_dice_per_case"] == 0.96
    assert written["tumour_dice_per_case"] == 0.65
    assert written["lesion_recall_10mm_iou50"] == 0.9
    assert written["run"] == {"budget": "standard"}
    text = card.read_text()
    assert "old table" not in text and text.startswith("# card\n\nbefore\n")
    assert text.endswith(f"{CARD_END}\nafter\n")
    assert "| tumour Dice per case | 0.650 | 0.70 (not met) |" in text
    assert "| liver Dice per case | 0.960 | 0.95 (met) |" in text
    card.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        record_results(report, None, card)
