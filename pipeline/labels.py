"""Label values shared by every stage (LiTS / MSD Task03 convention)."""

BACKGROUND, LIVER, TUMOUR = 0, 1, 2
"""0 background, 1 liver, 2 tumour; LiTS scores the liver as label >= 1."""
