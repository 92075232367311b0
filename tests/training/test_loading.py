import threading

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandGaussianNoised, RandSpatialCropd
from monai.utils import set_determinism

from pipeline.training.loading import PrefetchingDataLoader


def _random_dataset() -> Dataset:
    """Ten 8^3 volumes behind two random transforms (their draws must not change)."""
    data = [{"image": torch.full((1, 8, 8, 8), float(i))} for i in range(10)]
    transform = Compose(
        [
            RandSpatialCropd("image", roi_size=(4, 4, 4), random_size=False),
            RandGaussianNoised("image", prob=0.5),
        ]
    )
    return Dataset(data, transform)


def _epochs(loader_class, epochs: int = 2, **kwargs) -> list[torch.Tensor]:
    set_determinism(seed=3)
    loader = loader_class(_random_dataset(), batch_size=3, shuffle=True, **kwargs)
    batches = [batch["image"] for _ in range(epochs) for batch in loader]
    set_determinism(seed=None)
    return batches


@pytest.mark.parametrize("prefetch", [1, 3])
def test_batches_order_and_draws_are_those_of_monai_dataloader(prefetch):
    ours = _epochs(PrefetchingDataLoader, prefetch=prefetch)
    theirs = _epochs(DataLoader)
    assert len(ours) == len(theirs) == 8  # 4 batches (3 + 3 + 3 + 1) per epoch
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    # Shuffled, and each epoch in another order.
    first, second = (
        np.concatenate([b[:, 0, 0, 0, 0].numpy() for b in e]) for e in (ours[:4], ours[4:])
    )
    assert sorted(first.round()) == list(range(10)) and not np.array_equal(first, second)


class _FailsAt(torch.utils.data.Dataset):
    def __init__(self, bad: int) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == self.bad:
            raise ValueError(f"case {index} is unreadable")
        return torch.tensor([index])


def test_a_loading_error_stops_the_epoch_with_that_error():
    seen = []
    with pytest.raises(ValueError, match="case 4 is unreadable"):
        for batch in PrefetchingDataLoader(_FailsAt(4), batch_size=1):
            seen.append(int(batch))
    assert seen == [0, 1, 2, 3]


def test_the_loading_thread_ends_when_the_consumer_stops_early():
    loader = PrefetchingDataLoader(_FailsAt(-1), batch_size=1, prefetch=2)
    for batch in loader:
        if int(batch) == 1:
            break
    # The generator is closed on break (CPython frees it at once), which stops its thread.
    assert not any(t.name == "batch-prefetch" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("option", ["prefetch", "loading_threads"])
def test_prefetch_and_loading_threads_must_be_positive(option):
    with pytest.raises(ValueError, match=option):
        PrefetchingDataLoader(_FailsAt(-1), **{option: 0})


class _ThreadCounts(torch.utils.data.Dataset):
    """Records torch's intra-op thread count where each item is made."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return torch.tensor([index])


def _new_threads_count() -> int:
    """torch's intra-op thread count in a thread started now."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_the_loading_thread_computes_on_one_core_and_leaves_the_rest_alone():
    # The default of new threads is measured in a new thread: an earlier test in the
    # same process can leave this (main) thread at another count than that default.
    before, new_before = torch.get_num_threads(), _new_threads_count()
    dataset = _ThreadCounts()
    assert len(list(PrefetchingDataLoader(dataset, batch_size=1))) == 3
    assert dataset.seen == [1, 1, 1]
    assert torch.get_num_threads() == before
    assert _new_threads_count() == new_before  # threads started afterwards: the default again
