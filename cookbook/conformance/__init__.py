"""Conformance runners: specs and goldens applied to any implementation (`cookbook conform ...`)."""
