"""Read the next scan of a folder run while the network segments the current one.

Reading a CT (gzip, reorientation of the array in memory, checks) takes one core 1-2 s
for a 512 x 512 x 300 scan, and during that time the network waits. A single background
thread reads scan i + 1 as soon as scan i has been read, so the read overlaps with scan
i's network pass; the read releases the GIL in its heavy parts (ISA-L's inflate, numpy's
and torch's copies). One thread and one scan ahead: at most two scans are in memory, and
the reader objects of MONAI's ``LoadImage`` (which keep per-call state) are only ever
used by that thread.

``concurrent.futures`` rather than MONAI's ``ThreadDataLoader``: the folder run needs
a read error to surface on its own scan (listed in failures.csv, the run going on) and
scans that a re-run skips never to be read, which a DataLoader's batching does not give.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.inference.scans import Scan


@dataclass
class LoadedScan:
    """A scan read and checked by a predictor's ``load``, and how long that took.

    Attributes:
        data: what ``load`` returned (the image, and its quality-control report).
        seconds: wall time of the read, wherever it ran.
    """

    data: dict[str, Any]
    seconds: float


def read_scan(load: Callable[[Scan], dict[str, Any]], scan: Scan) -> LoadedScan:
    """``load(scan)``, timed."""
    start = time.perf_counter()
    data = load(scan)
    return LoadedScan(data, time.perf_counter() - start)


class ScanPrefetcher:
    """Reads the scans of a run one ahead, in one background thread.

    Args:
        load: the predictor's ``load`` (read and check one scan; raises on a bad one).
        scans: the run's scans, in the order they will be asked for.
        wanted: whether a scan will be segmented (a re-run skips finished ones: they are
            never read).
    """

    def __init__(
        self,
        load: Callable[[Scan], dict[str, Any]],
        scans: Sequence[Scan],
        wanted: Callable[[Scan], bool],
    ) -> None:
        self._load = load
        self._scans = list(scans)
        self._index = {id(scan): i for i, scan in enumerate(self._scans)}
        self._wanted = wanted
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-reader")
        self._pending: dict[int, Future[LoadedScan]] = {}

    def _read_on_one_core(self, scan: Scan) -> LoadedScan:
        # torch gives every thread an OpenMP team as large as the core count; a second
        # team beside the network's would oversubscribe the cores (measured on the
        # training loader, pipeline/training/loading.py). set_num_threads sets this
        # thread's team and the default of threads started later, so it is put back.
        default = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return read_scan(self._load, scan)
        finally:
            torch.set_num_threads(default)

    def _submit(self, index: int) -> Future[LoadedScan]:
        future = self._pending.get(index)
        if future is None:
            future = self._executor.submit(self._read_on_one_core, self._scans[index])
            self._pending[index] = future
        return future

    def get(self, scan: Scan) -> LoadedScan:
        """The read scan (its read error raised here), with the next wanted one queued."""
        index = self._index[id(scan)]
        current = self._submit(index)
        following = next(
            (i for i in range(index + 1, len(self._scans)) if self._wanted(self._scans[i])), None
        )
        if following is not None:
            self._submit(following)  # runs as soon as the current read is done
        try:
            return current.result()
        finally:
            del self._pending[index]

    def close(self) -> None:
        """Stop: queued reads are cancelled, a running one is left to finish on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._pending.clear()
