"""Distillation: on-policy distillation (a student samples, a teacher scores, reverse-KL advantages)."""
