"""Test helpers for cookbook and for users' own renderers: hypothesis strategies (``cookbook.testing.strategies``)."""
