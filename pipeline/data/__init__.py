"""Data: finding a user's data set and splitting it (``layouts``, ``datalist``), and the
synthetic CT phantoms the project makes when there is none (``synth/``).
"""
