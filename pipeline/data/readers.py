"""A NIfTI reader for MONAI's ``LoadImage`` that hands over C-ordered arrays cheaply.

NIfTI stores voxels in Fortran order (x fastest) and MONAI's ``LoadImage`` makes every
array C-contiguous (``convert_to_numpy`` calls ``np.ascontiguousarray``). For a 512 x
512 x 300 int16 CT numpy's whole-array transpose copy took 0.98 s on this project's
2-core machine, more than the gzip read before it (0.46 s with ISA-L): it walks the
source with a stride of one whole slice and misses the cache on nearly every voxel.
Copying slab by slab along the last axis (each slab of a Fortran array is one contiguous
run of memory) gives the identical array in 0.3-0.4 s, and casting it to float32 on the
way saves the cast's own pass over the volume.

The reader goes one step further for a 3D volume: it decompresses the file slab by slab
(each run of axial slices is one contiguous run of the file) and copies each slab into
the C-ordered array in a second thread while the next one is decompressed. ISA-L and
numpy's copies release the GIL, so on two cores the copy hides behind the decompression:
the 512 x 512 x 300 phantom of the benchmark reads in 0.5-0.6 s, against 0.95-1.5 s for
the whole read followed by the slab copy, in the same runs. No maintained library offers
the blocked copy or the overlap, hence these lines; MONAI's ``NibabelReader`` does
everything else.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.data import NibabelReader
from nibabel.arrayproxy import ArrayProxy
from nibabel.openers import ImageOpener

SLAB_BYTES = 1 << 23
"""About how many source bytes are copied at a time."""

CACHE_LINE_BYTES = 64


def slab_depth(slice_bytes: int, out_itemsize: int, slab_bytes: int) -> int:
    """How many slices along the last axis one step of the copy takes.

    About ``slab_bytes`` of source, but never fewer slices than fill a cache line of the
    destination: in the C-ordered output each step writes one run of that many values
    per (x, y), and a run shorter than a line makes the next step write the same lines
    again (a 512 x 512 x 300 int16 -> float32 copy: 0.55 s with 4 slices a step, 0.35 s
    with 16).
    """
    return max(1, slab_bytes // max(1, slice_bytes), -(-CACHE_LINE_BYTES // out_itemsize))


def c_ordered(
    array: np.ndarray, slab_bytes: int = SLAB_BYTES, dtype: npt.DTypeLike = None
) -> np.ndarray:
    """``np.ascontiguousarray(array, dtype)``, copied slab by slab along the last axis.

    Args:
        array: any array; one that is C-contiguous already, or has fewer than two axes,
            is returned as ``np.ascontiguousarray`` would (no copy if the dtype is kept).
        slab_bytes: about how many bytes of ``array`` each step copies.
        dtype: the output's dtype, cast during the copy (one pass over the volume
            instead of two); None keeps ``array``'s.

    Returns:
        A C-contiguous array equal to ``array``, of ``dtype``.
    """
    if array.flags.c_contiguous or array.ndim < 2:
        return np.ascontiguousarray(array, dtype=dtype)
    out = np.empty(array.shape, dtype=array.dtype if dtype is None else dtype)
    step = slab_depth(array.size // array.shape[-1] * array.itemsize, out.itemsize, slab_bytes)
    for start in range(0, array.shape[-1], step):
        out[..., start : start + step] = array[..., start : start + step]
    return out


def _read_exactly(handle: Any, buffer: np.ndarray, name: str) -> None:
    """Fill ``buffer`` from ``handle``; a file that ends first is an error naming it."""
    view = memoryview(buffer).cast("B")
    filled = 0
    while filled < view.nbytes:
        read = handle.readinto(view[filled:])
        if not read:
            missing = view.nbytes - filled
            raise OSError(f"{name}: the file ends {missing} bytes before its voxels do")
        filled += read


def _unmadvised_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty`` from torch's allocator, which does not ask for transparent huge pages.

    numpy advises the kernel to back large arrays with huge pages; on a machine whose
    memory is fragmented the first write then waits for the kernel to compact memory.
    Measured here for the benchmark's 315 MB float32 volume in a fresh process: reading
    it took 1.1-1.3 s into numpy's array and 0.51-0.61 s into torch's (0.41-0.66 s against
    0.51-0.61 s once the process had freed a volume before). dtypes torch lacks (e.g.
    big-endian) get numpy's array.
    """
    try:
        torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    except (TypeError, ValueError):
        return np.empty(shape, dtype=dtype)
    return torch.empty(shape, dtype=torch_dtype).numpy()


