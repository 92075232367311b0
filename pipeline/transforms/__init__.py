"""Transforms MONAI lacks, each an array transform with its dictionary twin.

Owns label remapping (``labels``), HU windows as input channels (``intensity``), the
refiner's Gaussian with an edge border (``smoothing``) and the post-processing of
predicted label maps (``postprocess``). Depends only on the core
modules and MONAI.
"""
