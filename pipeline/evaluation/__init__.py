"""Evaluation the LiTS way, from masks on disk to the report.

Pairing predictions with references, loading them on one grid, per-case metrics, lesion
detection, scoring a data set, and the report (``report/``). Never runs a network: it
scores masks, whoever made them.
"""
