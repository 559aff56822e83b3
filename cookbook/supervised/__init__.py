"""Supervised learning: datum construction, datasets, NLL metrics and the training loop."""
