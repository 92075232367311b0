"""Run a command and measure it: exit code, wall time and its own peak resident memory.

The sweep trains each grid point in a process of its own with this, so the time and
memory in its table belong to that training alone.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class MeasuredRun:
    """Exit code, wall seconds and peak resident memory (MB) of a finished process."""

    returncode: int
    seconds: float
    peak_memory_mb: float


# Linux records, at exec, the resident peak of the memory the process had before exec:
# a child forked from a large sweep process would report the sweep's own size. A tiny
# launcher process forks the real command, so the command's peak is its own.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as handle:
    handle.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: Sequence[str], log_path: Path, timeout: float | None = None) -> MeasuredRun:
    """Run a command with its output in ``log_path``; measure wall time and peak memory.

    The peak is the kernel's maximum resident set of the command and of the children it
    reaped (data-loader workers), read by a small launcher process with ``os.wait4``; a
    maximum, not a sum. (``getrusage(RUSAGE_CHILDREN)`` would cover every child the sweep
    ever had, and a command forked straight from the sweep would inherit its size.)

    Raises:
        TimeoutError: the process ran longer than ``timeout`` seconds (it is killed).
    """
    start = time.perf_counter()
    peak_file = Path(f"{log_path}.maxrss")
    peak_file.unlink(missing_ok=True)
    posix = hasattr(os, "wait4") and hasattr(os, "fork")
    command = [sys.executable, "-c", _LAUNCHER, str(peak_file), *args] if posix else list(args)
    with open(log_path, "w") as log:
        # A session of its own: a timeout stops the launcher and the command together.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=posix
        )
        try:
            returncode = process.wait(timeout=timeout)
        except BaseException as err:  # Ctrl-C too: never leave a training running unseen
            if posix:
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()
            process.wait()
            if isinstance(err, subprocess.TimeoutExpired):
                raise TimeoutError(f"training ran longer than {timeout} s; stopped") from err
            raise
    seconds = time.perf_counter() - start
    if not peak_file.is_file():  # not POSIX, or the launcher died: time only
        return MeasuredRun(returncode, seconds, math.nan)
    kib = float(peak_file.read_text()) / (1024 if sys.platform == "darwin" else 1)
    peak_file.unlink()
    return MeasuredRun(returncode, seconds, kib / 1024)
