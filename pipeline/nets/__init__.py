"""Networks and losses, each built by name from the bundle configs.

``build_network`` and ``build_loss``; depends only on MONAI and torch.
"""