def read_c_ordered(
    proxy: ArrayProxy, dtype: npt.DTypeLike = None, slab_bytes: int = SLAB_BYTES
) -> np.ndarray:
    """A 3D NIfTI image's voxels, read slab by slab into a C-ordered array (see the module).

    Equal to ``c_ordered(np.asanyarray(proxy), dtype=dtype)``: the header's scaling
    (slope and intercept) is applied as nibabel applies it, in float64 when it is not the
    identity.

    Args:
        proxy: the image's ``dataobj``; a Fortran-ordered 3D array on disk.
        dtype: the output's dtype; None: what ``np.asanyarray(proxy)`` would give.
        slab_bytes: about how many file bytes each read decompresses.

    Returns:
        A C-contiguous array of ``proxy.shape``.
    """
    shape = tuple(int(n) for n in proxy.shape)
    stored = np.dtype(proxy.dtype)
    slope, inter = float(proxy.slope), float(proxy.inter)
    scaled = (slope, inter) != (1.0, 0.0)
    if dtype is None:
        dtype = np.asanyarray(proxy[:1, :1, :1]).dtype
    out = _unmadvised_empty(shape, np.dtype(dtype))
    slice_items = shape[0] * shape[1]
    step = slab_depth(slice_items * stored.itemsize, out.itemsize, slab_bytes)

    def place(buffer: np.ndarray, start: int, count: int) -> None:
        slab = buffer[: slice_items * count].reshape((shape[0], shape[1], count), order="F")
        if scaled:
            slab = slab * slope + inter  # float64, as nibabel scales
        out[..., start : start + count] = slab

    # Two buffers: one is filled while the other is copied out.
    buffers = [np.empty(slice_items * step, dtype=stored) for _ in range(2)]
    with ImageOpener(proxy.file_like, "rb") as handle, ThreadPoolExecutor(1) as copier:
        handle.seek(proxy.offset)
        pending: Future[None] | None = None
        for index, start in enumerate(range(0, shape[2], step)):
            count = min(step, shape[2] - start)
            buffer = buffers[index % 2]
            _read_exactly(handle, buffer[: slice_items * count], proxy.file_like)
            if pending is not None:
                pending.result()
            pending = copier.submit(place, buffer, start, count)
        if pending is not None:
            pending.result()
    return out


class COrderNibabelReader(NibabelReader):
    """MONAI's ``NibabelReader`` whose arrays are C-contiguous already (see the module).

    A drop-in for ``LoadImage(reader=...)``: same metadata, the same array values;
    ``LoadImage`` then finds nothing left to copy.

    Args:
        dtype: cast to this during the copy (the bundle's float32, which a ``CastToTyped``
            after the loading then leaves as it is); None keeps the file's type.
        **kwargs: ``NibabelReader``'s arguments.
    """

    def __init__(self, dtype: npt.DTypeLike = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dtype = dtype

    def _get_array_data(self, img: Any, filename: Any) -> Any:
        """A 3D image's voxels from :func:`read_c_ordered`; anything else as MONAI reads it."""
        proxy = getattr(img, "dataobj", None)
        if (
            self.to_gpu
            or not isinstance(proxy, ArrayProxy)
            or len(proxy.shape) != 3
            or proxy.order != "F"
            or not isinstance(proxy.file_like, str)
        ):
            return super()._get_array_data(img, filename)
        return read_c_ordered(proxy, self.dtype)

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The image's voxels, C-ordered, and its metadata (``NibabelReader.get_data``)."""
        array, meta = super().get_data(img)
        if isinstance(array, np.ndarray):  # a cupy array (to_gpu) is left to MONAI
            array = c_ordered(array, dtype=self.dtype)
        return array, meta
