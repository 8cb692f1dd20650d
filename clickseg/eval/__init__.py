"""Evaluation: clickers, metrics and per-checkpoint evaluation of runs."""
