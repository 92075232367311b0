"""Synthetic abdominal CT phantoms: shapes, tissues (HU calibrated on real CT), anatomy,
lesions, rendering, one phantom (``phantom``) and whole data sets on disk (``dataset``).
"""
