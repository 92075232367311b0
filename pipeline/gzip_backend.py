"""Faster gzip for NIfTI files: ISA-L's ``igzip`` in place of the standard library's.

A 512 x 512 x 300 CT is 150 MB of int16 behind about 80 MB of gzip. Measured on this
project's 2-core machine (scripts/benchmark_inference.py, and the comparison in the
README's performance section): reading it takes 2.8 s with Python's gzip and 1.2-1.5 s
with ``isal.igzip``; writing a uint8 mask of that size takes 0.43 s and 0.04 s (and
the file is smaller). zlib-ng read as fast but wrote the mask at half isal's speed and
larger, so isal is the one used.

nibabel opens ``.gz`` files through ``Opener.compress_ext_map``, the extension point
it documents for other compressors; :func:`install` registers ``igzip`` there, for
reading (MONAI's NibabelReader, evaluation) and writing (masks, phantoms). Files stay
standard gzip, readable by any tool. Without the ``isal`` package nothing changes.
"""

from __future__ import annotations

import os
from typing import Any

_ISAL_MAX_LEVEL = 3  # ISA-L's levels are 0-3; 3 is its smallest output


def _igzip_open(
    filename: str | os.PathLike,
    mode: str = "rb",
    compresslevel: int = 1,
    mtime: int = 0,
    keep_open: bool = False,
) -> Any:
    """Open a ``.gz`` file as nibabel's own gzip opener does, with ISA-L.

    ``mtime`` 0 keeps written files byte-identical for identical data (as nibabel's own
    opener does); ``keep_open`` concerns nibabel's indexed reader and has no meaning here.
    """
    from isal import igzip

    del keep_open
    if "r" in mode:
        return igzip.IGzipFile(filename, mode)
    # No file name in the gzip header either (the temporary name of an atomic write
    # would differ from run to run); closing the gzip file closes ``raw`` (myfileobj).
    raw = open(filename, mode)  # noqa: SIM115 - handed to the gzip file, which closes it
    handle = igzip.IGzipFile(
        "", mode, compresslevel=min(int(compresslevel), _ISAL_MAX_LEVEL), fileobj=raw, mtime=mtime
    )
    handle.myfileobj = raw
    return handle


def install() -> bool:
    """Make nibabel read and write ``.gz`` with ISA-L; False when isal is not installed."""
    try:
        import isal.igzip  # noqa: F401 - only whether it imports
        from nibabel.openers import ImageOpener, Opener
    except ImportError:
        return False
    arguments = ("mode", "compresslevel", "mtime", "keep_open")
    for opener in (Opener, ImageOpener):
        opener.compress_ext_map[".gz"] = (_igzip_open, arguments)
    return True
