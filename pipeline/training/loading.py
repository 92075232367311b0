"""A training data loader that prepares the next batch while the network computes.

With the pre-processed volumes cached, what is left per iteration is the random part
(crops, affine, intensity), in the main process: on 2 CPU cores worker processes made
every iteration 3-4 times slower by competing with the network for the cores. One
thread instead runs the random part of the next batch during this batch's step, whose
tensor kernels release the GIL; the trainer then waits only for what did not overlap.
That thread's own tensor operations run on one core: torch gives every thread an OpenMP
team as large as the core count, and a second team beside the network's oversubscribes
the cores. The demo's step on 2 cores (wait and compute, mean of 3 x 16 steps): 0.43 s
loading in the main thread, 0.53 s with a loading thread of torch's default team, 0.40 s
with a one-core loading thread.

MONAI's ``ThreadDataLoader`` does the same with torch's default team, and when a
transform raises in its thread the epoch just ends early (checked on monai 1.6.1: an
unreadable case shortens the epoch instead of stopping the run). Here the error is raised
in the training loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch
from monai.data import DataLoader
from torch.utils.data import Dataset

_END = object()  # the producer's last item: the epoch is complete


class PrefetchingDataLoader(DataLoader):
    """MONAI's DataLoader whose batches are made one step ahead, in a thread.

    The batches, their order and the random draws are those of ``DataLoader`` with the
    same arguments: one thread makes them one after another, as the main process would.

    Args:
        dataset: the dataset to load from.
        prefetch: batches made ahead of the one in use.
        loading_threads: intra-op threads of torch in the loading thread (the main
            thread's count is left alone).
        kwargs: ``DataLoader`` arguments (batch_size, shuffle, sampler, num_workers...).
    """

    def __init__(
        self, dataset: Dataset, prefetch: int = 1, loading_threads: int = 1, **kwargs: Any
    ) -> None:
        if int(prefetch) < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        if int(loading_threads) < 1:
            raise ValueError(f"loading_threads must be at least 1, got {loading_threads}")
        super().__init__(dataset, **kwargs)
        self.prefetch = int(prefetch)
        self.loading_threads = int(loading_threads)

    def __iter__(self) -> Iterator[Any]:
        """Yield the batches of ``DataLoader``; re-raise an error of the loading thread."""
        batches = super().__iter__()
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def hand_over(item: tuple[Any, BaseException | None]) -> bool:
            # A timed put, so the thread ends when the consumer stops taking batches.
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            # torch.set_num_threads sets this thread's OpenMP team, and also the default of
            # threads started later: that default is put back at the end.
            default = torch.get_num_threads()
            torch.set_num_threads(self.loading_threads)
            try:
                for batch in batches:
                    if not hand_over((batch, None)):
                        return
                hand_over((_END, None))
            except BaseException as error:  # re-raised in the consumer's thread
                hand_over((_END, error))
            finally:
                torch.set_num_threads(default)

        thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                batch, error = ready.get()
                if error is not None:
                    raise error
                if batch is _END:
                    return
                yield batch
        finally:
            # Also when the consumer stops early (an error in the step, a terminated run).
            stop.set()
            thread.join()
