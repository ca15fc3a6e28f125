"""Tests of the training package: run config, distillation losses, evaluation metrics."""
