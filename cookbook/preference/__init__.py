"""Preference learning: comparisons (prompt, chosen, rejected) and the DPO training loop."""
