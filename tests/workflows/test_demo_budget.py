"""The demo's training minutes within its budget, and the CPU description it records."""

from __future__ import annotations

import pytest

from pipeline.workflows.demo_budget import cpu_description, main, training_minutes


def test_no_budget_keeps_the_planned_minutes() -> None:
    assert training_minutes(0, 3600, 7, 15) == 15


def test_a_fast_machine_keeps_the_planned_minutes() -> None:
    # 6 minutes used, 7 kept after: 16 left, more than the 15 planned.
    assert training_minutes(29, 360, 7, 15) == 15


def test_a_slow_machine_trains_for_what_is_left() -> None:
    # 9.6 minutes used (576 s), 7 kept after: 29 - 9.6 - 7 = 12.4.
    assert training_minutes(29, 576, 7, 15) == pytest.approx(12.4)


def test_never_less_than_three_minutes() -> None:
    assert training_minutes(29, 25 * 60, 7, 15) == 3.0


def test_cpu_description_reads_the_model_name() -> None:
    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n"
    described = cpu_description(text)
    assert described.startswith("AMD EPYC 7B13 (")
    assert described.endswith("bfloat16)") or described.endswith("float32)")


def test_command_line_prints_minutes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["minutes", "29", "576", "7", "15"]) == 0
    assert capsys.readouterr().out.strip() == "12.4"
    assert main(["nonsense"]) == 2
