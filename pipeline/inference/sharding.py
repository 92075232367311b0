"""Share a folder run among the processes torchrun starts, and bring their results together.

``torchrun --nproc_per_node=N -m monai.bundle run inference ...`` starts N copies of the
same command (``--nnodes``, ``--node_rank`` and ``--rdzv_endpoint`` spread them over
machines). Each copy finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment;
:func:`torchrun_world` joins them into one process group (or uses the one a caller made)
and :class:`World` carries the little the folder run needs from it:

* one listing: rank 0 lists the input and deals the scans, the others receive the deal
  (:meth:`World.from_rank0`), so a file that appears or grows while the ranks start
  cannot be dealt twice or to nobody;
* a balanced, deterministic deal (:func:`deal`): largest scan first, each to the rank with
  the fewest bytes so far. The same folder and world size give the same deal, so a re-run
  finds each finished case on the rank (and node) that made it;
* results through the process group (:meth:`World.all_gather`), not through the output
  folder: rank 0 merges the tables even when the nodes do not share that folder (the masks
  and case JSONs then stay on the node that made them);
* a long timeout (:data:`COLLECTIVE_TIMEOUT`): the gather waits for the slowest rank, which
  may finish hours after the fastest on a large folder. The default 30 minutes of a gloo
  group would end such a run in error at its very last step. A rank that crashes does not
  leave the others waiting that long: torchrun stops every process when one fails.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from pipeline.inference.scans import Scan

T = TypeVar("T")

COLLECTIVE_TIMEOUT = timedelta(hours=24)
"""How long a process waits in a collective (the listing's broadcast, the final gather)."""


def launched_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run.

    Attributes:
        rank: global rank, 0 to ``world_size - 1``; rank 0 speaks for the run.
        world_size: number of processes sharing the run.
        local_rank: rank on this machine (the GPU it uses).
        group: the gloo group the run's Python objects travel through; None when alone.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = None

    @property
    def distributed(self) -> bool:
        """True when the run is shared with other processes."""
        return self.group is not None

    def from_rank0(self, make: Callable[[], T]) -> T:
        """What ``make()`` returns on rank 0, handed to every process.

        An error of rank 0 is raised on every process (on the others as a RuntimeError
        naming it), so none waits for a result that never comes.

        Args:
            make: called on rank 0 only; its result must pickle.
        """
        if not self.distributed:
            return make()
        result, error = None, None
        if self.rank == 0:
            try:
                result = make()
            except Exception as err:  # handed on, then raised here too
                error = err
        message = None if error is None else f"{type(error).__name__}: {error}"
        box = [(result, message)]
        dist.broadcast_object_list(box, src=0, group=self.group)
        if error is not None:
            raise error
        result, message = box[0]
        if message is not None:
            raise RuntimeError(f"rank 0 failed, so this rank stops too: {message}")
        return result

    def all_gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order (``[obj]`` when alone)."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj, group=self.group)
        return gathered

    def barrier(self) -> None:
        """Wait until every process gets here (nothing to wait for when alone)."""
        if self.distributed:
            dist.barrier(group=self.group)


@contextmanager
def torchrun_world(
    enabled: bool = True, timeout: timedelta = COLLECTIVE_TIMEOUT
) -> Iterator[World]:
    """The processes of this run: torchrun's when it started several, else this one alone.

    When no process group exists, one is made (nccl with CUDA, gloo without; the device
    is ``cuda:LOCAL_RANK``) and destroyed on leaving. Either way the run's objects travel
    through a gloo group of their own, with ``timeout``: pickled summaries are CPU data
    (NCCL would want them on each process's GPU), and a group somebody else made keeps
    its own, maybe shorter, timeout.

    Args:
        enabled: False runs alone whatever the environment (a caller that segments on one
            rank only must not wait for the others).
        timeout: how long a collective waits for the slowest process.
    """
    world_size = launched_world_size() if enabled else 1
    if world_size <= 1:
        yield World()
        return
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world_size} asks for {world_size} processes, but this PyTorch "
            "build has no torch.distributed"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    created = not dist.is_initialized()
    if created:
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # the GPU common.yaml's device names
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout)
    group = dist.new_group(backend="gloo", timeout=timeout)
    try:
        yield World(dist.get_rank(), dist.get_world_size(), local_rank, group)
    finally:
        dist.destroy_process_group(None if created else group)


def scan_bytes(path: Path) -> int:
    """Bytes of a scan on disk: its file, or the files of its DICOM series folder.

    The cost of a scan grows with its voxels; its bytes are a free estimate of them. A
    scan that cannot be read weighs 0: it fails quickly wherever it goes.
    """
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def deal(sizes: Sequence[int], n_shards: int) -> list[list[int]]:
    """Share items among shards: largest first, each to the shard lightest so far.

    Greedy largest-first (LPT) keeps the heaviest shard within 4/3 of the best possible,
    where a plain round robin can pile the large items on one shard. Ties go to the
    shard with fewer items, then the lower index, and equal sizes keep the input order:
    the same sizes always give the same deal.

    Args:
        sizes: the weight of each item.
        n_shards: number of shards (ranks).

    Returns:
        For each shard, the indices of its items, largest first.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    shards: list[list[int]] = [[] for _ in range(n_shards)]
    lightest = [(0, 0, shard) for shard in range(n_shards)]  # (bytes, items, shard)
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, count, shard = heapq.heappop(lightest)
        shards[shard].append(index)
        heapq.heappush(lightest, (load + sizes[index], count + 1, shard))
    return shards


def shard_scans(scans: Sequence[Scan], n_shards: int) -> list[list[Scan]]:
    """The scans of each rank, dealt by :func:`deal` on their bytes on disk."""
    shards = deal([scan_bytes(scan.path) for scan in scans], n_shards)
    return [[scans[i] for i in shard] for shard in shards]
