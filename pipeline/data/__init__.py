"""Data: synthetic CT phantoms, dataset discovery and splits."""
