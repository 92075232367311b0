"""Training: what ``train.yaml`` needs beyond MONAI.

The Ignite handlers (resumable checkpoints, epoch report, time limit, early stopping) and
the helpers the training config calls (data list, LR schedule, LiTS masks for the
validation metrics).
"""
