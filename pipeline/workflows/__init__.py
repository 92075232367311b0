"""Workflows that combine the stages.

Scoring a checkpoint on a split (segment, then score), post-processing tuning on the
validation split, hyper-parameter sweeps, the phantom-to-real check and the model card.
"""
