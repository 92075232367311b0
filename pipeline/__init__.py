"""Liver and liver-tumour segmentation in CT, built on MONAI.

Labels follow LiTS and MSD Task03: 0 background, 1 liver, 2 tumour.
"""

from __future__ import annotations

import logging
import warnings

from pipeline.gzip_backend import install as install_fast_gzip
from pipeline.labels import BACKGROUND, LIVER, TUMOUR

__version__ = "0.1.0"

# MONAI >= 1.6 builds every image reader in each LoadImage. With pydicom installed (highdicom,
# for DICOM-SEG output, needs it) its GPU DICOM reader then says on every load that the
# CUDA decoder nvImageCodec is missing. DICOM is read by ITK here, so the message is noise
# no user can act on; only these two messages are silenced.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin")

# NIfTI's gzip through ISA-L (about 2x faster to read, 10x to write a mask): nibabel's
# documented extension point, set once for every reader and writer (gzip_backend.py).
install_fast_gzip()

__all__ = ["BACKGROUND", "LIVER", "TUMOUR", "__version__", "predict"]


def predict(*args, **kwargs):  # noqa: D103 - documented in pipeline.inference.api.predict
    # Imported on first use: ``import pipeline`` stays light (no torch, no MONAI).
    from pipeline.inference.api import predict as _predict

    return _predict(*args, **kwargs)


predict.__doc__ = "Segment one CT scan; see :func:`pipeline.inference.api.predict`."
