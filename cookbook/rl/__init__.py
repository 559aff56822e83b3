"""Reinforcement learning: advantages, KL metrics, rollouts and the training loops."""
