"""The demo's time budget and the machine facts it records (called by ``scripts/demo.sh``).

``python -m pipeline.workflows.demo_budget minutes TOTAL USED_SECONDS AFTER PLANNED`` prints
the training minutes the demo may still spend; ``... explain`` with the same arguments
prints what the demo tells its user when it trains for less than planned (nothing when it
does not); ``... cpu`` prints the CPU's name and whether it computes bfloat16 natively
(training's precision on the CPU depends on it).
"""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

# Below this a training run learns too little to be worth scoring: the demo then overruns
# its budget rather than train for less.
MIN_TRAINING_MINUTES = 3.0


def training_minutes(
    total_minutes: float, used_seconds: float, after_minutes: float, planned_minutes: float
) -> float:
    """The training minutes left in a budget of ``total_minutes`` (0: no budget).

    Args:
        total_minutes: the whole run's budget; 0 or less for none.
        used_seconds: wall time already spent.
        after_minutes: time kept for the steps after training.
        planned_minutes: the training's own limit.

    Returns:
        ``planned_minutes`` when the budget allows it, else what is left, never less
        than :data:`MIN_TRAINING_MINUTES`.
    """
    if total_minutes <= 0:
        return planned_minutes
    left = total_minutes - used_seconds / 60.0 - after_minutes
    return max(MIN_TRAINING_MINUTES, min(planned_minutes, left))


def cut_explanation(
    total_minutes: float, used_seconds: float, after_minutes: float, planned_minutes: float
) -> str:
    """What the demo says when the budget cuts its training, empty when it does not.

    The arguments are those of :func:`training_minutes`.

    Returns:
        One sentence: the minutes used so far, the training minutes instead of the
        planned ones, and either that the demo ends within its budget or, when the
        floor of :data:`MIN_TRAINING_MINUTES` applies, by how much it will overrun.
    """
    minutes = training_minutes(total_minutes, used_seconds, after_minutes, planned_minutes)
    if minutes >= planned_minutes:
        return ""
    used = used_seconds / 60.0
    head = (
        f"the steps so far took {used:.0f} min: "
        f"the model trains for at most {minutes:.1f} min instead of {planned_minutes:g}"
    )
    left = total_minutes - used - after_minutes
    if left < minutes:
        ends = (
            f"; that is the least worth training, so the demo overruns its {total_minutes:g} min "
            f"by about {minutes - left:.0f} min"
        )
    else:
        ends = f", so that the demo ends within {total_minutes:g} min"
    lower = "; fewer epochs score lower (DEMO_MINUTES=0 lifts the limit)"
    return head + ends + lower


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU's model name and whether it computes bfloat16 natively.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; read when None (empty off Linux).
    """
    from pipeline.nets.precision import native_cpu_bf16

    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    found = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    name = found.group(1).strip() if found else (platform.processor() or "unknown CPU")
    precision = "native bfloat16" if native_cpu_bf16() else "no native bfloat16: float32"
    return f"{name} ({precision})"


def main(argv: list[str]) -> int:
    """Command line: ``minutes|explain TOTAL USED_SECONDS AFTER PLANNED`` or ``cpu``."""
    if argv[:1] == ["minutes"] and len(argv) == 5:
        print(f"{training_minutes(*map(float, argv[1:])):.1f}")
        return 0
    if argv[:1] == ["explain"] and len(argv) == 5:
        print(cut_explanation(*map(float, argv[1:])))
        return 0
    if argv == ["cpu"]:
        print(cpu_description())
        return 0
    print("usage: demo_budget minutes|explain TOTAL USED_SECONDS AFTER PLANNED | demo_budget cpu",
          file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
