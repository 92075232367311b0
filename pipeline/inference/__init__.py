"""Inference: from a folder of CT scans to masks and quantification.

Finding and checking scans, the one-scan predictor, the flip-TTA inferer, the folder run
on an Ignite engine, liver / tumour quantification and ``predict()``.
"""
